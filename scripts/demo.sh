#!/usr/bin/env bash
# The embedded demo, end to end on a fresh machine: set up .venv, generate the coloured-shapes
# dataset (captions in 12 languages), train a multilingual CLIP on CPU, evaluate it per language,
# print the table and write a plot. Extra arguments are config overrides for training
# (e.g. bash scripts/demo.sh loss.kind=sigmoid train.steps=200).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh ""  # "": the extras, not this script's arguments (config overrides)
DATA="${MCLIP_DEMO_DATA:-demo_data}"
RUN="${MCLIP_DEMO_RUN:-runs/demo}"
start=$(date +%s)
if [ ! -f "$DATA/dataset.json" ] || [ ! -f "$DATA/bitext.tsv" ]; then  # bitext.tsv: newer demo data
  mclip data demo --out "$DATA"
fi
train_start=$(date +%s)
# --overwrite: a second demo run replaces the first one's checkpoints in $RUN
mclip train --config configs/demo.yaml "data.train_shards=$DATA/train" "train.out_dir=$RUN" --overwrite "$@"
train_s=$(( $(date +%s) - train_start ))
mclip eval --model "$RUN" --suite eval_suites/demo.yaml --data-root "$DATA" --out "$RUN/eval"
echo "demo finished in $(( $(date +%s) - start )) s (training ${train_s} s; data + training + evaluation); plot: $RUN/eval/results.png"
