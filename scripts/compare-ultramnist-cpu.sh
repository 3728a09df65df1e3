#!/usr/bin/env bash
# Reruns the PatchGD comparison at CPU scale (docs/results.md): GD, GD-extended and PatchGD on
# configs/ultramnist-cpu.yaml at two memory budgets, each with the largest batch (<= 32) that fits,
# then prints one table. Every method starts from one backbone trained first with GD on 64x64 digit
# canvases (configs/pretrain-digits.yaml, 60 s; docs/results.md: from scratch PatchGD stays near
# chance at this length). Usage: scripts/compare-ultramnist-cpu.sh [budgets...] (default 96MiB 64MiB).
set -euo pipefail
cd "$(dirname "$0")/.."
budgets=("${@:-96MiB 64MiB}")
[ $# -eq 0 ] && budgets=(96MiB 64MiB)
tessera=${TESSERA:-build/tessera}
pretrain=runs/ultramnist-cpu/pretrain
[ -f "$pretrain/checkpoint.pt" ] || "$tessera" train -c configs/pretrain-digits.yaml --run.dir "$pretrain"
for budget in "${budgets[@]}"; do
  for method in gd gd_extended patchgd; do
    run="runs/ultramnist-cpu/${method}-${budget}"
    [ -f "$run/done" ] && continue
    # A method whose smallest batch does not fit the budget is a result too: recorded, not fatal.
    if ! "$tessera" train -c configs/ultramnist-cpu.yaml --run.dir "$run" --train.method "$method" \
      --train.memory_budget "$budget" --train.auto_batch true --model.init_from "$pretrain/checkpoint.pt" 2> >(tee "$run.err" >&2); then
      mkdir -p "$run" && tail -1 "$run.err" > "$run/failed"
    fi
    touch "$run/done"
  done
done
echo "| budget | method | batch | q | test accuracy | peak tensors | minutes |"
echo "|---|---|---|---|---|---|---|"
for budget in "${budgets[@]}"; do
  for method in gd gd_extended patchgd; do
    run="runs/ultramnist-cpu/${method}-${budget}"
    python3 - "$run" "$budget" "$method" <<'PY'
import json, os, sys
run, budget, method = sys.argv[1:]
if os.path.exists(f"{run}/failed"):
    print(f"| {budget} | {method} | - | - | does not fit | - | - |")
    sys.exit()
plan = json.load(open(f"{run}/plan.json"))
rows = [json.loads(l) for l in open(f"{run}/metrics.jsonl")]
last = rows[-1]
minutes = sum(r["seconds"] for r in rows) / 60
peak = max(r["peak_tensor_bytes"] for r in rows) / 2**20
q = plan.get("q", "-")
print(f"| {budget} | {method} | {plan['batch_size']} | {q} | {last['test']['sum']['accuracy']:.3f} | {peak:.1f} MiB | {minutes:.1f} |")
PY
  done
done
