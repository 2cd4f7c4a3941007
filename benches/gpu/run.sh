#!/usr/bin/env bash
# The CUDA checks of benches/README.md, in one run on a GPU machine with PyTorch installed.
#
#   BIN=<folder holding kiln-train and kiln-bench built with --features cuda>
#   COCO=<a COCO folder such as ../shared/data/coco-mini>   (optional)
#   SWIN_REPO=<a microsoft/Swin-Transformer checkout, or its models/swin_transformer.py>   (optional)
#   OUT=<folder for the results>   benches/gpu/run.sh
#
# Each step has its own time limit, so one slow step cannot starve the others; every step's
# output goes to $OUT/gpu.log and its JSON results to $OUT.
set -u
BIN=${BIN:?folder of the CUDA binaries}
OUT=${OUT:?results folder}
mkdir -p "$OUT"
log="$OUT/gpu.log"
step() {
  local limit=$1
  shift
  echo "### $* (limit ${limit}s)" | tee -a "$log"
  local started=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee -a "$log" | tail -n 25
  echo "### exit ${PIPESTATUS[0]} after $((SECONDS - started)) s" | tee -a "$log"
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee -a "$log"
python3 -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name(0))' | tee -a "$log"
# burn autotunes each new kernel shape once; the minimal level keeps that short.
export CUBECL_AUTOTUNE_LEVEL=${CUBECL_AUTOTUNE_LEVEL:-minimal}

# YOLOX-s training step at 640, f32 then mixed precision (the guide trains with --fp16).
step 100 "$BIN/kiln-bench" yolox --device cuda -n yolox-s -b 32 --steps 5 --json "$OUT/yolox-h200.json"
step 80 "$BIN/kiln-bench" yolox --device cuda -n yolox-s -b 32 --steps 5 --fp16 --json "$OUT/yolox-h200-fp16.json"
# The whole YOLOX job on a real COCO subset, with mixed precision: overfitting its training
# images (evaluated on them), so mAP must rise.
if [ -n "${COCO:-}" ]; then
  step 150 "$BIN/kiln-train" yolox -n yolox-nano -b 16 --fp16 --device cuda --seed 1 --data "$COCO" \
    --output /tmp/kiln-yolox max_epoch 100 warmup_epochs 3 no_aug_epochs 80 eval_interval 10 \
    print_interval 5 val_split train2017 basic_lr_per_img 0.000625 min_lr_ratio 0.5 save_history_ckpt false
  cp /tmp/kiln-yolox/yolox_nano/metrics.jsonl "$OUT/yolox-coco-mini-h200.jsonl"
fi
# The guide's MNIST recipe, kiln vs PyTorch on the same GPU (epoch 1 includes autotuning).
step 120 "$BIN/kiln-bench" mnist --device cuda --epochs 3 --compare-pytorch --json "$OUT/mnist-h200.json"
# ResNet-50 training step and evaluation forward, kiln vs torchvision.
step 80 "$BIN/kiln-bench" imagenet --device cuda -a resnet50 -b 64 --steps 10 --compare-pytorch --json "$OUT/imagenet-h200.json"
# Swin-B (the guide's Swin job) training step and evaluation forward, kiln vs the official
# model (timm's without SWIN_REPO; kiln alone without timm).
step 100 "$BIN/kiln-bench" swin --device cuda -m base -b 32 --steps 5 --compare-pytorch \
  ${SWIN_REPO:+--swin-repo "$SWIN_REPO"} --json "$OUT/swin-h200.json"
# The charts are redrawn from the JSON files with `kiln-bench chart`.
rm -f "$OUT"/*.svg
