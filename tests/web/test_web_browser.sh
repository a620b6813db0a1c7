#!/usr/bin/env bash
# test_web_browser.sh -- rrpc web's dashboard in a real browser.
#
# Starts the C, Python, Ruby and Node calc servers on the private Redis, seeds
# dead letters (a requeueable call on calc, two on calc_rb, a hostile
# message on calc_py), runs two rrpc web instances (read-write; read-only behind a
# token) and drives Debian's headless Chromium through browser_test.js
# (playwright-core, installed here with `npm ci` from package-lock.json).
# Then it checks that the dead letters the browser requeued were answered
# (all of calc's; one of calc_rb's two, by its row's button).
# A missing chromium, node or npm is a failure, not a skip.
#
# Usage (under tests/harness/with-redis.sh): test_web_browser.sh BUILD_DIR [SCREENSHOT.png]
set -u
# shellcheck source=tests/lib/common.sh
. "$(dirname "$0")/../lib/common.sh"
: "${REDIS_URL:?run me under tests/harness/with-redis.sh}"
BUILD=$(cd "${1:?usage: test_web_browser.sh BUILD_DIR}" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
for tool in "$CHROMIUM" node npm redis-cli; do
  command -v "$tool" >/dev/null || die "$tool is missing (scripts/install-deps.sh installs it)"
done
cli() { redis-cli -s "$RRPC_TEST_REDIS_SOCK" "$@"; }

# playwright-core, from the lock file, outside the source tree.
mkdir -p "$test_dir/npm"
cp "$here/package.json" "$here/package-lock.json" "$test_dir/npm/"
(cd "$test_dir/npm" && npm ci --no-audit --no-fund --loglevel=error) >"$test_dir/npm.log" 2>&1 ||
  die "npm ci failed: $(tail -5 "$test_dir/npm.log")"

spawn c-server "$BUILD/calc-server" --service calc --workers 2
spawn py-server "$PY" "$rrpc_root/clients/python/calc_server.py" --service calc_py
spawn rb-server ruby "$rrpc_root/clients/ruby/calc_server.rb" --service calc_rb
node_ready || die "the Node peer's dependencies are missing (scripts/node-deps.sh)"
spawn js-server node "$rrpc_root/clients/node/calc_server.js" --service calc_js
services="calc calc_py calc_rb calc_js"
for s in $services; do
  wait_until 20 "$BUILD/rrpc" call --timeout 0.5 "$s" add '[1, 2]' >/dev/null ||
    die "service $s never answered"
done

# A dead letter whose message is a call a caller still waits for...
reply_key="rrpc:reply:$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
call="{\"jsonrpc\":\"2.0\",\"method\":\"add\",\"params\":[20,22],\"id\":7,\"reply_to\":\"$reply_key\"}"
record=$("$PY" -c 'import json, sys, time
print(json.dumps({"reason": "seeded by the test", "time": time.time(), "service": "calc",
                  "message": sys.argv[1]}))' "$call")
cli RPUSH calc:dead "$record" >/dev/null
# ...two on calc_rb, of which the browser requeues only the second (by its
# row's Requeue button): it is answered, the first is neither answered nor
# removed...
one_keys=()
for i in 1 2; do
  k="rrpc:reply:$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  one_keys+=("$k")
  c="{\"jsonrpc\":\"2.0\",\"method\":\"add\",\"params\":[$i,100],\"id\":$i,\"reply_to\":\"$k\"}"
  rec=$("$PY" -c 'import json, sys, time
print(json.dumps({"reason": "seeded " + sys.argv[2], "time": time.time(), "service": "calc_rb",
                  "message": sys.argv[1]}))' "$c" "$i")
  cli RPUSH calc_rb:dead "$rec" >/dev/null
done
# ...and a hostile one: markup in the message and the reason.
hostile=$("$PY" -c 'import json, time
print(json.dumps({"reason": "<script>window.__pwned=2</script>", "time": time.time(),
                  "service": "calc_py", "message": "<img src=x onerror=window.__pwned=1>"}))')
cli RPUSH calc_py:dead "$hostile" >/dev/null

token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
printf '%s\n' "$token" >"$test_dir/token"
chmod 600 "$test_dir/token"
start_web() { # start_web NAME ARGS...: spawns rrpc web on a free port; $url, $web_pid
  local name=$1; shift
  # Spawned here, not in a $(...) subshell, so that the exit trap kills it.
  spawn "$name" "$BUILD/rrpc" web --redis "$REDIS_URL" --listen 127.0.0.1:0 "$@"
  web_pid=$spawned
  wait_until 10 grep -q "listening on" "$test_dir/$name.log" || die "$name did not start"
  url=$(sed -n 's|.*listening on \(http://127.0.0.1:[0-9]*\)/.*|\1|p' "$test_dir/$name.log")
}
start_web web-rw
rw=$url
start_web web-ro --read-only --token-file "$test_dir/token"
ro=$url

if WEB_RW=$rw WEB_RO=$ro TOKEN=$token SERVICES=$services CHROMIUM=$CHROMIUM \
  USER_DATA_DIR="$test_dir/chromium-profile" SCREENSHOT=${2:-} \
  NODE_PATH="$test_dir/npm/node_modules" node "$here/browser_test.js" >"$test_dir/browser.log" 2>&1; then
  ok "browser_test.js: $(tail -1 "$test_dir/browser.log")"
else
  fail "browser_test.js"
fi
sed 's/^/     /' "$test_dir/browser.log"

# The requeued call was answered (42) on the reply key its caller waits on.
answer=$(cli BLPOP "$reply_key" 10 | tail -1)
if "$PY" -c 'import json, sys; r = json.loads(sys.argv[1]); assert r["result"] == 42 and r["id"] == 7' \
  "$answer" 2>/dev/null; then
  ok "the requeued dead letter was answered: $answer"
else
  fail "the requeued dead letter was answered (got '$answer')"
fi
# Requeue one: the second call was answered (2 + 100), the first stays dead.
answer=$(cli BLPOP "${one_keys[1]}" 10 | tail -1)
if "$PY" -c 'import json, sys; r = json.loads(sys.argv[1]); assert r["result"] == 102 and r["id"] == 2' \
  "$answer" 2>/dev/null; then
  ok "the dead letter requeued by its row's button was answered: $answer"
else
  fail "the dead letter requeued by its row's button was answered (got '$answer')"
fi
left=$(cli LRANGE calc_rb:dead 0 -1)
[ "$(cli LLEN calc_rb:dead)" = 1 ] && [[ $left == *'[1,100]'* ]] && [ "$(cli EXISTS "${one_keys[0]}")" = 0 ] &&
  ok "the other dead letter stayed, unanswered" ||
  fail "the other dead letter stayed, unanswered (dead: $left)"
finish
