#!/usr/bin/env bash
# test_install.sh -- `cmake --install` yields a tree users can build against.
#
# Installs the build into a temp DESTDIR, then proves each way in works
# from the installed tree alone: a C program compiled with pkg-config, the
# same program built by a throwaway CMake project with find_package(rrpc
# CONFIG) and rrpc::rrpc, the installed `rrpc` CLI, and every man page
# rendered by man(1) without a warning.  It also checks that rrpc(1) names
# every command and option the CLI's own --help lists, so the page cannot
# silently fall behind the code.
#
# Usage: test_install.sh BUILD_DIR   ($RRPC_TEST_CFLAGS: extra flags for the
# test programs, e.g. the sanitizers the library was built with)
set -u
BUILD=$(cd "${1:?usage: test_install.sh BUILD_DIR}" && pwd)
# shellcheck source=tests/lib/common.sh
. "$(dirname "$0")/../lib/common.sh"
root=$rrpc_root
tmp=$test_dir
extra_cflags=${RRPC_TEST_CFLAGS:-}

# 1. Install into a staging root; /opt/rrpc shows PREFIX is honoured.
stage=$tmp/stage
prefix=$stage/opt/rrpc
if ! DESTDIR=$stage cmake --install "$BUILD" --prefix /opt/rrpc >"$tmp/install.log" 2>&1; then
  cat "$tmp/install.log"; echo "FAIL cmake --install"; exit 1
fi
libdir=$(dirname "$(find "$prefix" -name librrpc.so -print -quit)")
# The soname follows VERSION: librrpc.so.0.MINOR while MAJOR is 0, else
# librrpc.so.MAJOR (CMakeLists.txt says why).
IFS=. read -r major minor _ <"$root/VERSION"
soname=librrpc.so.$major
[ "$major" = 0 ] && soname=librrpc.so.0.$minor
for f in "$libdir/librrpc.so" "$libdir/$soname" "$prefix/include/rrpc/rrpc.h" \
  "$prefix/bin/rrpc" "$libdir/pkgconfig/rrpc.pc" "$libdir/cmake/rrpc/rrpcConfig.cmake" \
  "$libdir/cmake/rrpc/rrpcConfigVersion.cmake" "$prefix/share/man/man1/rrpc.1"; do
  [ -e "$f" ] || fail "installed: ${f#$stage}"
done
[ -L "$libdir/librrpc.so" ] && [ -L "$libdir/$soname" ] && ok "librrpc.so and soname links ($soname)" ||
  fail "librrpc.so and $soname should be symlinks"
[ "$(objdump -p "$libdir/librrpc.so" | awk '$1 == "SONAME" {print $2}')" = "$soname" ] &&
  ok "SONAME $soname" || fail "librrpc.so's SONAME is not $soname"

# uses_installed_lib PROGRAM: the loader takes librrpc from the staged tree.
uses_installed_lib() {
  local got
  got=$(ldd "$1" | awk -v so="$soname" '$1 == so && $2 == "=>" {print $3}')
  [ -n "$got" ] && [ "$(readlink -f "$got")" = "$(readlink -f "$libdir/$soname")" ]
}

# 2. A tiny program that needs both rrpc and jansson (through rrpc.h).
cat >"$tmp/hello.c" <<'C'
#include <rrpc/rrpc.h>
#include <stdio.h>
#include <string.h>

int main(void)
{
    json_t *v = json_pack("{s:s}", "version", rrpc_version());
    char *text = json_dumps(v, JSON_COMPACT);
    printf("%s %s\n", text, rrpc_strerror(RRPC_EAUTH));
    int same = strcmp(rrpc_version(), RRPC_VERSION_STRING) == 0;
    free(text);
    json_decref(v);
    return same ? 0 : 1;
}
C
version=$(sed -n 's/^#define RRPC_VERSION_STRING "\(.*\)"/\1/p' "$root/include/rrpc/rrpc.h")
want="{\"version\":\"$version\"}"

# 3. pkg-config, with nothing but PKG_CONFIG_PATH pointing into the stage.
export PKG_CONFIG_PATH=$libdir/pkgconfig
if flags=$(pkg-config --cflags --libs rrpc 2>&1); then
  ok "pkg-config rrpc: $flags"
  # shellcheck disable=SC2086
  if cc -std=c11 $extra_cflags -o "$tmp/hello-pc" "$tmp/hello.c" $flags -Wl,-rpath,"$libdir" \
      >"$tmp/cc.log" 2>&1; then
    out=$("$tmp/hello-pc" 2>&1)
    case $out in "$want "*) ok "pkg-config build runs: $out" ;; *) fail "pkg-config build printed '$out'" ;; esac
    uses_installed_lib "$tmp/hello-pc" && ok "pkg-config build loads the installed librrpc" ||
      fail "pkg-config build does not load $libdir/$soname"
  else
    cat "$tmp/cc.log"; fail "compile with pkg-config flags"
  fi
else
  fail "pkg-config rrpc: $flags"
fi
pkg-config --print-requires rrpc | grep -q '^jansson' && ok "Requires: jansson" ||
  fail "rrpc.pc should require jansson (rrpc.h includes jansson.h)"
