"""Benchmark ``mclip eval`` against CLIP_benchmark's own CLI on the same model file and images.

Both tools load one random-init open_clip ViT (64 px, patch 16, text width 128, 4 layers) from
the same ``local-dir:`` folder and read the same ImageFolder (``ROOT/val/<class>/*.jpg``,
JPEGs of 500 x 375 px), alternating tool by tool within each case:

- ``image``: one language (en), 2,000 images of 10 classes, CLIP_benchmark's 80 English
  ImageNet templates: image-bound (800 prompts).
- ``text``: ImageNet's 1000 class names and templates in CLIP_benchmark's five languages (en, ar,
  cn, jp, it: 301,000 prompts), 1,000 images: text-bound.

Arms: ``clip_benchmark`` (its CLI: ``clip_benchmark eval``, defaults but ``--no_amp``),
``mclip`` (``mclip eval`` with its defaults: fp32, image workers = the usable CPUs),
``mclip_bf16`` (``--precision bf16``) and, with ``--before SRC``, ``mclip_before``: the same
command from another mclip checkout (e.g. a ``git worktree`` of the commit before a change),
for before / after numbers from the same run. The table gives each arm's wall time (the
process, model loading included), the ratio to clip_benchmark and the largest difference of
acc@1, acc@5 and mean per-class recall from clip_benchmark's over the languages.

Throughput rows, in one process on the ``text`` case's model: texts/s of open_clip's plain
``tokenizer`` + ``encode_text`` (batches of 256 in file order) against mclip's text path
(distinct prompts sorted by length, run at their own length, tokenised ahead), on the first
``--throughput-texts`` prompts of the five languages; images/s of mclip's image path with
0 workers and with the default.

    python scripts/bench_eval_vs_clip_benchmark.py --out bench_out/bench_eval_vs_cb.json
    python scripts/bench_eval_vs_clip_benchmark.py --before /tmp/mclip_before --cases text
    python scripts/bench_eval_vs_clip_benchmark.py --quick --out /tmp/quick.json   # seconds

clip_benchmark 1.6.2's ``accuracy()`` casts a one-element array with ``float()``, which
numpy >= 2.4 refuses: its CLI runs through ``scripts/clip_benchmark_cli.py``, which replaces
only that function (same arithmetic).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CB_LANGUAGES = {"en": "en", "ar": "ar", "cn": "zh", "jp": "ja", "it": "it"}  # CB code -> mclip
CB_CLI = ROOT / "scripts" / "clip_benchmark_cli.py"  # its CLI, runnable with numpy >= 2.4
METRICS = (("acc@1", "acc1"), ("acc@5", "acc5"), ("mean_per_class_recall", "mean_per_class_recall"))


def write_model(folder: Path, quick: bool) -> None:
    """A seeded random-init open_clip ViT as an open_clip ``local-dir:`` folder."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    width, layers = (32, 1) if quick else (128, 4)
    config = {
        "embed_dim": width,
        "vision_cfg": {
            "image_size": 64,
            "layers": layers,
            "width": width,
            "head_width": 32,
            "patch_size": 16,
        },
        "text_cfg": {
            "context_length": 77,
            "vocab_size": 49408,
            "width": width,
            "heads": max(1, width // 32),
            "layers": layers,
        },
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bench-vit.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder / "bench-vit.json")
    torch.manual_seed(0)
    model = open_clip.create_model("bench-vit")
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        str(folder / "open_clip_model.safetensors"),
    )
    preprocess = {
        "size": 64,
        "mean": list(open_clip.OPENAI_DATASET_MEAN),
        "std": list(open_clip.OPENAI_DATASET_STD),
        "interpolation": "bicubic",
        "resize_mode": "shortest",
    }
    (folder / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": config, "preprocess_cfg": preprocess})
    )


