#!/usr/bin/env bash
# test_amqps.sh -- rrpc over RabbitMQ with TLS (amqps://, docs/SECURITY.md
# section 7), against a private node with a TLS listener:
#   * a throw-away CA signs the node's certificate (for "localhost" only);
#     a second CA signs nothing of the node's;
#   * calc-server serves over amqps:// and rrpc call calls it through
#     amqps://localhost:PORT/?cacertfile=CA: verified peer and host name;
#     rrpc bench too, sync and async (the async client's event loop on TLS);
#   * the CA is also found through OpenSSL's $SSL_CERT_FILE when the URL
#     names none (the system's CAs by default);
#   * refused, with a clear message and exit status 4: the wrong CA, no CA
#     at all (the system's do not know the throw-away CA), a host name the
#     certificate does not name (127.0.0.1), amqps:// to the plain port;
#     ?verify=verify_none connects anyway (explicitly asked for);
#   * a client certificate of the node's CA is accepted, one of another CA
#     refused by the broker (so it is sent), a key not matching its
#     certificate is a usage error;
#   * a CA file that does not exist, and certfile= without keyfile=, are
#     usage errors (exit 2);
#   * amqp:// (plain) to the TLS port fails and does not hang;
#   * the Ruby (bunny), Python (pika) and Node (amqplib) peers: each one's
#     calc server serves over amqps:// (called by rrpc call), each one's
#     client calls calc-server over amqps://, and refuses the wrong CA.
# Usage: tests/amqp/test_amqps.sh BUILD_DIR   (starts its own node through
# with-rabbitmq.sh, after making the certificates it needs)
set -u
# shellcheck source=tests/lib/common.sh
. "$(dirname "$0")/../lib/common.sh"
build=$(cd "$1" && pwd)
self=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")

