#!/usr/bin/env bash
# test_gem.sh -- the Ruby peer as a user gets it: builds the gem, installs
# it offline into a temporary GEM_HOME (Debian's ruby-redis satisfies its
# dependency: nothing is fetched), runs the gem's own minitest suite from the
# installed copy (test_helper.rb checks that rrpc loaded from there), then
# the installed examples against the C calc-server and calc-client.
#
# Usage: test_gem.sh BUILD_DIR   (under tests/harness/with-redis.sh, which
# gives $REDIS_URL; ctest runs it as ruby_gem)
set -u
BUILD=$(cd "${1:?usage: test_gem.sh BUILD_DIR}" && pwd)
# shellcheck source=tests/lib/common.sh
. "$(dirname "$0")/../../../tests/lib/common.sh"
src=$rrpc_root/clients/ruby
version=$(head -n 1 "$rrpc_root/VERSION")
export GEM_HOME=$test_dir/gems
installed=$GEM_HOME/gems/rrpc-$version

(cd "$src" && gem build rrpc.gemspec --output "$test_dir/rrpc.gem") >"$test_dir/gem-build.log" 2>&1 ||
  die "gem build rrpc.gemspec failed"
ok "gem build rrpc.gemspec: rrpc-$version"
# --local: from the file alone, never a remote source.
gem install --local --no-document "$test_dir/rrpc.gem" >"$test_dir/gem-install.log" 2>&1 ||
  die "gem install --local failed"
[ -f "$installed/lib/rrpc.rb" ] || die "no $installed/lib/rrpc.rb after gem install"
ok "gem install --local into a temporary GEM_HOME"

# The suite from the installed copy, run from elsewhere: only the gem's
# files are loaded (RRPC_EXPECT_LIB), with Debian's redis and minitest.
if (cd "$test_dir" && RRPC_EXPECT_LIB=$installed/lib RRPC_GEM_DIR=$installed ruby -e '
  gem "rrpc"
  Dir[File.join(ENV.fetch("RRPC_GEM_DIR"), "test", "test_*.rb")].sort.each { |f| require f }
') >"$test_dir/suite.log" 2>&1; then
  ok "the installed gem's minitest suite: $(grep -E '^[0-9]+ runs' "$test_dir/suite.log")"
else
  cat "$test_dir/suite.log"
  fail "the installed gem's minitest suite"
fi

# The installed examples and C, both ways.
spawn c-server "$BUILD/calc-server" --redis "$REDIS_URL" --service gem_c
spawn rb-server ruby "$installed/examples/calc_server.rb" --redis "$REDIS_URL" --service gem_rb
if out=$(ruby "$installed/examples/calc_client.rb" --redis "$REDIS_URL" --service gem_c --timeout 10 2>&1); then
  ok "installed examples/calc_client.rb -> C calc-server"
else
  fail "installed examples/calc_client.rb -> C calc-server: $out"
fi
if out=$("$BUILD/calc-client" --redis "$REDIS_URL" --service gem_rb 2>&1); then
  ok "C calc-client -> installed examples/calc_server.rb"
else
  fail "C calc-client -> installed examples/calc_server.rb: $out"
fi
finish
