#!/usr/bin/env bash
# The whole-slide benchmarks of docs/benchmarks.md: patch-reading throughput (OpenSlide vs libvips),
# peak memory of one lazy IPS step on slides of ~1k to ~262k patches, and IPS on feature bags at the
# paper's CAMELYON16 settings. Usage: scripts/bench-slides.sh [out_dir] [largest side, default 131072]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-build/bench-slides}
largest=${2:-131072}
tessera=build/tessera
mkdir -p "$out"
slides=()
for side in 8192 16384 32768 65536 131072; do
  [[ $side -le $largest ]] || continue
  dir="$out/side-$side"
  if [[ ! -f $dir/slide_000.tif ]]; then
    # Six overlapping tissue blobs with glass around them (Otsu needs some glass to separate).
    /usr/bin/time -f "generated $side x $side in %e s, peak RSS %M KiB" \
      $tessera make-slides --out "$dir" --count 1 --test-count 0 --width "$side" --height "$side" --digits 0 \
      --blobs 6 --tissue-size 0.45 --compression jpeg --quality 85 > /dev/null
  fi
  slides+=("$dir/slide_000.tif")
done
echo "## patch reading (256 x 256 at level 0, random positions)"
$tessera bench slide-read --slide "$out/side-16384/slide_000.tif" --patches 2000 --threads 1,2,4 --json "$out/read.json"
echo "## one IPS training step per slide (lazy, M 16, I 64, ResNet-18 stem of width 8), one process each"
for slide in "${slides[@]}"; do
  $tessera bench slide-ips --slides "$slide" --json "$out/slide-ips-$(basename "$(dirname "$slide")").json"
done
echo "## feature bags (2048-d, M = I = 5000, B 16 eager-sequential)"
[[ -f $out/feature-bags.json ]] && { echo "(done earlier: $out/feature-bags.json)"; exit 0; }
$tessera bench feature-bags --rows 1000,10000,50000,100000,250000 --batch 16 --dir "$out/bags" --json "$out/feature-bags.json"
