#!/usr/bin/env bash
# The main job end to end on built-in defaults (e2e/src/demo.ts): a local registry with the sample
# builder (the real CNB lifecycle, the sample Procfile buildpack, Debian build and run images), then
# `locald build` of examples/procfile-static into an OCI image in the store, and `locald container
# run` of it — no Docker daemon.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
node e2e/dist/src/demo.js
