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
python3 - "$out" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
rows = []
for precision in ("fp32", "bf16"):
    for chunk in (0, 16):
        for M in (25, 50, 100, 200):
            f = out / f"{precision}-c{chunk}-m{M}.json"
            if f.exists():
                rows.append((precision, chunk, M, json.loads(f.read_text())))
if rows:
    p = rows[0][3]["provenance"]
    print(f"measured {p['date']}, tessera {p['tessera']} ({p['commit']}), LibTorch {p['libtorch']}, {p['cpu']}, "
          f"{p['cores']} cores, ISA {p['isa']}, {p['threads']} threads")
print("| precision | grad chunk | M | step s: median (range) | selection s (median) | peak tensors |")
print("|---|---|---|---|---|---|")
for precision, chunk, M, j in rows:
    steps = j["step_seconds"]
    times = (f"{j['step_seconds_median']:.1f} ({min(steps):.1f}-{max(steps):.1f})" if j.get("timed", True)
             else "not timed (shared cores)")
    selection = f"{j['selection_seconds_median']:.1f}" if j.get("timed", True) else "-"
    print(f"| {precision} | {chunk} | {M} | {times} | {selection} | {j['peak_tensor_bytes'] / 2**30:.2f} GiB |")
PY
