#!/usr/bin/env bash
# docs/benchmarks.md's chunked gradient pass rows: `tessera bench ips` with a ViT-S/16 encoder at 224 px,
# N 256 patches (a 16 x 16 grid), I 32, batch 1, for M 25 / 50 / 100 / 200, ips.grad_chunk 0 and 16, fp32
# and bf16; one JSON per row in docs/bench-ips-vit/, then the table.
# Usage: scripts/bench-ips-vit.sh [out dir] [steps] [precisions]   (TESSERA overrides build/tessera; TIMED=0 marks rows
# measured while other work shared the cores: their peak bytes hold, their seconds are not reported; WARMUP sets
# the untimed steps, 1 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
tessera=${TESSERA:-build/tessera}
out=${1:-docs/bench-ips-vit}
steps=${2:-2}
precisions=${3:-fp32 bf16}
timed=${TIMED:-1}
mkdir -p "$out"
for precision in $precisions; do
  for chunk in 0 16; do
    for M in 25 50 100 200; do
      json="$out/$precision-c$chunk-m$M.json"
      [ -f "$json" ] && continue
      "$tessera" bench ips --encoder vit_small_patch16_224 --channels 3 --height 3584 --width 3584 --patch 224 \
        --batch 1 --M "$M" --I 32 --grad-chunk "$chunk" --precision "$precision" --loading lazy --threads 2 \
        --steps "$steps" --warmup "${WARMUP:-1}" --json "$json" > /dev/null
      if [ "$timed" = 0 ]; then
        python3 -c 'import json, sys; j = json.load(open(sys.argv[1])); j["timed"] = False; json.dump(j, open(sys.argv[1], "w"), indent=1)' "$json"
      fi
    done
  done
done
if [ "$out" = docs/bench-ips-vit ]; then
  python3 scripts/tables.py --print ips-vit   # the table docs/benchmarks.md holds (scripts/tables.py --write puts it there)
fi