private=$(pkg-config --print-requires-private rrpc | tr '\n' ' ')
case $private in *hiredis*libevent_core*) ok "Requires.private: $private" ;;
  *) fail "Requires.private lacks hiredis/libevent: $private" ;; esac
[ "$(pkg-config --modversion rrpc)" = "$version" ] && ok "pkg-config --modversion" ||
  fail "pkg-config --modversion says $(pkg-config --modversion rrpc)"
unset PKG_CONFIG_PATH

# 4. A throwaway CMake project: find_package(rrpc CONFIG) and rrpc::rrpc.
mkdir -p "$tmp/consumer"
cp "$tmp/hello.c" "$tmp/consumer/"
cat >"$tmp/consumer/CMakeLists.txt" <<'CMAKE'
cmake_minimum_required(VERSION 3.18)
project(consumer C)
find_package(rrpc ${WANT_VERSION} CONFIG REQUIRED)
add_executable(hello hello.c)
target_link_libraries(hello PRIVATE rrpc::rrpc)
CMAKE
cmake_consumer() { # cmake_consumer BUILD_SUBDIR VERSION
  cmake -S "$tmp/consumer" -B "$tmp/$1" -DCMAKE_PREFIX_PATH="$prefix" -DWANT_VERSION="$2" \
    -DCMAKE_C_FLAGS="$extra_cflags" -DCMAKE_BUILD_RPATH="$libdir" >"$tmp/$1.log" 2>&1
}
if cmake_consumer consumer-build "${version%.*}" && cmake --build "$tmp/consumer-build" >>"$tmp/consumer-build.log" 2>&1; then
  out=$("$tmp/consumer-build/hello" 2>&1)
  case $out in "$want "*) ok "find_package(rrpc CONFIG) build runs: $out" ;;
    *) fail "find_package build printed '$out'" ;; esac
  uses_installed_lib "$tmp/consumer-build/hello" && ok "find_package build loads the installed librrpc" ||
    fail "find_package build does not load $libdir/$soname"
else
  cat "$tmp/consumer-build.log"; fail "CMake consumer with find_package(rrpc CONFIG)"
fi
# rrpcConfigVersion.cmake must turn down a version this is not.
if cmake_consumer consumer-v9 9.0; then fail "find_package(rrpc 9.0) should fail"; else
  grep -q 'not accepted' "$tmp/consumer-v9.log" && ok "find_package(rrpc 9.0) refused" ||
    { cat "$tmp/consumer-v9.log"; fail "find_package(rrpc 9.0) failed for another reason"; }
fi

# 5. The installed CLI finds the installed library by itself ($ORIGIN).
out=$("$prefix/bin/rrpc" --version 2>&1)
[ "$out" = "rrpc $version" ] && ok "installed rrpc --version: $out" ||
  fail "installed rrpc --version printed '$out'"
uses_installed_lib "$prefix/bin/rrpc" && ok "installed rrpc loads the installed librrpc" ||
  fail "installed rrpc does not load $libdir/$soname"

# 6. Man pages: all render cleanly; the family links resolve; rrpc(1)
# covers the CLI.
mandir=$prefix/share/man
for page in rrpc.1 rrpc_client_open.3 rrpc_call.3 rrpc_server_new.3 rrpc_server_run.3 \
  rrpc_async_call.3; do
  [ -e "$mandir/man${page##*.}/$page" ] || fail "man page $page not installed"
done
pages=0 bad=0
for page in "$mandir"/man*/*; do
  rel=${page#"$mandir"/}
  # From the man root, so a ".so man3/x.3" link resolves as man(1) would.
  warnings=$(cd "$mandir" && MANWIDTH=80 man --warnings -E UTF-8 -l "$rel" 2>&1 >"$tmp/page.txt")
  if [ -n "$warnings" ] || [ "$(wc -l <"$tmp/page.txt")" -lt 5 ]; then
    fail "man $rel: ${warnings:-renders empty}"; bad=1
  fi
  pages=$((pages + 1))
done
[ "$bad" = 0 ] && ok "$pages man pages render without warnings"
# man(1) follows the .so link of a family member to the page that documents it.
[ "$(man -M "$mandir" -w 3 rrpc_server_run 2>/dev/null)" = "$mandir/man3/rrpc_server_new.3" ] &&
  ok "man 3 rrpc_server_run opens rrpc_server_new(3)" || fail "man -M $mandir -w 3 rrpc_server_run"
page=$mandir/man1/rrpc.1
commands=$("$BUILD/rrpc" --help | sed -n '/^Commands:/,/^$/p' | awk 'NF && !/^Commands:/ {print $1}')
[ -n "$commands" ] || fail "could not read the commands from rrpc --help"
for cmd in $commands; do
  grep -q "^\.B[RI]* $cmd\b" "$page" || fail "rrpc.1 does not describe the command '$cmd'"
  [ "$cmd" = help ] && continue
  for opt in $("$BUILD/rrpc" "$cmd" --help | grep -o -- '--[a-z][a-z-]*' | sort -u); do
    grep -q -- "${opt//-/\\\\-}" "$page" || fail "rrpc.1 does not mention '$cmd $opt'"
  done
done
[ "$checks_failed" = 0 ] && ok "rrpc.1 names every command and option of rrpc --help ($(echo $commands | tr '\n' ' '))"
finish