if [ -z "${RRPC_TEST_AMQPS_PORT:-}" ]; then
  # Outer run: the certificates first (the node reads them at boot).
  tls=$test_dir/tls
  mkdir -p "$tls" && cd "$tls" || die "no dir for the certificates"
  gen() { openssl "$@" >>"$tls/openssl.log" 2>&1 || die "openssl $1 failed: $(tail -3 "$tls/openssl.log")"; }
  for ca in ca wrong-ca; do
    gen req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=rrpc test $ca" \
      -keyout "$ca.key" -out "$ca.pem"
  done
  gen req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server.key -out server.csr
  printf 'subjectAltName = DNS:localhost\n' >san.ext
  gen x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
    -extfile san.ext -out server.pem
  # Client certificates (mutual TLS): one of the node's CA, one of another.
  for ca in ca wrong-ca; do
    gen req -newkey rsa:2048 -nodes -subj "/CN=rrpc client" -keyout "client-$ca.key" -out client.csr
    gen x509 -req -in client.csr -CA "$ca.pem" -CAkey "$ca.key" -CAcreateserial -days 2 \
      -out "client-$ca.pem"
  done
  chmod 644 ./*.pem server.key
  RRPC_RABBITMQ_TLS_DIR=$tls RRPC_AMQPS_CERTS=$tls \
    "$rrpc_root/tests/harness/with-rabbitmq.sh" "$self" "$build"
  exit
fi

rrpc=$build/rrpc
calc=$build/calc-server
certs=$RRPC_AMQPS_CERTS
port=$RRPC_TEST_AMQPS_PORT
plain_port=${RRPC_TEST_AMQP_URL##*:}
plain_port=${plain_port%/}
tls_url="amqps://guest:guest@localhost:$port/"
good="$tls_url?cacertfile=$certs/ca.pem"

# ---- a call over amqps:// -----------------------------------------------------
spawn calc "$calc" --url "$good" --service calc --workers 1
wait_until 15 grep -q "serving queue 'calc'" "$test_dir/calc.log" ||
  die "calc-server did not start over amqps://"
out=$("$rrpc" call --url "$good" calc add '[1, 2]' 2>&1)
[ "$out" = 3 ] && ok "rrpc call over amqps:// (CA from ?cacertfile=): 3" || fail "amqps call: $out"
out=$("$rrpc" bench --url "$good" --calls 200 --json calc 2>&1)
[[ $out == *'"errors":0'* || $out == *'"errors": 0'* ]] && ok "rrpc bench over amqps://: no errors" ||
  fail "bench over amqps: $out"
# The async client on TLS: frames OpenSSL has decrypted and buffered do not
# make the socket readable again, so a stall would show here as a timeout.
out=$(timeout 60 "$rrpc" bench --url "$good" --async --connections 2 --window 128 --calls 5000 \
  --json calc 2>&1)
[[ $out == *'"errors":0'* && $out == *'"calls":5000'* ]] &&
  ok "rrpc bench --async over amqps://: 5000 calls, no errors" || fail "async over amqps: $out"
out=$(SSL_CERT_FILE=$certs/ca.pem "$rrpc" call --url "$tls_url" calc add '[2, 2]' 2>&1)
[ "$out" = 4 ] && ok "no cacertfile=: OpenSSL's default CAs (\$SSL_CERT_FILE) verify the broker" ||
  fail "SSL_CERT_FILE: $out"
# The broker really saw a TLS connection from rrpc (not a plain one).
"$RRPC_TEST_AMQP_CTL" list_connections ssl ssl_protocol >"$test_dir/conns.txt" 2>&1
grep -q "true" "$test_dir/conns.txt" && ok "the broker lists calc-server's connection as TLS ($(grep -o 'tlsv1\.[0-9]' "$test_dir/conns.txt" | head -1))" ||
  fail "no TLS connection listed: $(cat "$test_dir/conns.txt")"

# ---- refused: wrong CA, no CA, wrong host name, plain port ---------------------
# refused NAME URL WORDS...: rrpc call fails with exit 4, quickly, naming WORDS.
refused() {
  local name=$1 u=$2 t0 st
  shift 2
  t0=$(now_ms)
  out=$(SSL_CERT_FILE=/nonexistent "$rrpc" call --url "$u" --timeout 5 calc add '[1, 2]' 2>&1)
  st=$?
  local bad=
  for w in "$@"; do [[ $out == *"$w"* ]] || bad=1; done
  if [ "$st" = 4 ] && [ -z "$bad" ] && [ $(($(now_ms) - t0)) -lt 4000 ] && [[ $out != *guest:guest* ]]; then
    ok "$name: exit 4, \"${out#rrpc: }\""
  else
    fail "$name: status $st, $out"
  fi
}
refused "the wrong CA" "$tls_url?cacertfile=$certs/wrong-ca.pem" certificate cacertfile=
refused "no CA (the system's do not know the test CA)" "$tls_url" certificate "?cacertfile=PATH"
refused "a host name the certificate does not name" \
  "amqps://guest:guest@127.0.0.1:$port/?cacertfile=$certs/ca.pem" "does not name the URL's host"
refused "amqps:// to the plain AMQP port" "amqps://guest:guest@localhost:$plain_port/?cacertfile=$certs/ca.pem" \
  "is that port TLS"
out=$("$rrpc" call --url "amqps://guest:guest@127.0.0.1:$port/?cacertfile=$certs/wrong-ca.pem&verify=verify_none" \
  calc add '[3, 4]' 2>&1)
[ "$out" = 7 ] && ok "?verify=verify_none connects without verifying (when asked for)" ||
  fail "verify_none: $out"

# ---- client certificates (the node verifies one when it is sent) -------------
out=$("$rrpc" call --url "$good&certfile=$certs/client-ca.pem&keyfile=$certs/client-ca.key" \
  calc add '[8, 8]' 2>&1)
[ "$out" = 16 ] && ok "a client certificate of the node's CA (certfile=, keyfile=): accepted" ||
  fail "client certificate: $out"
out=$("$rrpc" call --url "$good&certfile=$certs/client-wrong-ca.pem&keyfile=$certs/client-wrong-ca.key" \
  --timeout 5 calc add '[8, 8]' 2>&1)
st=$?
# The node refusing it proves the certificate was sent.
[ "$st" = 4 ] && ok "a client certificate of another CA: the broker refuses it (exit 4): ${out#rrpc: }" ||
  fail "foreign client certificate: status $st, $out"
out=$("$rrpc" call --url "$good&certfile=$certs/client-ca.pem&keyfile=$certs/client-wrong-ca.key" \
  calc add '[8, 8]' 2>&1)
st=$?
[ "$st" = 2 ] && ok "a key that does not match its certificate: exit 2" || fail "mismatched key: status $st, $out"

# ---- usage errors and the plain scheme on the TLS port -------------------------
out=$("$rrpc" call --url "$tls_url?cacertfile=$test_dir/nosuch.pem" calc add '[1, 2]' 2>&1)
st=$?
[ "$st" = 2 ] && [[ $out == *"nosuch.pem"* ]] && ok "a CA file that cannot be read: exit 2, names it" ||
  fail "missing CA file: $st $out"
out=$("$rrpc" call --url "$tls_url?certfile=$certs/server.pem" calc add '[1, 2]' 2>&1)
st=$?
[ "$st" = 2 ] && [[ $out == *"keyfile="* ]] && ok "certfile= without keyfile=: exit 2" ||
  fail "certfile alone: $st $out"
out=$(timeout 20 "$rrpc" call --url "amqp://guest:guest@127.0.0.1:$port/" --timeout 3 calc add '[1, 2]' 2>&1)
st=$?
[ "$st" = 4 ] && ok "amqp:// (plain) on the TLS port fails (exit 4): ${out#rrpc: }" ||
  fail "plain on TLS port: $st $out"
out=$("$rrpc" call --url "amqp://localhost:$port/?cacertfile=$certs/ca.pem" calc add '[1, 2]' 2>&1)
st=$?
[[ $out == *"amqps://"* ]] && ok "TLS parameters on an amqp:// URL are refused" || fail "amqp:// with cacertfile: $st $out"

# ---- the peers over amqps:// -----------------------------------------------------
py=/usr/bin/python3 # Debian's python3-pika lives there
node_ready || die "the Node peer's dependencies are missing (scripts/node-deps.sh)"
spawn rb ruby "$rrpc_root/clients/ruby/calc_server.rb" --url "$good" --service tls_rb
spawn py "$py" "$rrpc_root/clients/python/calc_server.py" --url "$good" --service tls_py
spawn js node "$rrpc_root/clients/node/calc_server.js" --url "$good" --service tls_js
for s in tls_rb tls_py tls_js; do
  if wait_until 20 "$rrpc" call --url "$good" --timeout 0.5 "$s" add '[0, 0]'; then
    out=$("$rrpc" call --url "$good" "$s" add '[5, 6]' 2>&1)
    [ "$out" = 11 ] && ok "the ${s#tls_} calc server serves over amqps://" || fail "${s#tls_} server: $out"
  else
    fail "the ${s#tls_} calc server does not answer over amqps://: $(tail -2 "$test_dir/${s#tls_}.log")"
  fi
done
peer_call() { # peer_call LANG URL ARGS...: the LANG client's call_peer with RRPC_URL=URL
  local lang=$1 u=$2
  shift 2
  case $lang in
  rb) RRPC_URL=$u ruby "$rrpc_root/tests/interop/call_peer.rb" --timeout 5 "$@" ;;
  py) RRPC_URL=$u "$py" "$rrpc_root/tests/interop/call_peer.py" --timeout 5 "$@" ;;
  js) RRPC_URL=$u node "$rrpc_root/tests/interop/call_peer.js" --timeout 5 "$@" ;;
  esac
}
for lang in rb py js; do
  out=$(peer_call "$lang" "$good" calc add '[20, 3]' 2>&1)
  [ "$out" = 23 ] && ok "the $lang client calls calc-server over amqps://" || fail "$lang client over amqps: $out"
  out=$(SSL_CERT_FILE=/nonexistent peer_call "$lang" "$tls_url?cacertfile=$certs/wrong-ca.pem" calc add '[1, 2]' 2>&1)
  st=$?
  [ "$st" != 0 ] && [[ ${out,,} == *certif* && $out == *"cannot connect"* ]] && [[ $out != *guest:guest* ]] &&
    ok "the $lang client refuses the wrong CA: $(grep "cannot connect" <<<"$out" | tail -1 | cut -c1-240)" ||
    fail "$lang client, wrong CA: status $st, $out"
done
finish
