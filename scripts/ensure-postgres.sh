#!/usr/bin/env bash
# Make sure PostgreSQL answers on 127.0.0.1:5432 with a database "test" (trust auth).
# Starts the local cluster when it is installed but down; installs it from Debian's
# packages when it is missing and we are root. Exit 1 (not fatal for local runs) when
# no PostgreSQL can be had: the PostgreSQL tests then skip, or fail in CI.
set -u
host=127.0.0.1 port=5432
if command -v pg_isready >/dev/null && pg_isready -q -h $host -p $port; then
  exit 0
fi
if ! command -v pg_ctlcluster >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "ensure-postgres: installing PostgreSQL from Debian's packages" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >&2 || exit 1
  else
    echo "ensure-postgres: PostgreSQL is not installed; PostgreSQL tests will skip" >&2
    exit 1
  fi
fi
version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1)
[ -n "$version" ] || { echo "ensure-postgres: no cluster found" >&2; exit 1; }
conf=/etc/postgresql/$version/main
# trust auth on loopback, as the tests expect
if ! grep -q "sqlalchemy-obstore" "$conf/pg_hba.conf" 2>/dev/null; then
  { echo "# sqlalchemy-obstore tests: trust on loopback"
    echo "host all all 127.0.0.1/32 trust"
    echo "host all all ::1/128 trust"
    cat "$conf/pg_hba.conf"; } > "$conf/pg_hba.conf.new" && mv "$conf/pg_hba.conf.new" "$conf/pg_hba.conf"
fi
pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null || pg_ctlcluster "$version" main start || true
for _ in $(seq 1 30); do
  pg_isready -q -h $host -p $port && break
  sleep 1
done
pg_isready -q -h $host -p $port || { echo "ensure-postgres: PostgreSQL did not start" >&2; exit 1; }
if ! psql -h $host -U postgres -lqt 2>/dev/null | cut -d'|' -f1 | grep -qw test; then
  psql -h $host -U postgres -c "CREATE DATABASE test" >/dev/null 2>&1 || \
    su postgres -c "createdb test" 2>/dev/null || true
fi
exit 0
