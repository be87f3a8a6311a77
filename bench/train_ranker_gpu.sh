#!/usr/bin/env bash
# The ranker recipes for a lent GPU (QLoRA on CUDA).
# Usage: bash bench/train_ranker_gpu.sh [BASE_MODEL] [OUTPUT]
#   BASE_MODEL: default smollm2-135m-instruct; e.g. meta-llama/Llama-2-7b-hf with hub access.
#   RECIPE=paper (default): every training prefix (~88k examples), random negatives, full-vocabulary loss.
#   RECIPE=residual: the committed recipe (held-out LRURec candidates from three cuts, the co-watch prior,
#                    the LLM trained on the residual with shuffled candidates), paper budgets.
#   RECIPE=heldout: held-out candidates, the retriever's top-20, letter loss, paper budgets.
#   RECIPE=zero-shot: no training: the base model (a big instruct model) ranks as it is; its LLM weight is chosen
#                     on the held-out validation rows over the committed prior, and OUTPUT becomes a ranker
#                     folder without adapter weights.
#   DATASET=beauty or games (default ml-latest-small): the paper's recipe on an Amazon data set (its files in
#                     data/, ../shared/data or $RECSYS_DATA_DIR) and its committed retriever, validated and its
#                     weight chosen over the data set's served prior (--over-prior); the held-out recipes are
#                     MovieLens's (Amazon's short sequences leave no room for held-out examples).
# Then serve it: python app.py --base-model BASE_MODEL --adapter OUTPUT [--dataset DATASET]
# Several GPUs: replace `python -m` with `accelerate launch -m`.
set -euo pipefail
base=${1:-smollm2-135m-instruct}
recipe=${RECIPE:-paper}
dataset=${DATASET:-ml-latest-small}
suffix=$([ "$dataset" = ml-latest-small ] || echo "-$dataset")  # MovieLens keeps its runs/ranker-RECIPE-MODEL
output=${2:-runs/ranker-$recipe$suffix-$(basename "$base")}
budgets=(--max-history 20 --max-title-tokens 32 --max-prompt-tokens 1536)
case "$dataset" in
  ml-latest-small|beauty|games) ;;
  *) echo "DATASET must be ml-latest-small, beauty or games (got $dataset)" >&2; exit 2 ;;
esac
if [ "$dataset" != ml-latest-small ]; then
  if [ "$recipe" != paper ]; then
    echo "RECIPE=$recipe needs MovieLens's held-out examples; on $dataset use RECIPE=paper" >&2
    exit 2
  fi
  python -m recsys.retriever.candidates --checkpoint "checkpoints/lrurec-$dataset" --output "runs/candidates-$dataset" \
    --k 100
  python -m recsys.ranker.train --dataset "$dataset" --base-model "$base" --output "$output" --over-prior \
    --retriever "checkpoints/lrurec-$dataset" --candidates "runs/candidates-$dataset" \
    --prior "checkpoints/llamarec-$dataset" --val-users 1000 --lr 1e-4 --batch-size 16 --per-device-batch-size 4 \
    --epochs 1 --warmup-steps 100 --eval-every 100 "${budgets[@]}"
  # title likelihood beside the trained LLM: the base model's (the adapter off), its weight chosen on the same rows
  python -m recsys.ranker.title_weight --dataset "$dataset" --served "$output" --candidates "runs/candidates-$dataset" \
    --base-model "$base"
  python bench/ranker_quality.py --dataset "$dataset" --base-model "$base" --adapter "$output" \
    --retriever "runs/candidates-$dataset" --json "$output/ranker_quality.json"
  echo "it replaces checkpoints/llamarec-$dataset when validation favours it beyond its interval" \
    "(metrics.json: titles.val_against_replaced; RESULTS.md, How choices are made)"
  echo "serve it: python app.py --dataset $dataset --base-model $base --adapter $output"
  exit 0
fi
python -m recsys.retriever.candidates --k 100  # enough for any candidate pool the prior may choose
if [ "$recipe" = residual ]; then
  python -m recsys.ranker.heldout --resume
  python -m recsys.ranker.prior --write --output "$output"
  python -m recsys.ranker.train --base-model "$base" --output "$output" --prior "$output" --examples heldout \
    --loss residual --shuffle --lr 5e-4 --batch-size 8 --per-device-batch-size 8 --epochs 1 --warmup-steps 20 \
    --eval-every 100 --val-examples 1000 "${budgets[@]}"
elif [ "$recipe" = zero-shot ]; then
  python -m recsys.ranker.heldout --resume
  python -m recsys.ranker.train --base-model "$base" --output "$output" --examples heldout \
    --prior checkpoints/llamarec-smollm2-135m-ml-latest-small --zero-shot "${budgets[@]}"
elif [ "$recipe" = heldout ]; then
  python -m recsys.ranker.heldout --resume
  python -m recsys.ranker.train --base-model "$base" --output "$output" --examples heldout --pool 20 --loss letters \
    --lr 5e-4 --batch-size 8 --per-device-batch-size 8 --epochs 1 --warmup-steps 20 --eval-every 75 "${budgets[@]}"
else
  python -m recsys.ranker.train --base-model "$base" --output "$output" \
    --lr 1e-4 --batch-size 16 --per-device-batch-size 4 --epochs 1 --warmup-steps 100 --eval-every 100 "${budgets[@]}"
fi
python bench/ranker_quality.py --base-model "$base" --adapter "$output" --json "$output/ranker_quality.json"
echo "serve it: python app.py --base-model $base --adapter $output"
