#!/usr/bin/env bash
# The whole test suite: set-up, format + lint, type-check/build, then unit and end-to-end tests
# against real parts (registry, runc, the CNB lifecycle, skopeo, umoci), including runs as an
# unprivileged user — all of it on each Node.js line of scripts/node-lines.txt (24, the active LTS,
# first; then 22), and a smoke run on the machine's own Node.js, the oldest line `engines` allows.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --node-lines
echo "== lint and format"
npx biome ci .

lines=()
while read -r version _; do
  case $version in '#'* | '') continue ;; esac
  lines+=("$version")
done < scripts/node-lines.txt

for version in "${lines[@]}"; do
  (
    export PATH="$PWD/.tools/node/$version/bin:$PATH"
    echo "== Node.js $(node --version): unit tests"
    node --test --test-concurrency=2 packages/*/dist/test/*.test.js
    echo "== Node.js $(node --version): end-to-end tests"
    node --test --test-concurrency=1 e2e/dist/test/*.test.js
  )
done

echo "== Node.js $(node --version) (the machine's): unit tests, and the smoke and symlink end-to-end tests"
node --test --test-concurrency=2 packages/*/dist/test/*.test.js
node --test --test-concurrency=1 e2e/dist/test/smoke.test.js e2e/dist/test/symlink-sentinels.test.js
