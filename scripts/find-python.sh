#!/bin/sh
# find-python.sh -- prints the Python interpreter rrpc's tests and scripts use.
#
# The Python peer, the test helpers and the chaos and bench drivers need
# redis-py, and the first python3 on PATH may lack it (a pyenv shim, a
# venv), so the interpreter is found, not written into files.  The rule,
# in one place for the Makefile, CMake (which hands its answer to every
# test as $RRPC_PYTHON), tests/lib/common.sh, demo.sh and bench.sh:
#   1. $RRPC_PYTHON, if set: used as given, but it must import redis;
#   2. else each python3 on PATH, in order, the first that imports redis;
#   3. else /usr/bin/python3 (Debian's python3-redis), if it imports redis.
# Prints the interpreter's path and exits 0, or says what is missing on
# stderr and exits 1.
#
# Usage: scripts/find-python.sh
has_redis() { "$1" -c 'import redis' >/dev/null 2>&1; }

if [ -n "${RRPC_PYTHON:-}" ]; then
  if has_redis "$RRPC_PYTHON"; then
    echo "$RRPC_PYTHON"
    exit 0
  fi
  echo "find-python.sh: RRPC_PYTHON=$RRPC_PYTHON cannot import redis (pip install redis," \
    "or apt-get install python3-redis)" >&2
  exit 1
fi
IFS=:
for dir in $PATH; do
  [ -n "$dir" ] && [ -x "$dir/python3" ] && has_redis "$dir/python3" && {
    echo "$dir/python3"
    exit 0
  }
done
unset IFS
if [ -x /usr/bin/python3 ] && has_redis /usr/bin/python3; then
  echo /usr/bin/python3
  exit 0
fi
echo "find-python.sh: no python3 with the redis module on PATH or in /usr/bin" \
  "(apt-get install python3-redis, or set RRPC_PYTHON)" >&2
exit 1
