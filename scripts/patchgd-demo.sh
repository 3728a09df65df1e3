#!/usr/bin/env bash
# `make patchgd-demo`: PatchGD at full resolution against GD under one enforced memory budget and one
# training-time budget (configs/patchgd-demo.yaml; both plan batch, PatchGD's q and GD's image side
# with --train.auto_batch), then a two-row table, whether PatchGD met the demo's requirement
# (>= GD + 20 points) and target (>= 80 %), and runs/patchgd-demo/report.html.
# First a shared backbone: GD on 64x64 canvases (the patch size: digits at full resolution) under the
# same budget for 60 s; both methods start from it and its time counts in both time limits.
# Usage: scripts/patchgd-demo.sh [budget [seconds per method]] (default 30MiB 300).
set -euo pipefail
cd "$(dirname "$0")/.."
tessera=${TESSERA:-build/tessera}
out=${PATCHGD_DEMO_DIR:-runs/patchgd-demo}
budget=${1:-30MiB}
seconds=${2:-300}
pretrain_seconds=60
"$tessera" train -c configs/pretrain-digits.yaml --run.dir "$out/pretrain" --data.digit_size 14 \
  --train.memory_budget "$budget" --train.auto_batch true --train.time_limit "$pretrain_seconds"
for method in gd patchgd; do
  "$tessera" train -c configs/patchgd-demo.yaml --train.method "$method" --run.dir "$out/$method" \
    --model.init_from "$out/pretrain/checkpoint.pt" --train.memory_budget "$budget" --train.time_limit "$seconds"
done
"$tessera" report --run "$out/gd" --run "$out/patchgd" --pictures 2 --out "$out/report.html"
python3 scripts/tables.py --print patchgd-demo --from "$out"   # docs/results.md's table (--keep puts the runs there)
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
acc = {m: json.loads(open(f"{out}/{m}/metrics.jsonl").readlines()[-1])["test"]["digit"]["accuracy"] for m in ("gd", "patchgd")}
gap = 100 * (acc["patchgd"] - acc["gd"])
print(f"requirement (PatchGD at least 20 points above GD): {'met' if gap >= 20 else 'NOT met'} ({gap:+.1f} points)")
print(f"target (PatchGD at least 80 %): {'met' if acc['patchgd'] >= 0.8 else 'NOT met'} ({100 * acc['patchgd']:.1f} %)")
PY
echo "report: $out/report.html"
