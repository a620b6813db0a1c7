#!/usr/bin/env bash
# install-deps.sh -- installs the Debian packages rrpc needs, only if missing.
#
# `make demo` and `make test` call this first so that a fresh Debian 12
# machine needs nothing installed by hand (the Node peer's own npm
# dependencies come from its lockfile: scripts/node-deps.sh).  Installing needs root; as
# another user it names the missing packages and stops.
set -eu
packages=(
  gcc make cmake pkg-config
  libhiredis-dev libjansson-dev libevent-dev
  ruby-minitest
  redis-server redis-tools redis-sentinel
  ruby ruby-redis python3 python3-redis
  python3-venv python3-pip python3-setuptools python3-wheel python3-pytest
  clang libclang-rt-14-dev libfuzzer-14-dev valgrind
  man-db openssl stunnel4 clang-format
  chromium prometheus curl # rrpc web's tests: headless browser, promtool, a real scraper
  rabbitmq-server librabbitmq-dev python3-pika # the AMQP transport and its tests
  ruby-bunny # the Ruby peer's AMQP transport
)
# The Node peer needs node (20 or later) and npm.  A machine that has them
# already (a node of its own on PATH, as from NodeSource) keeps them:
# Debian's nodejs and npm are asked for only when either is missing.
command -v node >/dev/null 2>&1 || packages+=(nodejs)
command -v npm >/dev/null 2>&1 || packages+=(npm)
missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "install-deps: installing ${missing[*]}" >&2
if [ "$(id -u)" != 0 ]; then
  echo "install-deps: run as root (or install these packages): ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
