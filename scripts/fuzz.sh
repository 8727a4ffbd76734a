#!/usr/bin/env bash
# The property-based fuzz tests (packages/*/test/*.fuzz.test.ts) with a long budget and a random
# seed. The unit run (scripts/test.sh) runs the same properties with a small fixed budget and a
# fixed seed, so that it stays quick and deterministic.
#
#   bash scripts/fuzz.sh [RUNS]     RUNS per property, default 100000 (LOCALD_FUZZ_RUNS)
#
# The unpack property runs a hundredth of RUNS: each of its runs is a whole unpack on threads.
# A failure prints the seed, the path to the shrunk case and the counterexample; replay it with
# LOCALD_FUZZ_SEED=<seed> LOCALD_FUZZ_RUNS=<runs> bash scripts/fuzz.sh, then keep the
# counterexample as a plain regression test next to the unit tests of the module that failed.
set -euo pipefail
cd "$(dirname "$0")/.."
export LOCALD_FUZZ_RUNS="${1:-${LOCALD_FUZZ_RUNS:-100000}}"
export LOCALD_FUZZ_SEED="${LOCALD_FUZZ_SEED:-$((RANDOM * 32768 + RANDOM))}"
echo "== fuzz: $LOCALD_FUZZ_RUNS runs per property, seed $LOCALD_FUZZ_SEED"
node_modules/.bin/tsc -b
node --test --test-concurrency=2 packages/*/dist/test/*.fuzz.test.js
