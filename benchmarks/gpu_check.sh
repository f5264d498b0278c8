#!/usr/bin/env bash
# One-shot GPU check (under 10 minutes on one GPU): builds the CUDA plugins, then
#   1. the cuda-marked tests (kernels vs reference ops, and every other test marked cuda);
#   2. benchmarks/kernel_check.py: kernels vs reference at the cifar and paper256 op shapes (forward, gradient, double
#      backward), R1 / path length through whole networks, fp16 G / D against fp32;
#   3. a 2-process NCCL smoke run of train.py (only with 2+ GPUs);
#   4. benchmarks/train_speed.py: kimg/s of the cifar config, batch 64 (ref ops vs plugins, fp32 vs mixed, SMaRt off
#      vs freq 8 with the 55.7 M DDPM++ score source), printed and written to $OUT_DIR/train_speed.json; the same for
#      the 16x16 grey MNIST configuration (--preset mnist16, batch 32) in $OUT_DIR/train_speed_mnist16.json.
# On a GPU the steps run in the order kernels, throughput, cuda-marked tests, each with its own time limit (about
# 7 minutes in all), so that a cut-short run still reports the most important figures.
# Without a GPU it runs the CPU paths instead (tests skip, shapes only, a tiny train_speed run) so the script itself
# is checked. Usage: bash benchmarks/gpu_check.sh [OUT_DIR]   (default: out/gpu_check, git-ignored). Exit status: failed steps.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-out/gpu_check}
mkdir -p "$OUT_DIR"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$PWD/$OUT_DIR/torch_extensions}
FAILED=()

step() {  # step NAME TIMEOUT_SEC COMMAND...: run, log to $OUT_DIR/NAME.log, record failure.
    local name=$1 limit=$2
    shift 2
    echo "=== $name: $*"
    local start=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee "$OUT_DIR/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "=== $name: exit $rc after $((SECONDS - start)) s"
    [ "$rc" -eq 0 ] || FAILED+=("$name (exit $rc)")
}

NUM_GPUS=$(python -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)")
python -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, '| GPUs:',
    [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])"
command -v nvcc >/dev/null && nvcc --version | tail -1 || echo "nvcc not on PATH (CUDA_HOME=${CUDA_HOME:-unset})"

if [ "$NUM_GPUS" -ge 1 ]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    # 0. Build both plugins (cached in $TORCH_EXTENSIONS_DIR) and run their self-checks.
    step build 200 python -c "
import time, torch
from torch_utils.ops import bias_act, upfirdn2d
for op in (bias_act, upfirdn2d):
    start = time.time()
    op._plugin.build()
    op._plugin.get(torch.device('cuda'))
    print(op._plugin.module_name, op._plugin.status, f'({time.time() - start:.0f} s) -', op._plugin.report)
    assert op._plugin.status == 'ok'
"
    # Steps in the order of what they report: kernels, throughput and SMaRt's cost, then the cuda-marked tests.
    step kernel_check 120 python benchmarks/kernel_check.py --device cuda
    step train_speed 120 python benchmarks/train_speed.py --device cuda --batch 64 --batch-gpu 32 --blocks 2 \
        --warmup 1 --json "$OUT_DIR/train_speed.json"
    step train_speed_mnist16 80 python benchmarks/train_speed.py --device cuda --preset mnist16 --batch 32 \
        --batch-gpu 32 --blocks 2 --warmup 1 --json "$OUT_DIR/train_speed_mnist16.json"
    step cuda_tests 120 python -m pytest -q -p no:cacheprovider -m cuda tests
    if [ "$NUM_GPUS" -ge 2 ]; then
        python -c "import sys; sys.path.insert(0, 'benchmarks'); import train_speed; train_speed.write_dataset('$OUT_DIR/nccl_data.zip', num=64)"
        step nccl_smoke 300 torchrun --standalone --nproc_per_node=2 train.py --outdir="$OUT_DIR/nccl_runs" \
            --data="$OUT_DIR/nccl_data.zip" --gpus=2 --batch=16 --cbase=4096 --cmax=128 --map-depth=2 --kimg=0.1 \
            --tick=0.05 --aug=noaug --workers=0
    else
        echo "=== nccl_smoke: skipped (needs 2 GPUs, found $NUM_GPUS)"
    fi
else
    echo "No CUDA GPU: running the CPU paths only (cuda tests skip; kernels are not compared)."
    step cuda_tests 600 python -m pytest -q -p no:cacheprovider -m cuda tests
    step kernel_check 600 python benchmarks/kernel_check.py --device cpu --configs cifar
    echo "=== nccl_smoke: skipped (needs 2 GPUs, found 0)"
    step train_speed 900 python benchmarks/train_speed.py --device cpu --batch 4 --batch-gpu 4 --cbase 512 \
        --cmax 16 --dpm-channels 16 --blocks 1 --warmup 0 --json "$OUT_DIR/train_speed.json"
fi

if [ ${#FAILED[@]} -eq 0 ]; then
    echo "gpu_check: all steps passed (logs in $OUT_DIR)"
else
    echo "gpu_check: FAILED: ${FAILED[*]} (logs in $OUT_DIR)"
fi
exit ${#FAILED[@]}
