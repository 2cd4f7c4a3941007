#!/bin/sh
# Starts kiln-train the way the guide's run.sh starts its PyTorch jobs: one process per node,
# one worker per GPU. The platform's variables, with the defaults the guide's scripts assume:
#   MA_NUM_GPUS      GPUs on this node (8)        VC_WORKER_NUM  nodes (1)
#   VC_TASK_INDEX    this node's rank (0)         VC_WORKER_HOSTS  hosts, first = master
# KILN_JOB picks the job (mnist, imagenet, yolox, swin; default imagenet), KILN_ARGS adds its
# flags (e.g. KILN_ARGS="-a resnet50 -b 256 /cache/imagenet", or for the guide's Swin job
# KILN_ARGS="--cfg configs/swin/swin_base_patch4_window7_224_22k.yaml --data-path
# /cache/imagenet21k_whole"), KILN_MASTER_PORT the master's port (the guide's: 6060 for Swin,
# 6666 otherwise).
set -e
JOB="${KILN_JOB:-imagenet}"
GPUS="${MA_NUM_GPUS:-8}"
NODES="${VC_WORKER_NUM:-1}"
NODE_RANK="${VC_TASK_INDEX:-0}"
if [ "$JOB" = swin ]; then DEFAULT_PORT=6060; else DEFAULT_PORT=6666; fi
PORT="${KILN_MASTER_PORT:-$DEFAULT_PORT}"
DIST=""
if [ -n "${VC_WORKER_HOSTS:-}" ] && [ "$NODES" -gt 1 ]; then
  MASTER=$(echo "$VC_WORKER_HOSTS" | tr ',' ' ' | cut -d ' ' -f 1)
  DIST="--dist-url tcp://$MASTER:$PORT"
fi
# shellcheck disable=SC2086
exec kiln-train "$JOB" --device cuda --devices "$GPUS" \
  --num_machines "$NODES" --machine_rank "$NODE_RANK" $DIST ${KILN_ARGS:-}
