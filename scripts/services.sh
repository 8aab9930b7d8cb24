#!/usr/bin/env bash
# Local Redis and PostgreSQL 15 for the gateway, the reconciler and the tests, on loopback.
#
#   scripts/services.sh start   install what is missing, start both (safe to run twice), print URLs
#   scripts/services.sh stop    stop what start started
#   scripts/services.sh status  say what runs
#   scripts/services.sh env     print `export REDIS_URL=... DATABASE_URL=...` for eval
#   scripts/services.sh cluster-start   start Postgres and, instead of the single Redis, a Redis
#                                       Cluster of 3 primaries and 3 replicas (AOF on), and print
#                                       the URLs (REDIS_URL lists the six nodes as seeds)
#   scripts/services.sh cluster-stop    stop the cluster's six nodes
#
# Settings (environment): REDIS_PORT (6379), PG_PORT (5432), SERVICES_DIR (.local/services in the
# repository; ignored by git), PG_DATABASE (reservations), REDIS_APPENDFSYNC (everysec; `always`
# loses no acknowledged write in a machine crash, at a throughput cost: see docs/operations.md),
# CLUSTER_PORT (7000: the cluster's nodes use this port and the five after it).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REDIS_PORT=${REDIS_PORT:-6379}
REDIS_APPENDFSYNC=${REDIS_APPENDFSYNC:-everysec}
case "$REDIS_APPENDFSYNC" in always|everysec|no) ;; *) echo "services: REDIS_APPENDFSYNC must be always, everysec or no" >&2; exit 2 ;; esac
PG_PORT=${PG_PORT:-5432}
PG_DATABASE=${PG_DATABASE:-reservations}
SERVICES_DIR=${SERVICES_DIR:-$ROOT/.local/services}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
REDIS_DIR=$SERVICES_DIR/redis-$REDIS_PORT
CLUSTER_PORT=${CLUSTER_PORT:-7000}
CLUSTER_PORTS=$(seq "$CLUSTER_PORT" $((CLUSTER_PORT + 5)))

log() { echo "services: $*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo -n "$@"
  else log "need root to run: $*"; return 1; fi
}

