#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what is missing, starts the local Redis
# and PostgreSQL (scripts/services.sh), validates docker-compose.yml, builds, and runs every test
# against the real servers. Extra arguments go to `swift test` (e.g. --filter GatewayTests).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

eval "$(scripts/services.sh start)"
export REDIS_URL DATABASE_URL

if ! command -v docker-compose >/dev/null 2>&1; then
  echo "test: installing docker-compose (used only to validate docker-compose.yml)" >&2
  if [ "$(id -u)" = 0 ]; then apt-get install -y -qq --no-install-recommends docker-compose >/dev/null
  else sudo -n apt-get install -y -qq --no-install-recommends docker-compose >/dev/null; fi
fi
docker-compose -f docker-compose.yml config -q
echo "test: docker-compose.yml is valid" >&2

swift build --build-tests
swift test --skip-build "$@"
