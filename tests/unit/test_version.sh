#!/usr/bin/env bash
# test_version.sh -- every copy of rrpc's version equals the VERSION file.
#
# VERSION is the one place a release changes.  CMake reads it (project's
# VERSION, hence the soname, rrpc.pc and rrpcConfigVersion.cmake) and
# refuses to configure when rrpc.h's macros differ; the copies that cannot
# read it are checked here: the Ruby and Python peers' constants (as
# written, and as the loaded peers report them -- a gem or a wheel carries
# no VERSION file), their gemspec and pyproject.toml if they give one
# literally, every man page's .TH line, the built CLI's `rrpc --version`
# and the generated rrpc.pc.  On a mismatch it names the file to update.
#
# Usage: test_version.sh BUILD_DIR   (no Redis needed; the Python peer is
# loaded with $RRPC_PYTHON, found by scripts/find-python.sh if unset)
set -u
BUILD=$(cd "${1:?usage: test_version.sh BUILD_DIR}" && pwd)
# shellcheck source=tests/lib/common.sh
. "$(dirname "$0")/../lib/common.sh"
root=$rrpc_root

version=$(head -n 1 "$root/VERSION")
if [[ ! $version =~ ^([0-9]+)\.([0-9]+)\.([0-9]+)$ ]]; then
  echo "FAIL VERSION holds '$version', not MAJOR.MINOR.PATCH"
  exit 1
fi
[ "$(wc -l <"$root/VERSION")" = 1 ] || fail "VERSION has more than one line"
ok "VERSION: $version"

# same WHAT GOT: one comparison, reported.
same() {
  if [ "$2" = "$version" ]; then ok "$1: $2"; else fail "$1: '$2', VERSION says $version"; fi
}

# 1. The C header's macros (CMake checks them too; this says which one).
h=$root/include/rrpc/rrpc.h
macro() { sed -n "s/^#define RRPC_VERSION_$1  *\"\{0,1\}\([^\"]*\)\"\{0,1\}\$/\1/p" "$h"; }
same "rrpc.h RRPC_VERSION_STRING" "$(macro STRING)"
same "rrpc.h RRPC_VERSION_MAJOR.MINOR.PATCH" "$(macro MAJOR).$(macro MINOR).$(macro PATCH)"

# 2. What the build made of it.
same "rrpc --version" "$("$BUILD/rrpc" --version 2>&1 | sed -n 's/^rrpc //p')"
same "rrpc.pc Version" "$(sed -n 's/^Version: //p' "$BUILD/rrpc.pc")"

# 3. Every literal version constant in the peers' sources and metadata.
# literals DIR: "file: value" for each VERSION / __version__ / version = '...'.
literals() {
  grep -rEo --include='*.rb' --include='*.py' --include='*.gemspec' --include='pyproject.toml' \
    "^[[:space:]]*(VERSION|__version__|version|[a-z]+\.version)[[:space:]]*=[[:space:]]*['\"][0-9][^'\"]*['\"]" \
    "$1" | sed -E "s/^([^:]*):.*['\"]([^'\"]*)['\"]\$/\1 \2/"
}
for peer in ruby python; do
  found=0
  while read -r file value; do
    found=1
    same "${file#"$root"/}" "$value"
  done < <(literals "$root/clients/$peer")
  [ $found = 1 ] || fail "no version constant found in clients/$peer"
done

# 4. The peers as loaded: RRPC::VERSION and rrpc.VERSION, from the single
# file or the package layout, whichever the tree has.
rb=$root/clients/ruby
same "Ruby RRPC::VERSION" "$(ruby -I "$rb/lib" -I "$rb" -e 'require "rrpc"; print RRPC::VERSION' 2>&1)"
if [ -n "$RRPC_PYTHON" ]; then
  py_path=$root/clients/python/src:$root/clients/python
  same "Python rrpc.VERSION" \
    "$(PYTHONPATH=$py_path "$PY" -c 'import rrpc; print(rrpc.VERSION, end="")' 2>&1)"
else
  fail "no python3 with the redis module (scripts/find-python.sh; set RRPC_PYTHON)"
fi

# The Node peer's package.json and lockfile (its rrpc.VERSION is read from
# package.json; the package's own test checks that too).
same "clients/node/package.json" \
  "$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["version"], end="")' \
    "$root/clients/node/package.json" 2>&1)"
same "clients/node/package-lock.json" \
  "$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["packages"][""]["version"], end="")' \
    "$root/clients/node/package-lock.json" 2>&1)"

# 5. Man pages: the .TH line's source field, "rrpc VERSION".
pages=0 wrong=0
for page in "$root"/docs/man/*.[1-8]; do
  th=$(grep -m1 '^\.TH ' "$page") || continue # a ".so" alias page
  pages=$((pages + 1))
  [[ $th == *"\"rrpc $version\""* ]] || { fail "${page#"$root"/}: $th"; wrong=$((wrong + 1)); }
done
if [ $pages = 0 ]; then
  fail "no man pages found"
elif [ $wrong = 0 ]; then
  ok "$pages man pages say \"rrpc $version\""
fi

if [ "$checks_failed" = 0 ]; then
  echo "every copy of the version is $version"
else
  echo "update the files above to VERSION ($version)"
fi
finish
