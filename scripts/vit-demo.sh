#!/usr/bin/env bash
# `make vit-demo`: a small ViT (configs/vit-demo.yaml) trained end to end with IPS on the generated slides
# of `make slides-demo`, under a memory budget the unchunked gradient pass exceeds: first the run with
# ips.grad_chunk 0 is refused with the error naming the knob, then it trains with chunks. Beside it the
# frozen-encoder route with the same encoder (extract-features, then IPS on the bags, same budget).
# Prints one row per route and writes runs/vit-demo/report.html with both runs.
# Usage: scripts/vit-demo.sh (TESSERA, SLIDES and VIT_DEMO_DIR override the paths).
set -euo pipefail
cd "$(dirname "$0")/.."
tessera=${TESSERA:-build/tessera}
slides=${SLIDES:-data/slides}
out=${VIT_DEMO_DIR:-runs/vit-demo}
encoder_args=$(sed -n "s/^  encoder_args: '\(.*\)'$/\1/p" configs/vit-demo.yaml)
mkdir -p "$out"
start=$(date +%s)
[ -f "$slides/cache-l2/summary.json" ] ||
  "$tessera" preprocess --manifest "$slides/manifest.csv" --out "$slides/cache-l2" --patch 64 --level 2

echo "== the unchunked gradient pass under the budget (expected to be refused)"
if "$tessera" train -c configs/vit-demo.yaml --ips.grad_chunk 0 --run.dir "$out/unchunked" 2> "$out/unchunked.err"; then
  echo "error: the unchunked run fitted the budget; the demo's budget is meant to refuse it" >&2
  exit 1
fi
grep -o "error: .*" "$out/unchunked.err" | head -1
grep -q -- "--ips.grad_chunk" "$out/unchunked.err"

echo "== end to end, gradient pass in chunks"
"$tessera" train -c configs/vit-demo.yaml --run.dir "$out/end-to-end"

echo "== frozen encoder: features, then IPS on the bags"
"$tessera" extract-features --manifest "$slides/manifest.csv" --cache-dir "$slides/cache-l2" --out "$out/features" \
  --patch 64 --level 2 --encoder vit_small_patch16_224 --encoder-args "$encoder_args" \
  --mean 0.85,0.62,0.78 --std 0.12,0.18,0.12
"$tessera" train -c configs/vit-demo-frozen.yaml --slide.features_dir "$out/features" --run.dir "$out/frozen"

"$tessera" report --run "$out/end-to-end" --run "$out/frozen" --out "$out/report.html"
python3 - "$out" "$(( $(date +%s) - start ))" <<'PY'
import json, sys
out, seconds = sys.argv[1], int(sys.argv[2])
print("| route | encoder | trained | budget | peak tensors | training s | test AUC | test accuracy |")
print("|---|---|---|---|---|---|---|---|")
auc = {}
for route, trained in (("end-to-end", "encoder + aggregator (chunks of 16)"), ("frozen", "aggregator on frozen features")):
    rows = [json.loads(l) for l in open(f"{out}/{route}/metrics.jsonl")]
    last = [r for r in rows if "test" in r][-1]
    auc[route] = last["test"]["label"]["auc"]
    peak = max(r["peak_tensor_bytes"] for r in rows) / 2**20
    print(f"| {route} | ViT 4x192, 16 px tokens, 64 px input | {trained} | 75MiB | {peak:.1f} MiB | "
          f"{rows[-1]['train_seconds']:.0f} | {auc[route]:.3f} | {last['test']['label']['accuracy']:.3f} |")
print(f"target (end-to-end test AUC >= 0.95 on 16 held-out slides): {'met' if auc['end-to-end'] >= 0.95 else 'NOT met'}"
      f" ({auc['end-to-end']:.3f}); whole demo {seconds} s")
PY
echo "report: $out/report.html"
