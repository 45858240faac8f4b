#!/usr/bin/env bash
# The GPU checks, as one script for a lent CUDA machine (the device tool): writes everything under
# ${OUT:-bench_gpu_out}/.
#
#   bash bench/gpu_wheels.sh              # here, once: the wheels the GPU machine lacks -> .gpu_wheels/
#   bash bench/gpu_check.sh               # there (carry .gpu_wheels): about 7 minutes on an H200
#   bash bench/gpu_check.sh --dry-run     # anywhere: the same steps, tiny and on the CPU, CUDA parts skipped
#
# 1. the suite's CUDA tests (tests/test_cuda.py: device selection, --device cuda:0, --gpu 0, the
#    cuDNN switches, TF32 off, bf16/fp16 autocast, --compile, the out-of-memory advice) and the
#    parity case on CUDA in fp32 (the same comparison as on the CPU);
# 2. the propagation bench at 1088x1920 (keyframes at both ends): naive, default and --fast with and
#    without query sharing, bf16, fp16, compiled: frames/s,
#    x naive, peak GPU memory, label agreement with fp32; and the memory mode against T;
# 3. finetuning steps per second at 512x512 crops in fp32 and bf16.
# The machine has no package registry: pip installs only from .gpu_wheels (--no-index). Its torch
# is the image's own, not our pin; gpu.txt records which.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-bench_gpu_out}
mkdir -p "$out"
py=${PYTHON:-python3}
dry=0
[ "${1:-}" = "--dry-run" ] && dry=1
if [ "$dry" = 0 ] && ! "$py" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "no CUDA GPU visible to torch: running the dry run instead" | tee "$out/gpu.txt"
  dry=1
fi
status=0
step() {  # step NAME TIMEOUT_S COMMAND...: run one step, keep its output, remember a failure
  local name=$1 limit=$2
  shift 2
  echo "== $name: $*" | tee -a "$out/steps.txt"
  timeout "$limit" "$@" > "$out/$name.txt" 2>&1
  local rc=$?
  tail -n 25 "$out/$name.txt"
  echo "== $name: exit $rc" | tee -a "$out/steps.txt"
  [ "$rc" = 0 ] || status=1
}

if [ -d .gpu_wheels ]; then
  "$py" -m pip install -q --no-index --find-links .gpu_wheels yacs flask pymatting 2>&1 | tail -3
fi
"$py" -c 'import torch, sys; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda)' \
  | tee -a "$out/gpu.txt"
if [ "$dry" = 0 ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >> "$out/gpu.txt" 2>&1
  size=1088x1920 crop=512x512 frames=6 runs=2 steps=2,8,32 ft_steps=3 tests_limit=240 bench_limit=300
  paths=naive,default-unshared,default,fast-unshared,fast-fp32,fast-bf16,fast-fp16,fast-compiled,compiled-bf16 variants=fp32,bf16
else
  echo "dry run: the CPU, tiny sizes; the CUDA tests skip with their reason" | tee -a "$out/gpu.txt"
  size=64x96 crop=64x64 frames=3 runs=1 steps=1,2 ft_steps=1 tests_limit=120 bench_limit=120
  paths=naive,default-unshared,default variants=fp32  # bf16 training steps take minutes on CPUs without native bf16
fi

step tests "$tests_limit" "$py" -m pytest -q -rs -p no:cacheprovider tests/test_cuda.py
step bench "$bench_limit" "$py" -m bench.bench_propagation --size "$size" --frames "$frames" --runs "$runs" \
  --paths "$paths" --json "$out/bench.jsonl"
step memory 120 "$py" -m bench.bench_propagation --mode memory --size "$size" --steps "$steps" --runs 1 \
  --paths naive,default
step finetune 180 "$py" -m bench.bench_finetune --size "$size" --crop "$crop" --steps "$ft_steps" --variants "$variants"
echo "gpu_check: $([ "$status" = 0 ] && echo all steps passed || echo SOME STEPS FAILED) ($([ "$dry" = 1 ] && echo dry run || echo GPU))" \
  | tee -a "$out/steps.txt"
exit "$status"
