#!/usr/bin/env bash
# with-rabbitmq.sh -- runs a command against a private, throw-away
# rabbitmq-server (the AMQP transport's tests).
#
# Like with-redis.sh: nothing that happens to be running is used.  A node of
# its own (its own RABBITMQ_NODENAME, AMQP port, distribution port, epmd
# port, data, logs, feature flags, plugins, config and cookie in $HOME) lives
# in a fresh directory owned by the rabbitmq user -- the server drops to that
# user when started as root, so the directory and its parents are
# traversable (mode 755 under /tmp).  It waits until the node is up (a few
# seconds), exports RRPC_TEST_AMQP_URL (amqp://guest:guest@127.0.0.1:PORT/),
# RRPC_TEST_AMQP_CTL (rabbitmqctl on the node), RRPC_TEST_AMQP_PIDFILE (its
# beam.smp's pid: SIGSTOP, kill -9) and RRPC_TEST_AMQP_START (starts it
# again after a kill, on the same data), runs the command, then
# stops the node, its epmd and removes the directory, whatever happens.  Starting a node costs seconds: group AMQP checks into
# few tests.
#
# Usage: with-rabbitmq.sh COMMAND [ARGS...]   (exit status is the command's)
set -u
# shellcheck source=tests/lib/common.sh
. "$(dirname "$0")/../lib/common.sh"
server=/usr/lib/rabbitmq/bin/rabbitmq-server
ctl=/usr/lib/rabbitmq/bin/rabbitmqctl
[ -x "$server" ] || die "with-rabbitmq.sh: rabbitmq-server is not installed (scripts/install-deps.sh)"
# Its own directory: $test_dir is mode 700 (mktemp), which the rabbitmq user
# could not enter.
node_dir=$(mktemp -d /tmp/rrpc-rabbitmq.XXXXXX) || die "with-rabbitmq.sh: no temp dir"
chmod 755 "$node_dir"
read -r amqp_port dist_port epmd_port tls_port < <(free_ports 4 | tr '\n' ' ')
node="rrpc$$-$amqp_port@localhost"
printf 'listeners.tcp.default = 127.0.0.1:%s\nloopback_users = none\n' "$amqp_port" \
  >"$node_dir/rabbitmq.conf"
echo '[].' >"$node_dir/enabled_plugins"
# $RRPC_RABBITMQ_DEFINITIONS: users, vhosts and permissions loaded at boot
# (a definitions file; the tests' users and ACLs, tests/amqp/definitions.json).
if [ -n "${RRPC_RABBITMQ_DEFINITIONS:-}" ]; then
  cp "$RRPC_RABBITMQ_DEFINITIONS" "$node_dir/definitions.json"
  echo "load_definitions = $node_dir/definitions.json" >>"$node_dir/rabbitmq.conf"
fi
# $RRPC_RABBITMQ_TLS_DIR: a directory with ca.pem, server.pem and
# server.key (the amqps:// tests' throw-away CA): a TLS listener on a port of
# its own too, exported as RRPC_TEST_AMQPS_PORT.  The files are copied into
# the node's directory, which the rabbitmq user can read.  A client
# certificate is optional, but one that is sent must chain to ca.pem.
amqps_port=
if [ -n "${RRPC_RABBITMQ_TLS_DIR:-}" ]; then
  amqps_port=$tls_port
  mkdir "$node_dir/tls" && cp "$RRPC_RABBITMQ_TLS_DIR"/{ca.pem,server.pem,server.key} "$node_dir/tls/" ||
    die "with-rabbitmq.sh: cannot copy the TLS files of $RRPC_RABBITMQ_TLS_DIR"
  printf '%s\n' "listeners.ssl.default = 127.0.0.1:$amqps_port" \
    "ssl_options.cacertfile = $node_dir/tls/ca.pem" \
    "ssl_options.certfile = $node_dir/tls/server.pem" \
    "ssl_options.keyfile = $node_dir/tls/server.key" \
    "ssl_options.verify = verify_peer" "ssl_options.fail_if_no_peer_cert = false" \
    >>"$node_dir/rabbitmq.conf"
fi
runas=()
if [ "$(id -u)" = 0 ]; then
  chown -R rabbitmq:rabbitmq "$node_dir"
  runas=(setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups)
