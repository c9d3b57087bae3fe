#!/usr/bin/env bash
# How the committed demo checkpoints under data/demo/ were made (on one H100: about 5 minutes; on this 2-core CPU
# expect hours). The shapes data, then `vrlhf pretrain` for both tasks, run concurrently. The captioner was trained
# in two stages (3000 steps at lr 1e-3, then 2500 more at lr 3e-4 from that checkpoint) until its held-out loss
# stopped falling.
#   bash scripts/make_demo_checkpoints.sh OUT_DIR [VRLHF_COMMAND] [CAPTIONER_STAGE1_DIR]
set -euo pipefail
out=${1:-data/demo}
vrlhf=${2:-vrlhf}
stage1=${3:-}
$vrlhf data shapes --n 10000 --seed 0 --out "$out/shapes"
common="--data $out/shapes --batch_size 128 --eval_every 250 --eval_images 300 --hidden_size 128 --layers 3 --patch_size 8"
if [ -z "$stage1" ]; then
  $vrlhf pretrain --task captioning --out "$out/captioner-stage1" --steps 3000 --lr 1e-3 --patience 5 $common
  stage1="$out/captioner-stage1"
fi
$vrlhf pretrain --task captioning --init "$stage1" --out "$out/captioner" --steps 2500 --lr 3e-4 --patience 4 $common > "$out/captioner.log" 2>&1 &
$vrlhf pretrain --task colorization --out "$out/colorizer" --steps 3000 --lr 1e-3 --patience 5 $common > "$out/colorizer.log" 2>&1 &
wait
