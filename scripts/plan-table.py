#!/usr/bin/env python3
"""docs/benchmarks.md's fine-tuning memory table from the probes of scripts/plan-table.sh.

Each probe is `tessera plan`'s peak tensor bytes of one IPS training step (two steps and an evaluation
pass are run; AdamW's state counts) at batch 1 with M = the chunk. A ViT's blocks are identical, so
peak(depth L) = peak(1) + (L - 1) * (peak(2) - peak(1)); the check compares that with a direct trial
at UNI's full depth. Larger M and batches keep every further winner's 224 px patch (fp32, 588 KiB) on
the device: those columns add (B * M - chunk) * 588 KiB, computed, not measured (at these probe sizes
the probe's own images hide it).
Usage: scripts/plan-table.py [probe dir]
"""
import json
import os
import sys

probes = sys.argv[1] if len(sys.argv) > 1 else "docs/plan"
DEPTH = {"uni": 24, "uni2-h": 24, "virchow2": 32}  # the registry's depths (tessera embed --list-encoders)
NAME = {"uni": "UNI (ViT-L/16)", "uni2-h": "UNI2-h (ViT-H/14, SwiGLU)", "virchow2": "Virchow2 (ViT-H/14, SwiGLU)"}


def peak(name):
    return json.load(open(f"{probes}/{name}.json"))["peak_tensor_bytes"]


def at_depth(model, precision, tuning, chunk, depth):
    p1, p2 = (peak(f"{model}-{precision}-{tuning}-c{chunk}-d{d}") for d in (1, 2))
    return p1 + (depth - 1) * (p2 - p1)


def per_winner(model, precision):
    return 3 * 224 * 224 * 4  # a winner's stored patch; its embedding (<= 6 KiB) is left out


def have(*names):
    return all(os.path.exists(f"{probes}/{n}.json") for n in names)


GiB = 2**30
missing = []
print("| encoder | precision | trained | grad chunk | measured: batch 1, M = chunk | M 100, batch 1 | M 100, batch 16 | M 500, batch 1 | M 500, batch 16 |")
print("|---|---|---|---|---|---|---|---|---|")
for model in DEPTH:
    for precision in ("fp32", "bf16"):
        for tuning in ("lora8", "full"):
            for chunk in (8, 32):
                needed = [f"{model}-{precision}-{tuning}-c{chunk}-d{d}" for d in (1, 2)]
                if not have(*needed):
                    missing.append(f"{model} {precision} {tuning} chunk {chunk}")
                    continue
                w = per_winner(model, precision)
                base = at_depth(model, precision, tuning, chunk, DEPTH[model])
                cells = [(base + (b * m - chunk) * w) / GiB for m in (100, 500) for b in (1, 16)]
                print(f"| {NAME[model]} | {precision} | {'LoRA r 8' if tuning == 'lora8' else 'all weights'} | {chunk} | "
                      f"{base / GiB:.1f} GiB | " + " | ".join(f"{c:.1f} GiB" for c in cells) + " |")
if missing:
    print("\nnot measured (probes missing): " + "; ".join(missing))
if not have("uni-bf16-lora8-c8-d24", "uni-bf16-lora8-c8-d1", "uni-bf16-lora8-c8-d2"):
    sys.exit(0)
direct = peak("uni-bf16-lora8-c8-d24")
formula = at_depth("uni", "bf16", "lora8", 8, 24)
print(f"\ncheck: UNI bf16 LoRA chunk 8 at depth 24, M 8: direct trial {direct / GiB:.3f} GiB, "
      f"from depths 1 and 2 {formula / GiB:.3f} GiB ({100 * (formula - direct) / direct:+.1f} %)")
