#!/usr/bin/env bash
# test_package.sh -- installs the Python peer as a user would, offline, and
# runs its pytest suite against what was installed (ctest: python_package).
#
# A fresh venv over the system's packages (Debian's python3-redis and
# python3-pytest), `pip install --no-index --no-build-isolation` of a copy
# of this directory (pip builds in the source tree; the checkout stays
# clean), then this directory's tests/ with RRPC_TEST_INSTALLED=1, from
# outside the tree: conftest.py then leaves src/ off the path, imports the
# installed rrpc, and test_package.py fails if it did not.  pytest's exit status is this script's, so "no tests
# collected" (5) fails too.
#
# Needs REDIS_URL: tests/harness/with-redis.sh clients/python/test_package.sh [WORK_DIR]
# (WORK_DIR, default a temp dir, holds the venv and the copy; emptied first).
set -eu
: "${REDIS_URL:?run me under tests/harness/with-redis.sh}"
here=$(cd "$(dirname "$0")" && pwd)
PY=${RRPC_PYTHON:-$("$here/../../scripts/find-python.sh")}
if [ $# -ge 1 ]; then
  work=$1
  rm -rf "$work"
  mkdir -p "$work"
else
  work=$(mktemp -d "${TMPDIR:-/tmp}/rrpc-python-package.XXXXXX")
  trap 'rm -rf "$work"' EXIT
fi

mkdir "$work/pkg"
tar -C "$here" --exclude=build --exclude='*.egg-info' --exclude=__pycache__ \
  --exclude=.pytest_cache -cf - . | tar -C "$work/pkg" -xf -
"$PY" -m venv --system-site-packages "$work/venv"
"$work/venv/bin/python" -m pip install --quiet --no-index --no-build-isolation \
  --disable-pip-version-check "$work/pkg"
"$work/venv/bin/python" -c 'import pytest' 2>/dev/null || {
  echo "test_package.sh: pytest is missing (Debian package python3-pytest)" >&2
  exit 1
}
echo "installed: $("$work/venv/bin/python" -m pip show rrpc | sed -n 's/^Version: /rrpc /p')"
cd "$work"
RRPC_TEST_INSTALLED=1 "$work/venv/bin/python" -m pytest -p no:cacheprovider -q "$here/tests"
