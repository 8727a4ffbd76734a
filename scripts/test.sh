#!/usr/bin/env bash
# The whole test suite: set-up, format + lint, type-check/build, unit tests, end-to-end tests
# against real parts (registry, skopeo, umoci), including runs as an unprivileged user.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "== lint and format"
npx biome ci .
echo "== unit tests"
node --test --test-concurrency=2 packages/*/dist/test/
echo "== end-to-end tests"
node --test --test-concurrency=1 e2e/dist/test/
