#!/usr/bin/env bash
# The paper's full ranker recipe (every training prefix, ~88k examples; QLoRA on CUDA) for a lent GPU.
# Usage: bash bench/train_ranker_gpu.sh [BASE_MODEL] [OUTPUT]
#   BASE_MODEL: default smollm2-135m-instruct; e.g. meta-llama/Llama-2-7b-hf with hub access.
# Several GPUs: replace `python -m` with `accelerate launch -m`.
set -euo pipefail
base=${1:-smollm2-135m-instruct}
output=${2:-runs/ranker-full-$(basename "$base")}
python -m recsys.retriever.candidates
python -m recsys.ranker.train --base-model "$base" --output "$output" \
  --lr 1e-4 --batch-size 16 --per-device-batch-size 4 --epochs 1 --warmup-steps 100 --eval-every 100 \
  --max-history 20 --max-title-tokens 32 --max-prompt-tokens 1536
python bench/ranker_quality.py --base-model "$base" --adapter "$output" --json "$output/ranker_quality.json"
