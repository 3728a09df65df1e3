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
# and precision: M 100 against M 9 at depth 1, chunk 8, LoRA. N = M in both (a 48 px grid step on the 672 px
# image gives N 100; 224 px gives 9), so no scan runs and only the winners differ; patches are cut on
# request (ips.loading lazy, as slides are streamed). The check: UNI bf16 at M 576 against M 36 (chunk 32,
# the 1344 px image).
winners() {  # name, chunk, M, side, stride, then overrides
  local name=$1 chunk=$2 M=$3 side=$4 stride=$5; shift 5
  probe "$name" --model.encoder_args '{"depth": 1}' --model.lora_rank 8 --ips.loading lazy --ips.grad_chunk "$chunk" \
    --ips.M "$M" --data.height "$side" --data.width "$side" --data.stride "$stride" "$@"
}
for model in uni uni2-h virchow2; do
  for precision in bf16 fp32; do
    winners "$model-$precision-lora8-c8-d1-m9-lazy" 8 9 672 224 --model.encoder "$model" --train.precision "$precision"
    winners "$model-$precision-lora8-c8-d1-m100-lazy" 8 100 672 48 --model.encoder "$model" --train.precision "$precision"
  done
done
winners "uni-bf16-lora8-c32-d1-m36-lazy" 32 36 1344 224 --model.encoder uni --train.precision bf16
winners "uni-bf16-lora8-c32-d1-m576-lazy" 32 576 1344 48 --model.encoder uni --train.precision bf16
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
