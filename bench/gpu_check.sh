#!/usr/bin/env bash
# The GPU checks, as one script for a lent CUDA machine (see the device tool): the test suite on
# CUDA, then the propagation bench at 1088x1920 for every path (naive / default / fast / bf16 /
# fp16 / compiled), with peak GPU memory. Plan: about 6 minutes on an H100/H200-class GPU.
# Writes its logs and JSON lines to ${OUT:-bench_gpu_out}/.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-bench_gpu_out}
mkdir -p "$out"
python3 -c 'import torch; assert torch.cuda.is_available(), "no CUDA GPU"; print(torch.cuda.get_device_name(0), torch.__version__)' \
  2>&1 | tee "$out/gpu.txt" || exit 1
pip install -q -r requirements-dev.txt 2>&1 | tail -2
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >> "$out/gpu.txt" 2>&1
# 1. the suite (CUDA is picked by --device auto; the browser tests skip without chromium)
timeout 240 python3 -m pytest -q -x -m "not slow" -p no:cacheprovider 2>&1 | tail -15 | tee "$out/tests.txt"
# 2. the bench: every path at 1088x1920, 6 frames, a warm-up round and 2 timed rounds
timeout 300 python -m bench.bench_propagation --size 1088x1920 --frames 6 --runs 2 \
  --paths naive,default,fast-fp32,fast-bf16,fast-fp16,fast-compiled,compiled-bf16 --json "$out/bench.jsonl" \
  2>&1 | tail -25 | tee "$out/bench.txt"
# 3. memory of one segment step against the memory size T
timeout 120 python -m bench.bench_propagation --mode memory --size 1088x1920 --steps 2,8,32 --runs 1 \
  --paths naive,default,fast-bf16 2>&1 | tail -12 | tee "$out/memory.txt"
