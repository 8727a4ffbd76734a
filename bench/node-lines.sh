#!/usr/bin/env bash
# The pull and unpack benchmarks with locald on the machine's Node.js and on each pinned line of
# scripts/node-lines.txt, one after the other in one run; each benchmark also times its reference
# tool (skopeo, umoci, tar), so the figures of two lines compare through the same yardstick.
# Extra arguments go to both benchmarks (e.g. --runs 5). The JSON lines go to bench/node-lines.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --node-lines >/dev/null
nodes=("$(command -v node)")
while read -r version _; do
  case $version in '#'* | '') continue ;; esac
  nodes+=("$PWD/.tools/node/$version/bin/node")
done < scripts/node-lines.txt
out=bench/node-lines.jsonl
: > "$out"
for bench in pull unpack; do
  for node in "${nodes[@]}"; do
    echo "== $bench, locald on Node.js $("$node" --version)" >&2
    node "bench/dist/$bench.js" --node "$node" "$@" | tee /dev/stderr | tail -n 1 >> "$out"
  done
done
