#!/usr/bin/env bash
# The main job end to end on built-in defaults. Until the build issue lands, this exercises the
# image path: start a local registry, build a sample image with our image factory, push it with
# locald, pull it back into the store, and inspect it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
node e2e/dist/src/demo.js
