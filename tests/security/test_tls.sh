#!/usr/bin/env bash
# test_tls.sh -- rrpc through TLS, with a stunnel on the client side.
#
# hiredis 0.14.1 cannot speak TLS, so docs/SECURITY.md recommends a local
# TLS tunnel.  This test builds exactly that set-up and proves it works:
# a throwaway CA signs a server and a client certificate; redis-server
# listens on a TLS port only (--port 0: no plain TCP at all) and demands a
# client certificate; stunnel in client mode offers a plain port on the
# loopback and wraps it in TLS (verifying Redis's certificate and showing
# its own).  calc-server, `rrpc call`, `rrpc bench --async` and calc-client
# all go through the tunnel.  The test also shows the plain protocol is
# refused on the TLS port and that a TLS peer without a client certificate
# is turned away.
#
# Usage: test_tls.sh BUILD_DIR
set -u
BUILD=$(cd "${1:?usage: test_tls.sh BUILD_DIR}" && pwd)
for tool in openssl stunnel4 redis-server redis-cli; do
  command -v "$tool" >/dev/null || { echo "test_tls.sh: $tool missing (scripts/install-deps.sh)"; exit 1; }
done
# shellcheck source=tests/lib/common.sh
. "$(dirname "$0")/../lib/common.sh"
dir=$test_dir

# 1. A throwaway CA, and a server and a client certificate it signs.
#    EC keys keep this quick; the server's names cover localhost/127.0.0.1.
cd "$dir" || exit 1
cert() { # cert NAME SUBJECT [EXTENSIONS]
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$2" \
    -keyout "$1.key" -out "$1.csr" 2>/dev/null &&
    openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 \
      -out "$1.crt" ${3:+-extfile <(printf '%s\n' "$3")} 2>/dev/null
}
if ! { openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
         -subj "/CN=rrpc test CA" -days 1 -keyout ca.key -out ca.crt 2>/dev/null &&
       cert server localhost "subjectAltName=DNS:localhost,IP:127.0.0.1" &&
       cert client rrpc-client; }; then
  echo "FAIL could not make the test certificates"; exit 1
fi
chmod 600 ./*.key

# 2. Redis on a TLS port only, requiring client certificates.
tls_port=$(free_port)
redis-server --port 0 --tls-port "$tls_port" --bind 127.0.0.1 \
  --tls-cert-file server.crt --tls-key-file server.key --tls-ca-cert-file ca.crt \
  --tls-auth-clients yes --save "" --appendonly no --dir "$dir" --daemonize no \
  --loglevel warning --logfile "$dir/redis.log" &
admin() { redis-cli --tls --cacert ca.crt --cert client.crt --key client.key -h 127.0.0.1 \
  -p "$tls_port" "$@"; }
for _ in $(seq 100); do [ "$(admin ping 2>/dev/null)" = PONG ] && break; sleep 0.05; done
[ "$(admin ping 2>/dev/null)" = PONG ] || { echo "FAIL redis-server (TLS) did not start"; cat redis.log; exit 1; }

# 3. stunnel in client mode: plain on 127.0.0.1:$plain_port, TLS to Redis.
plain_port=$(free_port)
cat >stunnel.conf <<CONF
foreground = yes
pid =
output = $dir/stunnel.log
debug = info
[redis]
client = yes
accept = 127.0.0.1:$plain_port
connect = 127.0.0.1:$tls_port
CAfile = $dir/ca.crt
verifyChain = yes
checkHost = localhost
cert = $dir/client.crt
key = $dir/client.key
CONF
stunnel4 stunnel.conf >/dev/null 2>&1 &
url=redis://127.0.0.1:$plain_port
for _ in $(seq 100); do
  [ "$(redis-cli -u "$url" ping 2>/dev/null)" = PONG ] && break; sleep 0.05
done
[ "$(redis-cli -u "$url" ping 2>/dev/null)" = PONG ] && ok "PING through stunnel" ||
  { fail "no PONG through stunnel"; cat stunnel.log; exit 1; }

# 4. The plain protocol has no way in: Redis has no plain TCP port, and a
#    plain client on the TLS port gets nothing.
[ "$(admin config get port | tail -1)" = 0 ] && ok "Redis has no plain TCP port (port 0)" ||
  fail "Redis still listens on plain TCP"
if timeout 5 "$BUILD/rrpc" call --redis "redis://127.0.0.1:$tls_port" --timeout 1 calc add '[1, 2]' \
    >out.txt 2>err.txt; then
  fail "a plain rrpc call on the TLS port succeeded"
else
  ok "plain rrpc call on the TLS port fails (exit $?: $(head -c 100 err.txt))"
fi
# A TLS client that shows no certificate is refused (--tls-auth-clients yes).
if [ "$(redis-cli --tls --cacert ca.crt -h 127.0.0.1 -p "$tls_port" ping 2>/dev/null)" = PONG ]; then
  fail "TLS without a client certificate was accepted"
else
  ok "TLS without a client certificate is refused"
fi

# 5. rrpc through the tunnel: the server and every kind of caller.
"$BUILD/calc-server" --redis "$url" --workers 2 >server.log 2>&1 &
for _ in $(seq 100); do
  "$BUILD/rrpc" call --redis "$url" --timeout 0.2 calc add '[0, 0]' >/dev/null 2>&1 && break
  sleep 0.1
done
got=$("$BUILD/rrpc" call --redis "$url" calc add '[1, 2]' 2>&1)
[ "$got" = 3 ] && ok "rrpc call through TLS: add [1, 2] = $got" || fail "rrpc call through TLS: '$got'"
got=$("$BUILD/rrpc" call --redis "$url" calc echo '["x\u00e9"]' 2>&1)
[ "$got" = '["xé"]' ] && ok "rrpc call through TLS: echo" || fail "rrpc call through TLS echo: '$got'"
if out=$("$BUILD/calc-client" --redis "$url" 2>&1); then ok "calc-client through TLS"; else
  fail "calc-client through TLS: $out"; fi
if out=$("$BUILD/rrpc" bench --async --calls 200 --redis "$url" calc 2>&1); then
  ok "rrpc bench --async through TLS: $(echo "$out" | head -1)"
else
  fail "rrpc bench --async through TLS: $out"
fi

# 6. The tunnel really negotiated TLS with verified certificates.
grep -q 'TLSv1\.[23]' stunnel.log && grep -q 'Certificate accepted' stunnel.log &&
  ok "stunnel: $(grep -o 'TLSv1\.[23][^,]*' stunnel.log | head -1), Redis certificate verified" ||
  { fail "stunnel log shows no verified TLS session"; tail -20 stunnel.log; }
[ "$checks_failed" = 0 ] || { echo "--- server.log"; cat server.log; echo "--- stunnel.log"; tail -30 stunnel.log; }
finish