def write_images(root: Path, classes: int, per_class: int, size: tuple[int, int]) -> None:
    """JPEGs (smooth colour fields with noise, like photos to a decoder) in ROOT/val/NNNN/."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    w, h = size
    ramp = np.linspace(0, 1, w)[None, :, None] * np.linspace(0, 1, h)[:, None, None]
    for c in range(classes):
        folder = root / "val" / f"{c:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            colour = rng.uniform(0, 255, 3)
            pixels = ramp * colour + rng.normal(0, 20, (h, w, 3)) + rng.uniform(0, 80, 3)
            Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(
                folder / f"{i:04d}.jpg", quality=90
            )


def write_class_texts(
    folder: Path, languages: list[str], classes: int | None, templates: int | None
) -> None:
    """CLIP_benchmark's ImageNet class names and templates (the first ``classes`` /
    ``templates``), in its layout, under both dataset keys the two tools look up."""
    import clip_benchmark.datasets as package

    source = Path(package.__file__).parent
    folder.mkdir(parents=True, exist_ok=True)
    for code in languages:
        names = json.loads((source / f"{code}_classnames.json").read_text())["imagenet1k"]
        prompts = json.loads(
            (source / f"{code}_zeroshot_classification_templates.json").read_text()
        )["imagenet1k"]
        names, prompts = names[:classes], prompts[:templates]
        for kind, value in (("classnames", names), ("zeroshot_classification_templates", prompts)):
            (folder / f"{code}_{kind}.json").write_text(
                json.dumps(
                    {"imagenet1k": value, "imagenet1k-unverified": value}, ensure_ascii=False
                )
            )


def timed(command: list[str], log: Path, env: dict | None = None) -> float:
    """Run ``command`` (output to ``log``); its wall time in seconds; exit if it fails."""
    started = time.perf_counter()
    with log.open("w") as stream:
        done = subprocess.run(
            command,
            stdout=stream,
            stderr=subprocess.STDOUT,
            cwd=log.parent,
            env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
        )
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{log.read_text()[-3000:]}")
    return time.perf_counter() - started


def run_clip_benchmark(
    work: Path, case: str, model: Path, texts: Path, languages: list[str], threads: int
) -> tuple[float, dict]:
    out = work / f"{case}_cb"
    out.mkdir(exist_ok=True)
    command = [
        sys.executable,
        str(CB_CLI),
        "eval",
        "--dataset",
        "imagenet1k-unverified",
        "--dataset_root",
        str(work / case),
        "--model",
        f"local-dir:{model}",
        "--pretrained",
        "none",
        "--task",
        "zeroshot_classification",
        "--no_amp",
        "--language",
        *languages,
        "--output",
        str(out / "{language}.json"),
        "--quiet",
    ]
    if len(languages) == 1:  # its custom files hold one language
        command += [
            "--custom_classname_file",
            str(texts / f"{languages[0]}_classnames.json"),
            "--custom_template_file",
            str(texts / f"{languages[0]}_zeroshot_classification_templates.json"),
        ]
    seconds = timed(command, work / f"{case}_cb.log", {"OMP_NUM_THREADS": str(threads)})
    metrics = {
        CB_LANGUAGES[code]: json.loads((out / f"{code}.json").read_text())["metrics"]
        for code in languages
    }
    return seconds, metrics


def run_mclip(
    work: Path,
    case: str,
    arm: str,
    model: Path,
    texts: Path,
    languages: list[str],
    threads: int,
    source: Path,
    extra: list[str],
) -> tuple[float, dict]:
    out = work / f"{case}_{arm}"
    command = [
        sys.executable,
        "-m",
        "mclip.cli",
        "eval",
        "--model",
        f"open_clip:local-dir:{model}",
        "--task",
        "zeroshot_classification",
        "--images",
        str(work / case / "val"),
        "--class-texts",
        str(texts),
        "--dataset",
        "imagenet1k",
        "--languages",
        ",".join(CB_LANGUAGES[c] for c in languages),
        "--out",
        str(out),
        *extra,
    ]
    seconds = timed(
        command,
        work / f"{case}_{arm}.log",
        {"OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(source)},
    )
    task = json.loads((out / "results.json").read_text())["tasks"]["zeroshot_classification"]
    return seconds, task["languages"]


def agreement(ours: dict, theirs: dict) -> float:
    """Largest |difference| of the three metrics over the languages (fractions)."""
    return max(
        abs(float(ours[lang][m]) - float(theirs[lang][t])) for lang in theirs for m, t in METRICS
    )


def throughput(
    work: Path, model: Path, texts: Path, languages: list[str], count: int, images: Path
) -> dict:
    """texts/s and images/s rows, measured in a child process (see the module docstring)."""
    code = f"""
import json, time, sys, torch
sys.path.insert(0, {str(ROOT)!r})
import mclip
from mclip.eval.datasets import open_image_set
from mclip.eval.embeddings import ImageEmbeddings, TextEmbeddings
from mclip.eval.image_loading import default_image_workers
adapter = mclip.load_model("open_clip:local-dir:{model}")
prompts = []
for code in {languages!r}:
    names = json.load(open({str(texts)!r} + f"/{{code}}_classnames.json"))["imagenet1k"]
    temps = json.load(open({str(texts)!r} + \
f"/{{code}}_zeroshot_classification_templates.json"))["imagenet1k"]
    prompts += [t.replace("{{c}}", n) for n in names for t in temps]
prompts = list(dict.fromkeys(prompts))[:{count}]
out = {{"texts": len(prompts)}}
with torch.no_grad():
    start = time.perf_counter()
    for i in range(0, len(prompts), 256):
        adapter.model.encode_text(adapter.tokenizer(prompts[i:i + 256]))
    out["open_clip_texts_per_s"] = len(prompts) / (time.perf_counter() - start)
    start = time.perf_counter()
    TextEmbeddings(adapter).encode(prompts)
    out["mclip_texts_per_s"] = len(prompts) / (time.perf_counter() - start)
    start = time.perf_counter()
    TextEmbeddings(adapter, precision="bf16").encode(prompts)
    out["mclip_bf16_texts_per_s"] = len(prompts) / (time.perf_counter() - start)
    image_set = open_image_set({str(images)!r})
    for workers in (0, default_image_workers()):
        start = time.perf_counter()
        n = len(ImageEmbeddings(adapter, torch.device("cpu"), workers=workers).get(image_set)[1])
        out[f"images_per_s_workers_{{workers}}"] = n / (time.perf_counter() - start)
    out["default_workers"] = default_image_workers()
