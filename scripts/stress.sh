#!/usr/bin/env bash
# Runs the test suite many times in a row from the built tests, optionally beside CPU hogs, and
# prints pass/fail counts: the proof that no test depends on the machine being fast or quiet.
#
#   scripts/stress.sh [-n RUNS] [--hogs N] [--filter REGEX] [--no-build]
#
#   -n RUNS         how many runs (default 20)
#   --hogs N        N busy processes beside the tests for the whole loop (default 0; use one per
#                   core, e.g. 2 here, for the bar the README quotes)
#   --filter REGEX  passed to `swift test --filter` (e.g. 'GatewayTests|ReconcilerTests')
#   --no-build      skip `swift build --build-tests` (use what .build holds)
#
# Each run gets the same services and the same empty test Redis as scripts/test.sh. Logs of
# failed runs stay in .local/stress/<timestamp>/ (ignored by git). Exit status 0 only if every
# run passed.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

RUNS=20 HOGS=0 FILTER= BUILD=1
while [ $# -gt 0 ]; do
  case "$1" in
    -n) RUNS=$2; shift 2 ;;
    --hogs) HOGS=$2; shift 2 ;;
    --filter) FILTER=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "stress: unknown argument $1" >&2; exit 2 ;;
  esac
done

export REDIS_PORT=${TEST_REDIS_PORT:-6380} PG_PORT=${TEST_PG_PORT:-5433} SERVICES_DIR=$ROOT/.local/test-services
# A failed start must stop here (an `eval "$(...)"` would hide its status).
services_env=$(scripts/services.sh start) || { echo "services did not start" >&2; exit 1; }
eval "$services_env"
export REDIS_URL DATABASE_URL CI=${CI:-true}

[ "$BUILD" = 1 ] && swift build --build-tests >&2

LOGS=$ROOT/.local/stress/$(date +%Y%m%d-%H%M%S)
mkdir -p "$LOGS"
HOG_PIDS=()
stop_hogs() { for pid in "${HOG_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap stop_hogs EXIT
trap 'exit 130' INT TERM  # the EXIT trap then stops the hogs
for _ in $(seq 1 "$HOGS"); do
  ( while :; do :; done ) &
  HOG_PIDS+=($!)
done

args=(--skip-build)
[ -n "$FILTER" ] && args+=(--filter "$FILTER")
passed=0 failed=0
started=$(date +%s)
for run in $(seq 1 "$RUNS"); do
  redis-cli -p "$REDIS_PORT" FLUSHALL >/dev/null
  run_started=$(date +%s)
  if swift test "${args[@]}" >"$LOGS/run-$run.log" 2>&1; then
    passed=$((passed + 1)); verdict=pass
    rm -f "$LOGS/run-$run.log"
  else
    failed=$((failed + 1)); verdict=FAIL
  fi
  echo "stress: run $run/$RUNS $verdict in $(( $(date +%s) - run_started )) s (passed $passed, failed $failed)" >&2
done
echo "stress: $RUNS runs, $passed passed, $failed failed, hogs $HOGS, filter '${FILTER:-all}', $(( $(date +%s) - started )) s; failed logs in $LOGS"
[ "$failed" = 0 ]
