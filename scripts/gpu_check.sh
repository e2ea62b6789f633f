#!/usr/bin/env bash
# A short GPU training of the embedded demo: bf16 autocast, fused AdamW, without and with
# torch.compile (train.compile), then evaluation on the GPU (fp32 and --precision bf16, timed).
# Prints samples/s, the tables and the bf16 metric changes.
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
# evaluation on the GPU at both precisions (bf16 autocast for the towers; scores and ranks fp32)
for precision in fp32 bf16; do
  start=$(date +%s.%N)
  python3 -m mclip.cli eval --model /tmp/mclip_gpu_run_compile_false --suite eval_suites/demo.yaml \
      --data-root "$DATA" --device cuda --precision "$precision" --bootstrap 0 \
      --out "/tmp/mclip_gpu_eval_$precision" --quiet > /dev/null
  echo "eval --precision $precision: $(python3 -c "import time; print(f'{time.time() - $start:.1f}')") s wall"
done
python3 - <<'EOF'
import json
runs = {p: json.load(open(f"/tmp/mclip_gpu_eval_{p}/results.json"))["tasks"] for p in ("fp32", "bf16")}
for task, result in runs["fp32"].items():
    for lang, metrics in result["languages"].items():
        for name, value in metrics.items():
            other = runs["bf16"][task]["languages"][lang].get(name)
            if isinstance(value, float) and isinstance(other, float) and name != "n_images":
                print(f"  {task} {lang} {name}: fp32 {value:.4f}, bf16 {other:.4f}")
EOF
