#!/usr/bin/env bash
# Make sure Redis answers on 127.0.0.1:6379: the Celery tests use it as broker and result
# backend (each test under its own key prefix, deleted at the end).
#
# What it does, stopping as soon as Redis answers:
#   1. nothing, when Redis already answers PING on 127.0.0.1:6379;
#   2. starts it when redis-server is installed but down, keeping nothing on disk:
#      redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
#        --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
#      (a user who cannot write those folders gets .cache/redis in the checkout instead).
# It installs nothing. Without redis-server it says how to install it and exits 1 (not
# fatal for local runs): the Celery tests then skip, or fail in CI.
set -u
host=127.0.0.1 port=6379
ready() {
  # PING over bash's /dev/tcp: needs no redis-cli
  local reply=""
  { exec 3<>"/dev/tcp/$host/$port"; } 2>/dev/null || return 1
  printf 'PING\r\n' >&3
  read -r -t 2 reply <&3 || true
  exec 3<&- 3>&-
  [ "${reply%$'\r'}" = "+PONG" ]
}
ready && exit 0
if ! command -v redis-server >/dev/null; then
  echo "ensure-redis: Redis is not installed and nothing answers on $host:$port;" >&2
  echo "  the Celery tests will skip (or fail in CI). Install it (Debian: apt-get install" >&2
  echo "  redis-server), or point the tests at a server: SQLALCHEMY_OBSTORE_REDIS=redis://host:port/db" >&2
  exit 1
fi
dir=/var/lib/redis logfile=/var/log/redis/ci.log
if ! { mkdir -p "$dir" "$(dirname "$logfile")" && [ -w "$dir" ] && [ -w "$(dirname "$logfile")" ]; } 2>/dev/null; then
  dir="$(cd "$(dirname "$0")/.." && pwd)/.cache/redis" logfile="$dir/redis.log"
  mkdir -p "$dir"
fi
echo "ensure-redis: starting redis-server on $host:$port (log: $logfile)" >&2
redis-server --daemonize yes --bind 127.0.0.1 -::1 --port $port --save "" --appendonly no \
  --dir "$dir" --logfile "$logfile" || { echo "ensure-redis: redis-server did not start" >&2; exit 1; }
for _ in $(seq 1 50); do
  ready && exit 0
  sleep 0.2
done
echo "ensure-redis: Redis did not answer on $host:$port after 10 s (see $logfile)" >&2
exit 1
