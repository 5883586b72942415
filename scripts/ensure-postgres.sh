#!/usr/bin/env bash
# Make sure PostgreSQL answers on 127.0.0.1:5432 with a database "test" (trust auth on
# loopback), for the test suite.
#
# What it does, in order, stopping as soon as PostgreSQL answers:
#   1. nothing, when PostgreSQL already answers on 127.0.0.1:5432;
#   2. starts the local cluster (pg_ctlcluster) when it is installed but down;
#   3. changes the system only when allowed (CI=true, or SQLALCHEMY_OBSTORE_SETUP_POSTGRES=1,
#      and root): installs PostgreSQL from Debian's packages when missing, and adds
#      "trust" lines for 127.0.0.1/::1 to the top of pg_hba.conf;
#   4. creates the database "test" when missing.
# Without permission to change the system it says what it would do, and exits 1 (not fatal
# for local runs): the PostgreSQL tests then skip, or fail in CI.
set -u
host=127.0.0.1 port=5432
may_change_system() {
  [ "${CI:-}" = true ] || [ "${SQLALCHEMY_OBSTORE_SETUP_POSTGRES:-}" = 1 ]
}
ready() { command -v pg_isready >/dev/null && pg_isready -q -h $host -p $port; }
ready && exit 0
if ! command -v pg_ctlcluster >/dev/null; then
  if may_change_system && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "ensure-postgres: installing PostgreSQL from Debian's packages" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >&2 || exit 1
  else
    echo "ensure-postgres: PostgreSQL is not installed; the PostgreSQL tests will skip." >&2
    echo "  Install it yourself, or let this script do it (as root, from Debian's packages):" >&2
    echo "  SQLALCHEMY_OBSTORE_SETUP_POSTGRES=1 bash scripts/ensure-postgres.sh" >&2
    exit 1
  fi
fi
version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1)
[ -n "$version" ] || { echo "ensure-postgres: no cluster found" >&2; exit 1; }
conf=/etc/postgresql/$version/main
# trust auth on loopback, as the tests expect
if ! grep -q "sqlalchemy-obstore" "$conf/pg_hba.conf" 2>/dev/null; then
  if may_change_system; then
    { echo "# sqlalchemy-obstore tests: trust on loopback"
      echo "host all all 127.0.0.1/32 trust"
      echo "host all all ::1/128 trust"
      cat "$conf/pg_hba.conf"; } > "$conf/pg_hba.conf.new" && mv "$conf/pg_hba.conf.new" "$conf/pg_hba.conf"
  else
    echo "ensure-postgres: leaving $conf/pg_hba.conf as it is; the tests connect as" >&2
    echo "  postgres@127.0.0.1 without a password (SQLALCHEMY_OBSTORE_PG=user@host:port to change)." >&2
  fi
fi
pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null || pg_ctlcluster "$version" main start || true
for _ in $(seq 1 30); do
  ready && break
  sleep 1
done
ready || { echo "ensure-postgres: PostgreSQL did not start" >&2; exit 1; }
if ! psql -h $host -U postgres -lqt 2>/dev/null | cut -d'|' -f1 | grep -qw test; then
  psql -h $host -U postgres -c "CREATE DATABASE test" >/dev/null 2>&1 || \
    su postgres -c "createdb test" 2>/dev/null || true
fi
exit 0
