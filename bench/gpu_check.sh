#!/usr/bin/env bash
# The GPU check: one call on a CUDA machine that answers the GPU questions within a budget counted
# from its first line, installs included (GPU_CHECK_SECONDS, default 345: under 6 minutes with the
# last step's grace). Five files under ${OUT:-bench_gpu_out}/, written as they are made, so a step
# stopped part-way keeps what it finished: log.txt (the plan and every step's output), steps.txt
# (each step's exit status and seconds), whole.jsonl (the whole-process rows), facts.json and tune.json.
#
#   bash bench/gpu_wheels.sh            # where pip reaches PyPI: the wheels the GPU machine lacks -> .gpu_wheels/
#   bash bench/gpu_check.sh             # on the CUDA machine, with .gpu_wheels/ beside it
#   bash bench/gpu_check.sh --plan      # the plan (step, limit, what it measures), nothing run
#   bash bench/gpu_check.sh --dry-run   # anywhere: the inputs at full size (timed: no GPU work), the
#                                       # rest tiny on the CPU, CUDA tests skipped with their reason
#
# The steps run in this order, each within min(its limit, what is left of the budget): the ones
# whose figures decide the GPU defaults first, compiling last; a step with under 10 s left is
# skipped and said so. A failed or stopped step makes the exit status non-zero. The machine has no
# package registry: pip installs only from .gpu_wheels (--no-index --no-deps) and each import is
# checked. Its torch is the image's own, not our pin: facts.json records the versions.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
out=${OUT:-bench_gpu_out}
py=${PYTHON:-python3}
mode=gpu
case "${1:-}" in
  --dry-run) mode=dry ;;
  --plan) mode=plan ;;
  "") ;;
  *) echo "usage: bash bench/gpu_check.sh [--dry-run | --plan]" >&2; exit 2 ;;
esac
budget=${GPU_CHECK_SECONDS:-345}
[ "$mode" = dry ] && budget=${GPU_CHECK_SECONDS:-900}  # the CPU is slower at the tiny steps
begin=$(date +%s)
mkdir -p "$out"
work=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")  # the inputs and the reference PNGs: not sent back
trap 'rm -rf "$work"' EXIT
log=$out/log.txt

if [ "$mode" = dry ]; then
  size=64x96 frames=6 device=cpu per_process=120 read_size=64x96
  whole_defaults=default,fast,bf16-no-autotune whole_more=bf16 compile_rows=
else
  size=1088x1920 frames=40 device=cuda:0 per_process=60 read_size=1088x1920
  whole_defaults=default,bf16,bf16-no-autotune,bf16-batch1,naive whole_more=fp16,tf32,fast,bf16-24gb compile_rows=compile
fi

# name|limit s|what it measures
plan=(
  "install|25|the carried wheels (--no-deps), each import checked"
  "inputs|30|a 40-frame 1088x1920 clip with keyframes 0 and 39 and the parity weights (no GPU work)"
  "facts|25|GPU, torch, CUDA and cuDNN versions; the attention kernel of the read at 1080p (1 and 4 heads, fp32 and half); the syncs left in a steady bf16 step"
  "tests|50|the CUDA tests (device flags, cuDNN switches, parity in fp32, tf32/bf16/fp16 against fp32, the fused read on its kernel, query sharing, out-of-memory advice), 40 s each"
  "whole-defaults|140|whole test_mf_2.py processes on the clip: default (fp32), bf16, bf16 without autotuning, bf16 one query frame at a time, naive (the published code): seconds, first visit, peak memory, labels against fp32"
  "tune|40|tgm.py tune on the clip: every path's seconds a visit in one process (fp32, --fast, bf16, fp16, tf32, the query batch, --compile if it repays), labels against fp32, the choice"
  "read|15|the memory read at 1088x1920, T = 2 and 8: 1 and 4 heads, fp32 and bf16, against the naive read"
  "profile|25|the top operators of one --fast bf16 propagation (20 frames) after a warm-up, the GPU busy share, peak memory"
  "pipeline|15|the I/O pipeline alone on the clip (a stand-in network), readers and writers on every core"
  "whole-more|60|whole processes: fp16, tf32, --fast in fp32, bf16 capped at 24 GB"
  "compile|60|--fast --compile as a whole process, then the CUDA compile test (cold compiles)"
)
print_plan() {
  echo "# the GPU check's plan: ${budget} s in all from its start; each step within min(limit, time left)"
  printf '%-15s %7s  %s\n' step "limit s" "what it measures"
  for row in "${plan[@]}"; do IFS='|' read -r name limit what <<< "$row"; printf '%-15s %7s  %s\n' "$name" "$limit" "$what"; done
}
print_plan | tee "$log"
[ "$mode" = plan ] && exit 0

