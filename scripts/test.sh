#!/usr/bin/env bash
# The whole test suite: set-up, format + lint, type-check/build, then unit and end-to-end tests
# against real parts (registry, runc, the CNB lifecycle, skopeo, umoci), including runs as an
# unprivileged user — all of it on the first Node.js line of scripts/node-lines.txt (24, the active
# LTS), the unit tests and the root half of the end-to-end tests on the next (22), and a smoke run
# on the machine's own Node.js, the oldest line `engines` allows.
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

# What the end-to-end files share (fixtures, the test user) is made once, first: the files then
# run two at a time, each with its own registries, ports and temporary directories.
echo "== end-to-end fixtures"
node e2e/dist/src/prepare.js

# The first line runs every end-to-end test as root and as an unprivileged user; later lines run
# the root half of that caller matrix (see TEST_CALLERS in e2e/src/util.ts): what the caller
# changes is the kernel's part, which does not move between Node.js lines.
callers=all
for version in "${lines[@]}"; do
  (
    export PATH="$PWD/.tools/node/$version/bin:$PATH"
    echo "== Node.js $(node --version): unit tests"
    node --test --test-concurrency=2 packages/*/dist/test/*.test.js
    echo "== Node.js $(node --version): end-to-end tests (callers: $callers)"
    LOCALD_E2E_CALLERS=$callers node --test --test-concurrency=2 e2e/dist/test/*.test.js
  )
  callers=root
done

echo "== Node.js $(node --version) (the machine's): unit tests, and the smoke and symlink end-to-end tests"
node --test --test-concurrency=2 packages/*/dist/test/*.test.js
node --test --test-concurrency=1 e2e/dist/test/smoke.test.js e2e/dist/test/symlink-sentinels.test.js
