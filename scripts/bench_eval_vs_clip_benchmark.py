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

Throughput rows, in one process (``--threads`` torch threads) on the ``text`` case's model:
texts/s of open_clip's plain ``tokenizer`` + ``encode_text`` (batches of 256 in file order)
against mclip's text path (distinct prompts sorted by length, run at their own length, tokenised
ahead), on ``--throughput-texts`` distinct prompts (an equal share of each language's first);
images/s of mclip's image path with 0 workers and with the default (``scripts/_eval_encoding.py``).

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

from _eval_encoding import (
    ROOT,
    encoding_table,
    throughput,
    write_class_texts,
    write_images,
    write_model,
)

CB_LANGUAGES = {"en": "en", "ar": "ar", "cn": "zh", "jp": "ja", "it": "it"}  # CB code -> mclip
CB_CLI = ROOT / "scripts" / "clip_benchmark_cli.py"  # its CLI, runnable with numpy >= 2.4
METRICS = (("acc@1", "acc1"), ("acc@5", "acc5"), ("mean_per_class_recall", "mean_per_class_recall"))


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
            args.threads,
        )
        report["throughput"] = speed
        print("\n" + encoding_table(speed))
        print(
            f"mclip texts/s over open_clip encode_text: "
            f"{speed['mclip_texts_per_s'] / speed['open_clip_texts_per_s']:.2f}x"
        )
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