limit_of() { for row in "${plan[@]}"; do IFS='|' read -r name limit _ <<< "$row"; [ "$name" = "$1" ] && echo "$limit"; done; }
status=0
step() {  # step NAME COMMAND...: run within min(its limit, what is left); output kept in $out/NAME.txt as it comes
  local name=$1 limit left started rc
  shift
  limit=$(limit_of "$name")
  left=$((budget - ($(date +%s) - begin)))
  if [ "$left" -lt 10 ]; then
    echo "== $name: skipped, ${left} s of the ${budget} s budget left" | tee -a "$out/steps.txt" | tee -a "$log"
    status=1
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== $name (limit ${limit} s): $*" | tee -a "$out/steps.txt" >> "$log"
  started=$(date +%s%N)
  timeout --signal=INT --kill-after=5 "$limit" "$@" >> "$log" 2>&1
  rc=$?
  local ms=$((($(date +%s%N) - started) / 1000000))
  echo "== $name: exit $rc after $((ms / 1000)).$(printf %03d $((ms % 1000))) s$([ "$rc" = 124 ] && echo " (stopped at its limit)")" \
    | tee -a "$out/steps.txt" | tee -a "$log"
  [ "$rc" = 0 ] || status=1
}

install() {  # the carried wheels without their dependencies (the image has them), then every import
  set -uo pipefail
  local wheels=(yacs flask itsdangerous blinker pymatting)
  if [ "$mode" = gpu ]; then
    [ -d .gpu_wheels ] || { echo "no .gpu_wheels/: run bash bench/gpu_wheels.sh where pip reaches PyPI, and carry it"; return 1; }
    "$py" -m pip install -q --no-index --no-deps --find-links .gpu_wheels "${wheels[@]}" || return 1
  elif [ -d .gpu_wheels ]; then  # time the same install into a scratch folder
    local scratch
    scratch=$(mktemp -d)
    "$py" -m pip install -q --no-index --no-deps --find-links .gpu_wheels --target "$scratch" "${wheels[@]}" || return 1
    rm -rf "$scratch"
  fi
  "$py" - <<'EOF'
import importlib, importlib.metadata
for module, package in (("yacs", "yacs"), ("flask", "flask"), ("itsdangerous", "itsdangerous"), ("blinker", "blinker"),
                        ("werkzeug", "werkzeug"), ("jinja2", "jinja2"), ("pymatting", "pymatting"), ("numba", "numba"),
                        ("cv2", None), ("numpy", "numpy"), ("tqdm", "tqdm"), ("pytest", "pytest"),
                        ("pytest_timeout", "pytest-timeout"), ("torch", "torch")):
    imported = importlib.import_module(module)
    version = importlib.metadata.version(package) if package else imported.__version__
    print(f"import {module}: ok ({version})")
EOF
}

compile_step() {  # the compiled path as a whole process, then the CUDA compile test
  "$py" -m bench.bench_whole --inputs "$inputs" --reference "$work/reference" --device "$device" --variants compile \
    --timeout 50 --json "$out/whole.jsonl"
  local whole=$?
  "$py" -m pytest -v -rs -p no:cacheprovider --timeout 60 -k compile tests/test_cuda.py
  return $((whole || $?))
}
export -f install compile_step
export py mode out work device

if [ "$mode" = gpu ] && ! "$py" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "no CUDA GPU visible to torch: the GPU check cannot run here (bash bench/gpu_check.sh --dry-run checks the script on a CPU)" \
    | tee -a "$out/steps.txt"
  exit 1
fi
[ "$mode" = gpu ] && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >> "$log" 2>&1
step install bash -c install
step inputs "$py" -m bench.gpu_inputs --out "$work/inputs" --size 1088x1920 --frames 40
inputs=$work/inputs
if [ "$mode" = dry ]; then  # the tiny clip the dry run's steps take
  "$py" -m bench.gpu_inputs --out "$work/tiny" --size "$size" --frames "$frames" > /dev/null
  inputs=$work/tiny
fi
export inputs
step facts "$py" -m bench.gpu_facts --inputs "$inputs" --device "$device" --json "$out/facts.json"
step tests "$py" -m pytest -v -rs -p no:cacheprovider --timeout 40 -k "not compile" tests/test_cuda.py
step whole-defaults "$py" -m bench.bench_whole --inputs "$inputs" --reference "$work/reference" --device "$device" --variants "$whole_defaults" \
  --timeout "$per_process" --json "$out/whole.jsonl"
step tune "$py" tgm.py tune "$inputs/clip" --load "$inputs/parity.pth" --device "$device" --visits 3 \
  --json "$out/tune.json"
step read "$py" -m bench.bench_read --sizes "$read_size" --steps 2,8 --runs 3 --device "$device"
step profile "$py" -m bench.bench_propagation --mode profile --paths "$([ "$mode" = dry ] && echo fast-fp32 || echo fast-bf16)" \
  --clip "$inputs/clip" --frames "$([ "$mode" = dry ] && echo 4 || echo 20)" --device "$device"
step pipeline "$py" -m bench.bench_pipeline --clip "$inputs/clip" --threads all --runs 1 --device "$device"
step whole-more "$py" -m bench.bench_whole --inputs "$inputs" --reference "$work/reference" --device "$device" --variants "$whole_more" \
  --timeout "$per_process" --json "$out/whole.jsonl"
[ -n "$compile_rows" ] && step compile bash -c compile_step
echo "gpu_check: $([ "$status" = 0 ] && echo all steps passed || echo SOME STEPS FAILED) ($([ "$mode" = dry ] && echo dry run || echo GPU)), $(($(date +%s) - begin)) s" \
  | tee -a "$out/steps.txt"
exit "$status"
