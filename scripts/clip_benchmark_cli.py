"""CLIP_benchmark's own command line (``clip_benchmark eval ...``), runnable with numpy >= 2.4.

clip_benchmark 1.6.2's ``accuracy()`` casts a one-element array with ``float()``, which numpy
>= 2.4 refuses; this wrapper replaces only that function (the same arithmetic) and then runs the
unchanged CLI. Used by the parity tests and ``scripts/bench_eval_vs_clip_benchmark.py``.

    python scripts/clip_benchmark_cli.py eval --dataset ... --model ... --pretrained ...
"""

import sys

import clip_benchmark.metrics.zeroshot_classification as zeroshot


def accuracy(output, target, topk=(1,)):
    """Top-k accuracies of logits [N, C] against labels [N], as clip_benchmark computes them."""
    pred = output.topk(max(topk), 1, True, True)[1].t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    return [correct[:k].reshape(-1).float().sum().item() / len(target) for k in topk]


zeroshot.accuracy = accuracy

if __name__ == "__main__":
    from clip_benchmark.cli import main

    sys.exit(main())
