#!/usr/bin/env bash
# npm test: dependencies, the machine's test requirements, then every test (unit and e2e, the
# slow ones included). Extra arguments go to vitest.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d node_modules ]; then
  npm ci
fi
bash scripts/setup-test-env.sh
exec npx vitest run "$@"
