#!/usr/bin/env bash
# How the audit's cost depends on history: one million confirmed reservations from long ago
# (100 baskets of 10,000 sold units, consistent in Redis and Postgres), then `reconciler audit`
# timed (median of 3), beside the SQL the audit ran before migration 003 (summing every
# reservation, and reading every confirmed one), timed on the same data.
#   bench/audit-history.sh            uses the benchmark's services (ports 6390/5442)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export REDIS_PORT=${BENCH_REDIS_PORT:-6390} PG_PORT=${BENCH_PG_PORT:-5442} SERVICES_DIR=$ROOT/.local/bench
# A failed start must stop here (an `eval "$(...)"` would hide its status).
services_env=$(scripts/services.sh start) || { echo "services did not start" >&2; exit 1; }
eval "$services_env"
swift build -c release --product reconciler >&2
BIN=$(swift build -c release --show-bin-path)
DB=audit_history
BASE=${DATABASE_URL%/*}
psql "$BASE/postgres" -qc "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" >/dev/null
export DATABASE_URL=$BASE/$DB
redis-cli -p "$REDIS_PORT" FLUSHALL >/dev/null
"$BIN/reconciler" migrate >/dev/null

echo "loading 1,000,000 confirmed reservations (100 baskets x 10,000)" >&2
psql "$DATABASE_URL" -q <<'SQL'
INSERT INTO baskets (id, stock, capacity, redis_seq)
SELECT 'hist-' || b, 0, 10000, 1 FROM generate_series(1, 100) AS b;
INSERT INTO reservations (id, basket_id, consumer_id, quantity, status, expires_at, payment_id, created_at, updated_at)
SELECT 'h' || b || '-' || r, 'hist-' || b, 'c' || r, 1, 'confirmed', now() - interval '2 days', 'p', now() - interval '2 days',
       now() - interval '2 days'
FROM generate_series(1, 100) AS b, generate_series(1, 10000) AS r;
ANALYZE;
SQL
# Keys from the project's own Keyspace (bench-scripts), the counters as a sold-out basket holds them.
swift build -c release --product bench-scripts >&2
"$BIN/bench-scripts" keys $(for b in $(seq 1 100); do printf 'hist-%s ' "$b"; done) | python3 -c '
import json, sys
for shape in json.load(sys.stdin):
    print("HSET %s stock 0 pending 0 confirmed 10000 capacity 10000 hold 600 max 1 seq 1" % shape["basketKey"])
    print("SADD %s %s" % (shape["basketIndexKey"], shape["basket"]))
' | redis-cli -p "$REDIS_PORT" >/dev/null

times=()
for _ in 1 2 3; do
  start=$(date +%s.%N)
  "$BIN/reconciler" audit >/dev/null
  end=$(date +%s.%N)
  times+=("$(echo "$end - $start" | bc)")
done
median=$(printf '%s\n' "${times[@]}" | sort -n | sed -n 2p)
old_sql=$(psql "$DATABASE_URL" -qAt <<'SQL' | grep -o 'Time: [0-9.]*' | awk '{s += $2} END {printf "%.0f", s}'
\timing on
SELECT count(*) FROM (SELECT b.id, COALESCE(SUM(r.quantity) FILTER (WHERE r.status = 'pending'), 0),
  COALESCE(SUM(r.quantity) FILTER (WHERE r.status = 'confirmed'), 0)
  FROM baskets b LEFT JOIN reservations r ON r.basket_id = b.id GROUP BY b.id) t;
SELECT count(*) FROM (SELECT id, basket_id, status FROM reservations WHERE status IN ('pending', 'confirmed') ORDER BY basket_id) t;
SQL
)
echo "reconciler audit with 1,000,000 historical confirmed reservations: median ${median} s (runs: ${times[*]})"
echo "the SQL alone of the audit before migration 003 on the same data: ${old_sql} ms (and it then read 1,000,000 reservations back from Redis)"
