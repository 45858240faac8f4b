#!/usr/bin/env bash
# The GPU checks, as one script for a lent CUDA machine (the device tool): writes everything under
# ${OUT:-bench_gpu_out}/.
#
#   bash bench/gpu_wheels.sh              # here, once: the wheels the GPU machine lacks -> .gpu_wheels/
#   bash bench/gpu_check.sh               # there (carry .gpu_wheels): at most 5 minutes (the steps' limits)
#   bash bench/gpu_check.sh --dry-run     # anywhere: the same steps, tiny and on the CPU, CUDA parts skipped
#
# 1. tests (90 s): the suite's CUDA tests (tests/test_cuda.py: device selection, --device cuda:0,
#    --gpu 0, the cuDNN switches, TF32 off by default, tf32/bf16/fp16 and --compile against fp32,
#    query sharing, the out-of-memory advice), the parity case on CUDA in fp32;
# 2. whole (120 s): whole test_mf_2.py processes on a 1088x1920 clip (bench/bench_whole.py):
#    default, --fast, bf16, fp16, tf32, compile (its compile seconds apart), bf16 without cuDNN
#    autotuning, bf16 capped at 24 GB, bf16 one query frame at a time; label agreement with fp32;
# 3. profile (40 s): the top 20 operators by CUDA time of one 1088x1920 --fast --precision bf16
#    propagation, the GPU's busy share and peak memory (bench/bench_propagation.py --profile);
# 4. read (30 s): the fused memory read against the loop it replaced and the naive read at
#    1088x1920, T = 2, 8, 32: seconds, memory, largest difference (bench/bench_read.py);
# 5. pipeline (20 s): the I/O pipeline alone, a stand-in network, 1, 2 and all cores
#    (bench/bench_pipeline.py).
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
  size=1088x1920 frames=12 read_steps=2,8,32 pipe_frames=24 device=cuda:0
  limits=(90 120 40 30 20) per_process=50 variants=default,fast,bf16,fp16,tf32,compile,bf16-no-autotune,bf16-24gb,bf16-batch1
else
  echo "dry run: the CPU, tiny sizes; the CUDA tests skip with their reason" | tee -a "$out/gpu.txt"
  size=64x96 frames=4 read_steps=1,2 pipe_frames=4 device=cpu
  limits=(120 240 120 60 60) per_process=120 variants=default,fast,bf16-no-autotune  # compiling takes a minute on a CPU
fi

step tests "${limits[0]}" "$py" -m pytest -q -rs -p no:cacheprovider tests/test_cuda.py
step whole "${limits[1]}" "$py" -m bench.bench_whole --size "$size" --frames "$frames" --device "$device" \
  --variants "$variants" --timeout "$per_process" --json "$out/whole.jsonl"
step profile "${limits[2]}" "$py" -m bench.bench_propagation --size "$size" --frames 4 --runs 1 \
  --paths fast-bf16 --profile fast-bf16 --device "$device"
step read "${limits[3]}" "$py" -m bench.bench_read --sizes "$size" --steps "$read_steps" --runs 1 --device "$device"
step pipeline "${limits[4]}" "$py" -m bench.bench_pipeline --size "$size" --frames "$pipe_frames" --runs 1 \
  --device "$device"
echo "gpu_check: $([ "$status" = 0 ] && echo all steps passed || echo SOME STEPS FAILED) ($([ "$dry" = 1 ] && echo dry run || echo GPU))" \
  | tee -a "$out/steps.txt"
exit "$status"
