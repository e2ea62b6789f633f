#!/usr/bin/env bash
# A short GPU training of the embedded demo: bf16 autocast, fused AdamW, without and with
# torch.compile (train.compile), then evaluation on the GPU. Prints samples/s and the tables.
# Needs a CUDA machine with mclip's dependencies installed (python3 -m mclip.cli must work).
#   bash scripts/gpu_check.sh [DATA_DIR] [STEPS]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-/tmp/mclip_gpu_demo}"
STEPS="${2:-600}"
WORKERS="${MCLIP_WORKERS:-6}"
python3 - <<'EOF'
import torch
print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}, bf16: {torch.cuda.is_bf16_supported()}")
EOF
[ -f "$DATA/dataset.json" ] || python3 -m mclip.cli data demo --out "$DATA"
for compile in false true; do
  out="/tmp/mclip_gpu_run_compile_$compile"
  start=$(date +%s)
  python3 -m mclip.cli train --config configs/demo.yaml "data.train_shards=$DATA/train" \
      "train.out_dir=$out" train.device=cuda "train.compile=$compile" "train.steps=$STEPS" \
      "data.num_workers=$WORKERS" --overwrite --quiet
  echo "train.compile=$compile: $(( $(date +%s) - start )) s wall (incl. start-up and compilation)"
  python3 - "$out/log.jsonl" <<'EOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
steps = [r for r in rows if r.get("event") == "step" or "samples_per_s" in r]
rates = [r["samples_per_s"] for r in steps[len(steps) // 2:]]
start = next(r for r in rows if r.get("event") == "start")
print(f"  device {start.get('device')}, steady samples/s (second half, median): "
      f"{sorted(rates)[len(rates) // 2]:.0f}, final loss {steps[-1]['loss']:.4f}")
EOF
  python3 -m mclip.cli eval --model "$out" --suite eval_suites/demo.yaml --data-root "$DATA" \
      --device cuda --out "$out/eval" --quiet
done
