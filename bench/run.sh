#!/usr/bin/env bash
# npm run bench: runs every bench/*.ts; exits non-zero when any of them misses a limit.
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
for bench in bench/*.ts; do
  [ -e "$bench" ] || continue
  echo "== $bench" >&2
  node --import tsx "$bench" "$@" || status=1
done
exit "$status"
