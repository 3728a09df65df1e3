#!/usr/bin/env bash
# Probes for docs/benchmarks.md's fine-tuning memory table: `tessera plan` (one trial step, no budget)
# of IPS fine-tuning UNI, UNI2-h and Virchow2 at 224 px, batch 1, I 32, for fp32 / bf16, LoRA r 8 /
# full fine-tuning and ips.grad_chunk 8 / 32, each at encoder depth 1 and 2 with M = the chunk, and
# per encoder and precision one at M 100 (the bytes of a further winner). Each probe's JSON
# goes to docs/plan/. `python3 scripts/tables.py --print plan` turns them into the table (every block of a ViT holds the
# same bytes, so the full depth follows linearly; the script checks that against a direct trial at
# UNI's full depth).
# Usage: scripts/plan-table.sh [out dir]   (TESSERA overrides build/tessera)
set -euo pipefail
cd "$(dirname "$0")/.."
tessera=${TESSERA:-build/tessera}
out=${1:-docs/plan}
mkdir -p "$out"
probe() {  # name, then overrides
  local name=$1; shift
  [ -f "$out/$name.json" ] && return
  echo "probe $name"
  "$tessera" plan --config configs/plan/probe.yaml --train.memory_budget "" --json "$out/$name.json" "$@" > /dev/null
}
side() { [ "$1" = 8 ] && echo 672 || echo 1344; }  # N = 9 or 36 patches: M = chunk, and a scan after it
# The check: UNI at its full depth, measured directly.
probe "uni-bf16-lora8-c8-d24" --model.encoder uni --train.precision bf16 --model.lora_rank 8 --ips.M 8 --ips.grad_chunk 8 \
  --data.height 672 --data.width 672
# The bytes of one more winner (its stored patch, its embedding, the aggregator's activations), per encoder
# and precision: M 100 against M 8 at depth 1, chunk 8, LoRA, with patches cut from the image on request
# (ips.loading lazy, as slides are streamed) and the same scan (N 100 at a 48 px grid step) for both, so
# that only M differs. The check: UNI bf16 at M 500 and chunk 32 (N 576 for both) against the formula.
lazy() {  # name, chunk, M, side, then overrides
  local name=$1 chunk=$2 M=$3 side=$4; shift 4
  probe "$name" --model.encoder_args '{"depth": 1}' --model.lora_rank 8 --ips.loading lazy --ips.grad_chunk "$chunk" \
    --ips.M "$M" --data.height "$side" --data.width "$side" --data.stride 48 "$@"
}
for model in uni uni2-h virchow2; do
  for precision in bf16 fp32; do
    for M in 8 100; do
      lazy "$model-$precision-lora8-c8-d1-m$M-lazy" 8 "$M" 672 --model.encoder "$model" --train.precision "$precision"
    done
  done
done
for M in 32 500; do
  lazy "uni-bf16-lora8-c32-d1-m$M-lazy" 32 "$M" 1344 --model.encoder uni --train.precision bf16
done
for model in uni uni2-h virchow2; do
  for precision in bf16 fp32; do
    for tuning in lora8 full; do
      rank=$([ $tuning = lora8 ] && echo 8 || echo 0)
      for chunk in 8 32; do
        for depth in 1 2; do
          probe "$model-$precision-$tuning-c$chunk-d$depth" --model.encoder "$model" --model.encoder_args "{\"depth\": $depth}" \
            --train.precision "$precision" --model.lora_rank "$rank" --ips.M "$chunk" --ips.grad_chunk "$chunk" \
            --data.height "$(side $chunk)" --data.width "$(side $chunk)"
        done
      done
    done
  done
done
