#!/usr/bin/env bash
# Runs the product on this machine: starts local Redis and PostgreSQL (installing them if
# needed), builds release binaries, migrates the database, then runs `reconciler run` in the
# background and the gateway in the foreground. Ctrl-C (or SIGTERM) stops both cleanly.
#
# ADMIN_TOKEN, WEBHOOK_SECRET and ADMISSION_SECRET default to the public development values (printed, and only
# those are printed); set your own for anything but local use. Every variable of README's
# configuration table is honoured. With REDIS_CLUSTER=1 it starts a local Redis Cluster (3
# primaries, 3 replicas: scripts/services.sh cluster-start) instead of the single Redis and runs
# the product on it.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

# A failed start must stop here (an `eval "$(...)"` would hide its status).
if [ "${REDIS_CLUSTER:-0}" = 1 ]; then
  services_env=$(scripts/services.sh cluster-start) || { echo "services did not start" >&2; exit 1; }
else
  services_env=$(scripts/services.sh start) || { echo "services did not start" >&2; exit 1; }
fi
eval "$services_env"
export REDIS_URL DATABASE_URL
# Only a value this script filled in (a public development one) is ever printed.
DEFAULTED=
[ -z "${ADMIN_TOKEN:-}" ] && DEFAULTED="$DEFAULTED ADMIN_TOKEN=dev-admin-token"
[ -z "${WEBHOOK_SECRET:-}" ] && DEFAULTED="$DEFAULTED WEBHOOK_SECRET=dev-webhook-secret"
[ -z "${ADMISSION_SECRET:-}" ] && DEFAULTED="$DEFAULTED ADMISSION_SECRET=dev-admission-secret"
SECRETS="your own ADMIN_TOKEN, WEBHOOK_SECRET and ADMISSION_SECRET"
[ -n "$DEFAULTED" ] && SECRETS="PUBLIC DEVELOPMENT SECRETS:$DEFAULTED; set your own for anything but local use"
export ADMIN_TOKEN=${ADMIN_TOKEN:-dev-admin-token}
export WEBHOOK_SECRET=${WEBHOOK_SECRET:-dev-webhook-secret}
export ADMISSION_SECRET=${ADMISSION_SECRET:-dev-admission-secret}
# Consumers: signed tokens when a consumer key is set (CONSUMER_TOKEN_KEYS / CONSUMER_TOKEN_JWKS),
# else a trusted front end naming them in the body (the local default, said when the gateway starts).
if [ -z "${CONSUMER_TOKEN_KEYS:-}${CONSUMER_TOKEN_JWKS:-}" ]; then export CONSUMER_AUTH=${CONSUMER_AUTH:-trusted}; fi
echo "run: consumer identity: ${CONSUMER_AUTH:-token} (CONSUMER_AUTH; token mode needs CONSUMER_TOKEN_KEYS or CONSUMER_TOKEN_JWKS)" >&2
export GATEWAY_HOST=${GATEWAY_HOST:-127.0.0.1}
export GATEWAY_PORT=${GATEWAY_PORT:-8080}
# With appendfsync always every Redis batch costs an fsync: let batches wait a little to grow.
if [ "${REDIS_APPENDFSYNC:-}" = always ]; then export REDIS_BATCH_DELAY_US=${REDIS_BATCH_DELAY_US:-300}; fi

swift build -c release --product gateway >&2
swift build -c release --product reconciler >&2
BIN=$(swift build -c release --show-bin-path)

"$BIN/reconciler" migrate
"$BIN/reconciler" run &
RECONCILER=$!
GATEWAY=
stop() {
  [ -n "$GATEWAY" ] && kill -TERM "$GATEWAY" 2>/dev/null || true
  kill -TERM "$RECONCILER" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap stop EXIT INT TERM

echo "run: gateway on http://$GATEWAY_HOST:$GATEWAY_PORT ($SECRETS)" >&2
"$BIN/gateway" &
GATEWAY=$!
wait "$GATEWAY"
