#!/usr/bin/env bash
# How the committed demo checkpoints under data/demo/ were made. The shapes data (references by simulated writers,
# docs/ORACLES.md), then `vrlhf pretrain`.
# - captioner (issue #11): three stages on this 2-core CPU, one thread, about 2.5 hours: 3000 steps at lr 1e-3, 2500
#   more at lr 3e-4 from that checkpoint, then a warm restart of 2500 steps at lr 2e-4 as the convergence check (its
#   best held-out loss was 0.2% below stage 2's while the training loss kept falling: converged).
# - colorizer: unchanged since it was made on one H100 (its data and recipe did not change).
# - detector (issue 20; data/demo/README.md, "The detector"): on this 2-core CPU, one thread, the exact-box detector
#   (4000 steps from scratch, about 50 minutes; commit 43d7d1e's weights), then 1200 steps on the boxes simulated
#   annotators draw (vrlhf/tasks/box_annotators.py), about 10 minutes: the kept detector (its convergence check, a
#   warm restart at lr 1e-4, is in the README and not kept).
#   bash scripts/make_demo_checkpoints.sh OUT_DIR [VRLHF_COMMAND]
set -euo pipefail
out=${1:-data/demo}
vrlhf=${2:-vrlhf}
$vrlhf data shapes --n 10000 --seed 0 --out "$out/shapes"
common="--data $out/shapes --batch_size 128 --eval_every 250 --eval_images 300 --hidden_size 128 --layers 3 --patch_size 8 --overwrite"
$vrlhf pretrain --task captioning --out "$out/captioner-stage1" --steps 3000 --lr 1e-3 --patience 5 $common
$vrlhf pretrain --task captioning --init "$out/captioner-stage1" --out "$out/captioner-stage2" --steps 2500 --lr 3e-4 \
  --patience 4 $common
$vrlhf pretrain --task captioning --init "$out/captioner-stage2" --out "$out/captioner" --steps 2500 --lr 2e-4 \
  --patience 4 $common
$vrlhf pretrain --task colorization --out "$out/colorizer" --steps 3000 --lr 1e-3 --patience 5 $common
$vrlhf pretrain --task detection --data "$out/shapes" --out "$out/detector-exact" --steps 4000 --batch_size 64 \
  --lr 1e-3 --eval_every 400 --eval_images 300 --patience 4 --hidden_size 128 --layers 3 --patch_size 8 --overwrite
$vrlhf pretrain --task detection --data "$out/shapes" --init "$out/detector-exact" --out "$out/detector" --steps 1200 \
  --batch_size 64 --lr 3e-4 --eval_every 200 --eval_images 300 --patience 3 --overwrite
