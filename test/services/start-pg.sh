#!/usr/bin/env bash
# start-pg.sh [DIR] — a throwaway PostgreSQL 15 cluster (the role may create databases: each
# PostgreSQL test suite makes its own) (Debian's postgresql-15) for tests,
# listening on 127.0.0.1 only. Idempotent: installs if missing, initdb's DIR/data once,
# starts it if stopped, does nothing if running; (re)creates the role and database.
# Prints DATABASE_URL=... and PG* lines on stdout; progress goes to stderr.
# Env: PG_PORT=55432 PG_USER=app PG_PASSWORD=app PG_DB=app
#      PG_AUTH=scram-sha-256|trust (TCP auth)  PG_FAST=1 (fsync/synchronous_commit/full_page_writes off)
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "start-pg.sh: run as root" >&2; exit 1; }
DIR=$(realpath -m "${1:-${PG_DIR:-/tmp/sfs-services/pg}}")
PORT=${PG_PORT:-55432} U=${PG_USER:-app} PW=${PG_PASSWORD:-app} DB=${PG_DB:-app}
AUTH=${PG_AUTH:-scram-sha-256} FAST=${PG_FAST:-1}
BIN=/usr/lib/postgresql/15/bin
log() { echo "[pg $(date +%T)] $*" >&2; }
T0=$(date +%s.%N)
mkdir -p "$DIR/log" "$DIR/run"

if [ ! -x "$BIN/postgres" ] || [ ! -x "$BIN/psql" ]; then
  log "apt-get install postgresql-15 (log: $DIR/log/apt.log)"
  # the package's postinst also creates (never starts, thanks to policy-rc.d) Debian's
  # default cluster 15/main on port 5432; this script does not use or touch it
  made_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && made_policy=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  aptopts=(-y -q --no-install-recommends -o DPkg::Lock::Timeout=600)
  apt-get install "${aptopts[@]}" postgresql-15 postgresql-client-15 >>"$DIR/log/apt.log" 2>&1 ||
    { apt-get update -q >>"$DIR/log/apt.log" 2>&1 || true
      apt-get install "${aptopts[@]}" postgresql-15 postgresql-client-15 >>"$DIR/log/apt.log" 2>&1; } ||
    { [ -n "$made_policy" ] && rm -f /usr/sbin/policy-rc.d; tail -n 20 "$DIR/log/apt.log" >&2; exit 1; }
  [ -n "$made_policy" ] && rm -f /usr/sbin/policy-rc.d
fi

chown postgres:postgres "$DIR" "$DIR/log" "$DIR/run"
cd "$DIR" # somewhere user postgres may stand in
as_pg() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; } # postgres refuses root
PGDATA="$DIR/data"
sql() { "$BIN/psql" -X -q -h "$DIR/run" -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"; }
url() {
  cat <<EOF
DATABASE_URL=postgres://$U:$PW@127.0.0.1:$PORT/$DB
PGHOST=127.0.0.1
PGPORT=$PORT
PGUSER=$U
PGPASSWORD=$PW
PGDATABASE=$DB
EOF
}

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  log "initdb $PGDATA"
  rm -rf "$PGDATA"
  install -o postgres -g postgres -m 600 /dev/null "$DIR/.pw" && echo postgres >"$DIR/.pw"
  as_pg "$BIN/initdb" -D "$PGDATA" -U postgres --pwfile="$DIR/.pw" -E UTF8 --locale=C.UTF-8 \
    --auth-local=trust --auth-host="$AUTH" --no-sync >"$DIR/log/initdb.log" 2>&1 ||
    { tail -n 20 "$DIR/log/initdb.log" >&2; exit 1; }
  rm -f "$DIR/.pw"
  {
    echo "listen_addresses = '127.0.0.1'"
    echo "unix_socket_directories = '$DIR/run'"
    # throwaway test cluster: durability off, so nothing waits on the disk
    if [ "$FAST" = 1 ]; then printf '%s\n' "fsync = off" "synchronous_commit = off" "full_page_writes = off"; fi
  } >>"$PGDATA/postgresql.conf"
fi

# a postmaster that was just killed stays a zombie until init reaps it, and pg_ctl would
# take that for a running server: wait it out
if [ -s "$PGDATA/postmaster.pid" ]; then
  pid=$(head -n 1 "$PGDATA/postmaster.pid")
  for _ in $(seq 1 100); do [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" = Z ] || break; sleep 0.1; done
fi
if as_pg "$BIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then
  running_port=$(sed -n 4p "$PGDATA/postmaster.pid")
  [ "$running_port" = "$PORT" ] || { log "already running on port $running_port, not $PORT"; exit 1; }
  log "already running"
else
  if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then log "port $PORT is already taken by another process"; exit 1; fi
  log "starting on 127.0.0.1:$PORT"
  as_pg "$BIN/pg_ctl" -D "$PGDATA" -l "$DIR/log/postgres.log" -w -t 60 -o "-p $PORT" start >/dev/null ||
    { tail -n 20 "$DIR/log/postgres.log" >&2; exit 1; }
fi

for _ in $(seq 1 300); do "$BIN/pg_isready" -q -h "$DIR/run" -p "$PORT" && break; sleep 0.1; done
# role + database, idempotent; the password is reset to PG_PASSWORD every time
sql -v u="$U" -v pw="$PW" -v db="$DB" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN', :'u') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'u') \gexec
SELECT format('ALTER ROLE %I LOGIN CREATEDB PASSWORD %L', :'u', :'pw') \gexec
-- DROP DATABASE ... WITH (FORCE) (suites dropping their databases) must also end an autovacuum
-- worker that happens to be in that database, which belongs to no role: that takes pg_signal_backend.
SELECT format('GRANT pg_signal_backend TO %I', :'u') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'u') WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \gexec
SQL
log "ready in $(awk "BEGIN{printf \"%.1f\", $(date +%s.%N) - $T0}") s"
url | tee "$DIR/pg.env"