fi
# The CLI tools must not see the node's ports (a CLI would take the
# distribution port itself): they get HOME (the cookie), the epmd port and -n.
ctl_env=(env -i PATH="$PATH" HOME="$node_dir" ERL_EPMD_PORT="$epmd_port" LANG=C.UTF-8)

# Stops the node (its pid file if the CLI cannot), its epmd, and removes
# its directory; then common.sh's cleanup, with the command's status.
rabbit_stop() {
  "${ctl_env[@]}" "${runas[@]}" "$ctl" -n "$node" -q stop "$node_dir/pid" >/dev/null 2>&1 ||
    kill -9 "$(cat "$node_dir/pid" 2>/dev/null)" 2>/dev/null
  "${ctl_env[@]}" epmd -kill >/dev/null 2>&1
  rm -rf "$node_dir"
}
rabbit_exit() {
  local status=$?
  rabbit_stop
  (exit "$status")
  lib_cleanup
}
trap rabbit_exit EXIT

start_cmd=("${runas[@]}" env -i PATH="$PATH" HOME="$node_dir" LANG=C.UTF-8
  RABBITMQ_NODENAME="$node" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  RABBITMQ_NODE_PORT="$amqp_port" RABBITMQ_DIST_PORT="$dist_port"
  ERL_EPMD_PORT="$epmd_port" ERL_EPMD_ADDRESS=127.0.0.1
  RABBITMQ_MNESIA_BASE="$node_dir/mnesia" RABBITMQ_LOG_BASE="$node_dir/log"
  RABBITMQ_FEATURE_FLAGS_FILE="$node_dir/feature_flags"
  RABBITMQ_ENABLED_PLUGINS_FILE="$node_dir/enabled_plugins"
  RABBITMQ_CONFIG_FILE="$node_dir/rabbitmq.conf" RABBITMQ_PID_FILE="$node_dir/pid"
  "$server")
spawn rabbitmq "${start_cmd[@]}"
# The AMQP listener opens last in the boot: once it accepts, the node serves.
amqp_up() { (exec 3<>"/dev/tcp/127.0.0.1/$amqp_port") 2>/dev/null; }
wait_until 60 amqp_up || die "with-rabbitmq.sh: rabbitmq-server did not start"
# $RRPC_TEST_AMQP_START: starts the node again after a test killed it
# (kill -9 of the pid in $RRPC_TEST_AMQP_PIDFILE, the beam.smp process):
# same name, ports, data and config, so durable queues and persistent
# messages come back; returns once it accepts AMQP again (status 1 if not
# within 60 s).  The stop at exit finds it by the pid file.
{
  printf '#!/usr/bin/env bash\n'
  printf '%q ' nohup "${start_cmd[@]}"
  printf '>>%q 2>&1 </dev/null &\n' "$node_dir/restarts.log"
  printf 'for _ in $(seq 600); do (exec 3<>/dev/tcp/127.0.0.1/%s) 2>/dev/null && exit 0; sleep 0.1; done\nexit 1\n' "$amqp_port"
} >"$node_dir/start"
chmod 755 "$node_dir/start"
export RRPC_TEST_AMQP_START="$node_dir/start" RRPC_TEST_AMQP_PIDFILE="$node_dir/pid"
if [ -n "$amqps_port" ]; then
  amqps_up() { (exec 3<>"/dev/tcp/127.0.0.1/$amqps_port") 2>/dev/null; }
  wait_until 30 amqps_up || die "with-rabbitmq.sh: the TLS listener did not open"
  export RRPC_TEST_AMQPS_PORT="$amqps_port"
fi
export RRPC_TEST_AMQP_URL="amqp://guest:guest@127.0.0.1:$amqp_port/"
# $RRPC_TEST_AMQP_CTL ARGS...: rabbitmqctl on this node (close_all_connections...).
printf '#!/bin/sh\nexec %s %s -n %s "$@"\n' "${ctl_env[*]} ${runas[*]}" "$ctl" "$node" \
  >"$node_dir/ctl"
chmod 755 "$node_dir/ctl"
export RRPC_TEST_AMQP_CTL="$node_dir/ctl"
"$@"
