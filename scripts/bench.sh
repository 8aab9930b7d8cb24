#!/usr/bin/env bash
# The project's benchmark: builds release binaries, starts a Redis and a Postgres of its own
# (ports 6390 and 5442, data in .local/bench), and runs bench/run.py, which measures, alternating
# in the same run, the baseline SwiftNIO server, the gateway's reserve and sold-out paths, a
# 10,000-unit flash sale, Redis's own limit with redis-benchmark, and the reconciler's drain.
# It prints one table and writes bench-results/latest.json. Takes about 5 minutes once built.
# `scripts/bench.sh --cluster-wait` runs only the cluster rows with REDIS_WAIT_REPLICAS 0 and 1 side by side
# (BENCH_CLUSTER_PORT, default 7100, moves the cluster; BENCH_REDIS_PORT / BENCH_PG_PORT the others).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export REDIS_PORT=${BENCH_REDIS_PORT:-6390} PG_PORT=${BENCH_PG_PORT:-5442} SERVICES_DIR=$ROOT/.local/bench
# A failed start must stop here (an `eval "$(...)"` would hide its status).
services_env=$(scripts/services.sh start) || { echo "services did not start" >&2; exit 1; }
eval "$services_env"
export REDIS_URL DATABASE_URL
command -v wrk >/dev/null 2>&1 || { if [ "$(id -u)" = 0 ]; then apt-get install -y -qq wrk >/dev/null; else sudo -n apt-get install -y -qq wrk >/dev/null; fi; }
swift build -c release >&2
export BIN=$(swift build -c release --show-bin-path)
python3 bench/run.py "$@"
