#!/usr/bin/env bash
# The CUDA checks of benches/README.md, in one run on a GPU machine with PyTorch installed.
#
#   BIN=<folder holding kiln-train and kiln-bench built with --features cuda>
#   COCO=<a COCO folder such as ../shared/data/coco-mini>   (optional)
#   SWIN_REPO=<a microsoft/Swin-Transformer checkout, or its models/swin_transformer.py>   (optional)
#   OUT=<folder for the results>
#   STEPS=<tags to run: ops yolox coco mnist imagenet swin; all by default>   benches/gpu/run.sh
#
# Each step has its own time limit, so one slow step cannot starve the others; every step's
# output goes to $OUT/gpu.log and its JSON results to $OUT.
set -u
BIN=${BIN:?folder of the CUDA binaries}
OUT=${OUT:?results folder}
mkdir -p "$OUT"
log="$OUT/gpu.log"
# STEPS="ops imagenet …" runs only the steps with those tags (all by default): one device
# session rarely has time for every step.
STEPS=${STEPS:-all}
step() {
  local tag=$1 limit=$2
  shift 2
  case " $STEPS " in *" all "* | *" $tag "*) ;; *) return ;; esac
  echo "### $* (limit ${limit}s)" | tee -a "$log"
  local started=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee -a "$log" | tail -n 25
  echo "### exit ${PIPESTATUS[0]} after $((SECONDS - started)) s" | tee -a "$log"
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee -a "$log"
python3 -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name(0))' | tee -a "$log"
# burn autotunes each new kernel shape once; the minimal level keeps that short.
export CUBECL_AUTOTUNE_LEVEL=${CUBECL_AUTOTUNE_LEVEL:-minimal}
# kiln loads cuDNN at run time: PyTorch's wheels carry it (nvidia/*/lib), as they do for torch.
wheel_libs=$(python3 - <<'PY' 2>/dev/null
import glob, os
import nvidia
roots = list(nvidia.__path__)
print(":".join(sorted({d for r in roots for d in glob.glob(os.path.join(r, "*", "lib")) + glob.glob(os.path.join(r, "*", "*", "lib"))})))
PY
)
export LD_LIBRARY_PATH=${wheel_libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

# cuDNN's convolution passes against burn's kernels for every ResNet-50 and YOLOX-s shape, in
# full f32 on cuDNN's side (burn's kernels may use TF32): the bench fails on a difference
# beyond its tolerance (5e-3 of the largest value) or on a pass cuDNN refused.
step ops 120 env NVIDIA_TF32_OVERRIDE=0 "$BIN/kiln-bench" ops --device cuda --warmup 0 --reps 1 \
  --resnet-batch 8 --yolox-batch 2 --json "$OUT/ops-check-gpu.json"
# The same ops timed, kiln (cuDNN) and burn's kernels beside PyTorch, at the training batches.
step ops 150 "$BIN/kiln-bench" ops --device cuda --warmup 2 --reps 5 --compare-pytorch --json "$OUT/ops-gpu.json"

# YOLOX-s training step at 640, f32 then mixed precision (the guide trains with --fp16).
step yolox 100 "$BIN/kiln-bench" yolox --device cuda -n yolox-s -b 32 --steps 5 --json "$OUT/yolox-gpu.json"
step yolox 80 "$BIN/kiln-bench" yolox --device cuda -n yolox-s -b 32 --steps 5 --fp16 --json "$OUT/yolox-gpu-fp16.json"
# The whole YOLOX job on a real COCO subset, with mixed precision: overfitting its training
# images (evaluated on them), so mAP must rise.
if [ -n "${COCO:-}" ]; then
  step coco 150 "$BIN/kiln-train" yolox -n yolox-nano -b 16 --fp16 --device cuda --seed 1 --data "$COCO" \
    --output /tmp/kiln-yolox max_epoch 100 warmup_epochs 3 no_aug_epochs 80 eval_interval 10 \
    print_interval 5 val_split train2017 basic_lr_per_img 0.000625 min_lr_ratio 0.5 save_history_ckpt false
  cp /tmp/kiln-yolox/yolox_nano/metrics.jsonl "$OUT/yolox-coco-mini-gpu.jsonl"
fi
# The guide's MNIST recipe, kiln vs PyTorch on the same GPU (epoch 1 includes autotuning).
step mnist 120 "$BIN/kiln-bench" mnist --device cuda --epochs 3 --compare-pytorch --json "$OUT/mnist-gpu.json"
# ResNet-50 training step and evaluation forward, kiln vs torchvision.
step imagenet 80 "$BIN/kiln-bench" imagenet --device cuda -a resnet50 -b 64 --steps 10 --compare-pytorch --json "$OUT/imagenet-gpu.json"
# The same without cuDNN (burn's convolution kernels), for what routing to cuDNN gives.
step imagenet 80 env KILN_CUDNN=0 "$BIN/kiln-bench" imagenet --device cuda -a resnet50 -b 64 --steps 10 --json "$OUT/imagenet-burn-conv-gpu.json"
# Swin-B (the guide's Swin job) training step and evaluation forward, kiln vs the official
# model (timm's without SWIN_REPO; kiln alone without timm).
step swin 100 "$BIN/kiln-bench" swin --device cuda -m base -b 32 --steps 5 --compare-pytorch \
  ${SWIN_REPO:+--swin-repo "$SWIN_REPO"} --json "$OUT/swin-gpu.json"
# The charts are redrawn from the JSON files with `kiln-bench chart`.
rm -f "$OUT"/*.svg
