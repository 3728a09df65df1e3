#!/usr/bin/env bash
# docs/benchmarks.md "Data parallel": the demo's setting (configs/demo.yaml) for 2 epochs as one process with
# 2 threads and as two single-threaded ranks (tessera launch, Gloo), on an otherwise idle 2-core machine.
# Each run's folder gets command.json (the command, its wall time, the tessera build); then
#   python3 scripts/tables.py --keep data-parallel OUT && python3 scripts/tables.py --write
#   bash scripts/bench-data-parallel.sh [OUT=runs/data-parallel]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/data-parallel}
tessera=${TESSERA:-build/tessera}
[[ -f data/mnist/t10k-labels-idx1-ubyte ]] || bash scripts/get-mnist.sh data/mnist
timed() {  # timed RUN_DIR COMMAND...: runs it, then writes RUN_DIR/command.json
  local dir=$1
  shift
  rm -rf "$dir"
  local start end
  start=$(date +%s.%N)
  "$@"
  end=$(date +%s.%N)
  /usr/bin/python3 - "$dir/command.json" "$start" "$end" "$("$tessera" --version)" "$@" <<'PY'
import datetime, json, os, sys
path, start, end, version, *command = sys.argv[1:]
cpu = open("/proc/cpuinfo").read().splitlines()
model = next((l.split(":", 1)[1].strip() for l in cpu if l.startswith("model name")), "unknown")
flags = next((l.split(":", 1)[1].split() for l in cpu if l.startswith("flags")), [])
isa = [f for f in ("fma", "avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "amx_int8") if f in flags]
json.dump({"command": " ".join(command), "seconds": float(end) - float(start), "tessera": version,
           "provenance": {"date": datetime.date.today().isoformat(), "cpu": model, "cores": os.cpu_count(), "isa": " ".join(isa)}},
          open(path, "w"), indent=2)
PY
}
common=(-c configs/demo.yaml --train.epochs 2 --train.eval_every 2)
timed "$out/1p" "$tessera" train "${common[@]}" --run.dir "$out/1p" --train.threads 2
timed "$out/2p" "$tessera" launch --nproc-per-node 2 -- train "${common[@]}" --run.dir "$out/2p" --train.threads 1
