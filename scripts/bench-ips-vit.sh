#!/usr/bin/env bash
# docs/benchmarks.md's chunked gradient pass rows: `tessera bench ips` with a ViT-S/16 encoder at 224 px,
# N 256 patches (a 16 x 16 grid), I 32, batch 1, for M 25 / 50 / 100 / 200, ips.grad_chunk 0 and 16, fp32
# and bf16; one JSON per row in docs/bench-ips-vit/, then the table.
# Usage: scripts/bench-ips-vit.sh [out dir] [steps]   (TESSERA overrides build/tessera)
set -euo pipefail
cd "$(dirname "$0")/.."
tessera=${TESSERA:-build/tessera}
out=${1:-docs/bench-ips-vit}
steps=${2:-2}
mkdir -p "$out"
for precision in fp32 bf16; do
  for chunk in 0 16; do
    for M in 25 50 100 200; do
      json="$out/$precision-c$chunk-m$M.json"
      [ -f "$json" ] && continue
      "$tessera" bench ips --encoder vit_small_patch16_224 --channels 3 --height 3584 --width 3584 --patch 224 \
        --batch 1 --M "$M" --I 32 --grad-chunk "$chunk" --precision "$precision" --loading lazy --threads 2 \
        --steps "$steps" --warmup 1 --json "$json" > /dev/null
    done
  done
done
python3 - "$out" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
print("| precision | grad chunk | M | step s (median) | selection s | peak tensors |")
print("|---|---|---|---|---|---|")
for precision in ("fp32", "bf16"):
    for chunk in (0, 16):
        for M in (25, 50, 100, 200):
            f = out / f"{precision}-c{chunk}-m{M}.json"
            if not f.exists():
                continue
            j = json.loads(f.read_text())
            print(f"| {precision} | {chunk} | {M} | {j['step_seconds_median']:.1f} | {j['selection_seconds_median']:.1f} | "
                  f"{j['peak_tensor_bytes'] / 2**20:.0f} MiB |")
PY
