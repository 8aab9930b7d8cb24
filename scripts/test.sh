#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what is missing, starts the local Redis
# and PostgreSQL (scripts/services.sh), validates docker-compose.yml, builds, runs every Swift
# test against the real servers, then checks the API against docs/openapi.yaml with a live
# gateway (scripts/api-test.sh: openapi-spec-validator and schemathesis, in .local/venv). The
# sources must follow .swift-format (checked before the build).
# Then a 20-second libFuzzer run, split between the request decoding and the consumer tokens
# (scripts/fuzz.sh). Extra arguments go to `swift test` (e.g. --filter GatewayTests);
# SKIP_API_TEST=1 skips the API check and FUZZ_SECONDS=0 the fuzzing.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

# The suite gets a Redis and a Postgres of its own (not the ones scripts/run.sh uses), emptied
# at the start of every run, so runs never see each other's data.
export REDIS_PORT=${TEST_REDIS_PORT:-6380} PG_PORT=${TEST_PG_PORT:-5433} SERVICES_DIR=$ROOT/.local/test-services
# A failed start must stop here (an `eval "$(...)"` would hide its status).
services_env=$(scripts/services.sh start) || { echo "services did not start" >&2; exit 1; }
eval "$services_env"
export REDIS_URL DATABASE_URL
redis-cli -p "$REDIS_PORT" FLUSHALL >/dev/null

if ! command -v docker-compose >/dev/null 2>&1; then
  echo "test: installing docker-compose (used only to validate docker-compose.yml)" >&2
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO="sudo -n"; fi
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose >/dev/null
fi
ADMIN_TOKEN=check WEBHOOK_SECRET=check ADMISSION_SECRET=check docker-compose -f docker-compose.yml config -q
# No default secrets: without them the compose file must refuse, naming what is missing.
if env -u ADMIN_TOKEN -u WEBHOOK_SECRET -u ADMISSION_SECRET docker-compose -f docker-compose.yml config -q 2>/tmp/compose-check.$$; then
  echo "test: docker-compose.yml starts without ADMIN_TOKEN/WEBHOOK_SECRET" >&2; exit 1
fi
grep -q "ADMIN_TOKEN\|WEBHOOK_SECRET" /tmp/compose-check.$$ || { cat /tmp/compose-check.$$ >&2; exit 1; }
rm -f /tmp/compose-check.$$
echo "test: docker-compose.yml is valid and requires its secrets" >&2

if ! command -v curl >/dev/null 2>&1 || ! python3 -m venv --help >/dev/null 2>&1; then
  echo "test: installing curl and python3-venv" >&2
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO="sudo -n"; fi
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends curl python3-venv >/dev/null
fi

# The waiting room's page is tested in a real headless browser (Debian's chromium, driven by
# scripts/browser.py over the DevTools protocol).
if ! command -v chromium >/dev/null 2>&1; then
  echo "test: installing chromium (the waiting room page's browser test)" >&2
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO="sudo -n"; fi
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi

# The tree follows .swift-format (`swift format -i -r Sources Tests Fuzz Plugins Package.swift`
# applies it); any difference fails here, before the build.
swift format lint --strict -r Sources Tests Fuzz Plugins Package.swift
echo "test: sources follow .swift-format" >&2

swift build --build-tests
swift test --skip-build "$@"
if [ "${SKIP_API_TEST:-0}" != 1 ]; then
  scripts/api-test.sh
fi
# A short fuzzing run (request decoding and consumer tokens, 10 s each), so a regression there
# fails CI (scripts/fuzz.sh runs longer on demand). FUZZ_SECONDS=0 skips it.
if [ "${FUZZ_SECONDS:-20}" != 0 ]; then
  scripts/fuzz.sh "${FUZZ_SECONDS:-20}"
fi