install_missing() {
  local missing=()
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  pkg-config --exists hiredis 2>/dev/null || missing+=(libhiredis-dev)
  pkg-config --exists libpq 2>/dev/null || missing+=(libpq-dev)
  [ -x "$PG_BIN/postgres" ] || missing+=(postgresql-15)
  command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
  # the test of a primary killed while its replica lags (PrimaryDeathTests) cuts one replication
  # connection on loopback with iptables
  command -v iptables >/dev/null 2>&1 || [ -x /usr/sbin/iptables ] || missing+=(iptables)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# Postgres refuses to run as root: then it runs as `postgres`, which must be able to reach its
# data folder. If the repository sits where `postgres` cannot go (say under /root), the data
# folder moves to /var/tmp and start says so.
pg_dir() {
  local dir=$SERVICES_DIR/postgres-$PG_PORT
  if [ "$(id -u)" = 0 ]; then
    mkdir -p "$SERVICES_DIR"
    if ! su postgres -s /bin/sh -c "test -x '$SERVICES_DIR'" 2>/dev/null; then
      dir=/var/tmp/reservation-gateway-postgres-$PG_PORT
    fi
  fi
  echo "$dir"
}

as_pg_owner() {
  if [ "$(id -u)" = 0 ]; then
    # runuser keeps our environment small and needs no password.
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

redis_up() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; }
pg_up() { "$PG_BIN/pg_isready" -h 127.0.0.1 -p "$PG_PORT" -q 2>/dev/null; }

start_redis() {
  if redis_up; then log "redis already answers on 127.0.0.1:$REDIS_PORT"; return; fi
  mkdir -p "$REDIS_DIR"
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --daemonize yes \
    --dir "$REDIS_DIR" --appendonly yes --appendfsync "$REDIS_APPENDFSYNC" \
    --pidfile "$REDIS_DIR/redis.pid" --logfile "$REDIS_DIR/redis.log" --save "" >/dev/null
  for _ in $(seq 1 100); do redis_up && break; sleep 0.1; done
  redis_up || { log "redis did not start; see $REDIS_DIR/redis.log"; exit 1; }
  log "redis on 127.0.0.1:$REDIS_PORT (data in $REDIS_DIR, appendonly yes, appendfsync $REDIS_APPENDFSYNC)"
}

start_postgres() {
  local dir; dir=$(pg_dir)
  if pg_up; then log "postgres already answers on 127.0.0.1:$PG_PORT"; else
    if [ ! -f "$dir/PG_VERSION" ]; then
      mkdir -p "$dir"
      [ "$(id -u)" = 0 ] && chown postgres:postgres "$dir"
      as_pg_owner "$PG_BIN/initdb" -D "$dir" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 >/dev/null
    fi
    as_pg_owner "$PG_BIN/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 60 \
      -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -k $dir -c max_connections=200" start >/dev/null
    pg_up || { log "postgres did not start; see $dir/server.log"; exit 1; }
    log "postgres on 127.0.0.1:$PG_PORT (data in $dir)"
  fi
  if ! psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -Atqc "select 1 from pg_database where datname = '$PG_DATABASE'" postgres | grep -q 1; then
    psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -qc "create database \"$PG_DATABASE\"" postgres
  fi
}

start_cluster() {
  local port dir
  for port in $CLUSTER_PORTS; do
    if redis-cli -p "$port" ping 2>/dev/null | grep -q PONG; then continue; fi
    dir=$SERVICES_DIR/cluster-$port
    mkdir -p "$dir"
    redis-server --bind 127.0.0.1 --port "$port" --daemonize yes --dir "$dir" \
      --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 2000 \
      --appendonly yes --appendfsync "$REDIS_APPENDFSYNC" --save "" \
      --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" >/dev/null
  done
  for port in $CLUSTER_PORTS; do
    for _ in $(seq 1 100); do redis-cli -p "$port" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
  done
  if ! redis-cli -p "$CLUSTER_PORT" cluster info 2>/dev/null | grep -q "cluster_slots_assigned:16384"; then
    # shellcheck disable=SC2046
    redis-cli --cluster create $(for port in $CLUSTER_PORTS; do printf '127.0.0.1:%s ' "$port"; done) \
      --cluster-replicas 1 --cluster-yes >/dev/null
  fi
  for _ in $(seq 1 300); do
    redis-cli -p "$CLUSTER_PORT" cluster info 2>/dev/null | grep -q "cluster_state:ok" && break
    sleep 0.1
  done
  redis-cli -p "$CLUSTER_PORT" cluster info | grep -q "cluster_state:ok" || { log "the cluster did not come up; see $SERVICES_DIR/cluster-*/redis.log"; exit 1; }
  log "redis cluster on 127.0.0.1:$CLUSTER_PORT-$((CLUSTER_PORT + 5)) (3 primaries, 3 replicas, appendfsync $REDIS_APPENDFSYNC)"
}

cluster_url() {
  local url="" port
  for port in $CLUSTER_PORTS; do url="$url${url:+,}redis://127.0.0.1:$port"; done
  echo "$url"
}

print_env() {
  echo "export REDIS_URL=redis://127.0.0.1:$REDIS_PORT"
  echo "export DATABASE_URL=postgres://postgres@127.0.0.1:$PG_PORT/$PG_DATABASE"
}

case "${1:-start}" in
  start)
    install_missing
    start_redis
    start_postgres
    print_env
    ;;
  stop)
    if redis_up; then redis-cli -h 127.0.0.1 -p "$REDIS_PORT" shutdown >/dev/null 2>&1 || true; log "redis stopped"; fi
    dir=$(pg_dir)
    if [ -f "$dir/postmaster.pid" ]; then as_pg_owner "$PG_BIN/pg_ctl" -D "$dir" -m fast -w stop >/dev/null && log "postgres stopped"; fi
    ;;
  status)
    redis_up && log "redis: up on $REDIS_PORT" || log "redis: down"
    pg_up && log "postgres: up on $PG_PORT" || log "postgres: down"
    ;;
  env) print_env ;;
  cluster-start)
    install_missing
    start_cluster
    start_postgres
    echo "export REDIS_URL=$(cluster_url)"
    echo "export DATABASE_URL=postgres://postgres@127.0.0.1:$PG_PORT/$PG_DATABASE"
    ;;
  cluster-stop)
    for port in $CLUSTER_PORTS; do redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true; done
    log "redis cluster stopped (data kept in $SERVICES_DIR/cluster-*)"
    ;;
  *) echo "usage: $0 start|stop|status|env|cluster-start|cluster-stop" >&2; exit 2 ;;
esac