print(json.dumps(out))
"""
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=work,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    if done.returncode != 0:
        sys.exit(f"throughput measurement failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench_eval_vs_cb")
    parser.add_argument("--cases", default="image,text")
    parser.add_argument("--before", type=Path, help="another mclip checkout: an 'mclip_before' arm")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--throughput-texts", type=int, default=20_000)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    parser.add_argument("--out", type=Path, default=Path("bench_eval_vs_cb.json"))
    args = parser.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    model = work / "model"
    write_model(model, args.quick)
    cases = {
        "image": dict(
            languages=["en"],
            classes=10,
            per_class=4 if args.quick else 200,
            templates=4 if args.quick else None,
        ),
        "text": dict(
            languages=["en"] if args.quick else list(CB_LANGUAGES),
            classes=12 if args.quick else 1000,
            per_class=1,
            templates=3 if args.quick else None,
        ),
    }
    arms = ["clip_benchmark", "mclip", "mclip_bf16"] + (["mclip_before"] if args.before else [])
    rows, report = [], {"cases": {}}
    for case in [c for c in args.cases.split(",") if c]:
        spec = cases[case]
        texts = work / f"{case}_texts"
        write_class_texts(texts, spec["languages"], spec["classes"], spec["templates"])
        if not (work / case / "val").is_dir():
            write_images(
                work / case,
                spec["classes"],
                spec["per_class"],
                (64, 48) if args.quick else (500, 375),
            )
        results = {}
        for arm in arms:
            print(f"[{case}] {arm} ...", file=sys.stderr, flush=True)
            if arm == "clip_benchmark":
                results[arm] = run_clip_benchmark(
                    work, case, model, texts, spec["languages"], args.threads
                )
            else:
                source = args.before.resolve() if arm == "mclip_before" else ROOT
                extra = ["--precision", "bf16"] if arm == "mclip_bf16" else []
                results[arm] = run_mclip(
                    work, case, arm, model, texts, spec["languages"], args.threads, source, extra
                )
        cb_seconds, cb_metrics = results["clip_benchmark"]
        report["cases"][case] = {
            arm: {
                "seconds": seconds,
                "vs_clip_benchmark": cb_seconds / seconds,
                "max_metric_difference": agreement(metrics, cb_metrics)
                if arm != "clip_benchmark"
                else 0.0,
            }
            for arm, (seconds, metrics) in results.items()
        }
        for arm, row in report["cases"][case].items():
            rows.append(
                (case, arm, row["seconds"], row["vs_clip_benchmark"], row["max_metric_difference"])
            )
    print("\n| case | arm | wall s | speed vs clip_benchmark | max metric diff vs clip_benchmark |")
    print("|---|---|---:|---:|---:|")
    for case, arm, seconds, ratio, diff in rows:
        print(f"| {case} | {arm} | {seconds:.1f} | {ratio:.2f}x | {diff:.2e} |")
    text_texts = work / "text_texts"
    if (work / "text" / "val").is_dir():
        speed = throughput(
            work,
            model,
            text_texts,
            cases["text"]["languages"],
            args.throughput_texts,
            work / ("image" if "image" in args.cases else "text") / "val",
        )
        report["throughput"] = speed
        print(f"\n| throughput ({speed['texts']} prompts) | per s |\n|---|---:|")
        for key in ("open_clip_texts_per_s", "mclip_texts_per_s", "mclip_bf16_texts_per_s"):
            print(f"| {key.removesuffix('_per_s')} | {speed[key]:.0f} |")
        print(
            f"| mclip texts/s over open_clip encode_text | "
            f"{speed['mclip_texts_per_s'] / speed['open_clip_texts_per_s']:.2f}x |"
        )
        for key in sorted(k for k in speed if k.startswith("images_per_s")):
            print(f"| {key.replace('images_per_s_', 'images, ')} | {speed[key]:.0f} |")
    targets = {}
    if "image" in report["cases"]:
        targets["image-bound: mclip >= 1.2x clip_benchmark"] = (
            report["cases"]["image"]["mclip"]["vs_clip_benchmark"] >= 1.2
        )
    if "text" in report["cases"]:
        targets["text-bound: mclip >= 5x clip_benchmark"] = (
            report["cases"]["text"]["mclip"]["vs_clip_benchmark"] >= 5
        )
    if "throughput" in report:
        speed = report["throughput"]
        targets["texts/s >= 3x open_clip encode_text"] = (
            speed["mclip_texts_per_s"] >= 3 * speed["open_clip_texts_per_s"]
        )
    for case in report["cases"].values():
        for arm in ("mclip", "mclip_before"):
            if arm in case:
                targets.setdefault("fp32 metrics equal clip_benchmark's (<= 1e-9)", True)
                targets["fp32 metrics equal clip_benchmark's (<= 1e-9)"] &= (
                    case[arm]["max_metric_difference"] <= 1e-9
                )
    for target, met in targets.items():
        print(f"  {'met' if met else 'NOT met'}: {target}")
    report.update(config={k: str(v) for k, v in vars(args).items()}, targets=targets)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
