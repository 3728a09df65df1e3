#!/usr/bin/env bash
# docs/benchmarks.md "Feature extraction with a ViT on slides": extract-features with a ViT-S/16-shaped encoder
# (random weights) on 8 generated slides as `make slides-demo` makes them, beside reading alone and the encoder
# alone, on an otherwise idle machine. Writes one JSON each (with provenance) into OUT (default
# docs/extract-vit); then `python3 scripts/tables.py --write`.
#   bash scripts/bench-extract-vit.sh [OUT] [THREADS=2]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-docs/extract-vit}
threads=${2:-2}
tessera=${TESSERA:-build/tessera}
work=${WORK:-build/bench-extract-vit}
encoder=vit_small_patch16_224
mkdir -p "$out" "$work"
[[ -f data/mnist/t10k-labels-idx1-ubyte ]] || bash scripts/get-mnist.sh data/mnist
if [[ ! -f $work/slides/manifest.csv ]]; then
  "$tessera" make-slides --out "$work/slides" --count 6 --test-count 2 --width 4096 --height 4096 --digits 3 \
    --digit-scale 5 --tissue-size 0.45 --compression jpeg > /dev/null
fi
echo "## reading alone: 2,000 random 224-px patches, libvips"
"$tessera" bench slide-read --slide "$work/slides/slide_001.tif" --patch 224 --patches 2000 --threads "$threads" \
  --backends vips --json "$out/slide-read.json"
echo "## the encoder alone: forward passes of 32 patches"
"$tessera" bench encoder --encoder "$encoder" --batch 32 --precision fp32 --threads "$threads" --steps 3 --warmup 1 \
  --json "$out/encoder.json"
for precision in fp32 bf16; do
  echo "## extract-features, $precision"
  rm -rf "$work/bags-$precision"
  "$tessera" extract-features --manifest "$work/slides/manifest.csv" --cache-dir "$work/cache" --out "$work/bags-$precision" \
    --encoder "$encoder" --batch 32 --threads "$threads" --precision "$precision" --json "$out/extract-$precision.json"
done
