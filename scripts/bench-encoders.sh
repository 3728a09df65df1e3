#!/usr/bin/env bash
# The encoder rows of docs/benchmarks.md: tessera's ViT-B/16 and ViT-L/16 (UNI's shape) at batch 16,
# 224 px, fp32 and bf16, 2 threads, against timm's in Python on the same LibTorch (Debian's python3-torch)
# when a timm source checkout is given.
#   bash scripts/bench-encoders.sh [TIMM_CHECKOUT] [OUT_DIR=docs]
# Each row: median and range of 3 timed passes (ViT-B after one warm-up pass; ViT-L without, for time).
set -euo pipefail
cd "$(dirname "$0")/.."
TIMM=${1:-}
OUT=${2:-docs}
TESSERA=${TESSERA:-build/tessera}
for arch in vit_base_patch16_224 vit_large_patch16_224; do
  warmup=1
  [[ $arch == vit_large_patch16_224 ]] && warmup=0
  for precision in fp32 bf16; do
    "$TESSERA" bench encoder --encoder "$arch" --batch 16 --precision "$precision" --threads 2 --steps 3 \
      --warmup "$warmup" --json "$OUT/bench-encoder-$arch-$precision.json" 2>/dev/null
    if [[ -n $TIMM ]]; then
      PYTHONPATH="$TIMM" /usr/bin/python3 scripts/bench-timm-vit.py --arch "$arch" --batch 16 --precision "$precision" \
        --threads 2 --steps 3 --warmup "$warmup" --json "$OUT/bench-timm-$arch-$precision.json"
    fi
  done
done
