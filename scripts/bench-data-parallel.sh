#!/usr/bin/env bash
# docs/benchmarks.md "Data parallel": the demo's setting (configs/demo.yaml) for 2 epochs as one process with
# 2 threads and as two single-threaded ranks (tessera launch, Gloo), on an otherwise idle 2-core machine.
# Each run's folder gets command.json (the command, its wall time, `tessera bench provenance`); then
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
  /usr/bin/python3 - "$dir/command.json" "$start" "$end" "$("$tessera" bench provenance)" "$@" <<'PY'
import json, sys
path, start, end, provenance, *command = sys.argv[1:]
provenance = json.loads(provenance)
provenance.pop("threads")  # this probe's, not the run's (train.threads, in its config.yaml)
json.dump({"command": " ".join(command), "seconds": float(end) - float(start), "provenance": provenance},
          open(path, "w"), indent=2)
PY
}
common=(-c configs/demo.yaml --train.epochs 2 --train.eval_every 2)
timed "$out/1p" "$tessera" train "${common[@]}" --run.dir "$out/1p" --train.threads 2
timed "$out/2p" "$tessera" launch --nproc-per-node 2 -- train "${common[@]}" --run.dir "$out/2p" --train.threads 1
