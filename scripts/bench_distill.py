"""Does distillation work? A compact student, distilled and not, on the hard demo level (CPU).

The experiment of issue 9, item 8(a), end to end:

1. the hard demo data (``mclip data demo --level hard``), unless ``--data`` already holds it;
2. a teacher: ``configs/demo.yaml`` at 64 px (5.4M parameters), ``--teacher-steps`` steps, unless
   ``--teacher`` names a trained run;
3. with ``--offline``, the teacher's embeddings of every training image and caption, once
   (``mclip distill embed --dtype fp32``; the hard level trains without augmentation, so the
   student sees exactly the image the teacher embedded). By default the teacher runs online:
   the hard level has ~170 captions per image (12 languages, ~14 phrasings each), so embedding
   all 2M captions on 2 CPU cores (~30 minutes) costs more than running the teacher on the
   captions 3 students sample;
4. for each seed, the student of ``configs/demo_distill.yaml`` (an lcnet_050 image tower + a
   2-layer text tower, 1.30M parameters, under 1/4 of the teacher's 5.43M) trained twice with
   the same steps, data order and seed: distilled (its text tower inherited from the teacher's
   and frozen, then contrastive 0.5 + similarity KD 0.5 + image feature KD 4.0, lr 4e-3), and from
   random weights, every tower trained, with the plain contrastive loss only; with
   ``--inherit-only`` a third time: the teacher's text tower inherited and frozen, the
   contrastive loss only (so the table separates what inheritance and the KD terms each add);
   with ``--own-text`` a fourth time: distilled (the same KD terms, feature KD on both towers)
   into a student whose text tower is its own (random init, trained, nothing inherited), which
   shows what the KD terms add where inheritance does not do the work;
5. every model evaluated on ``eval_suites/demo_hard.yaml``: mean zero-shot acc@1 over the 12
   languages (24 relation classes, 480 images) and mean retrieval R@1 (200 images, 3 captions
   per language each; the mean of text-to-image and image-to-text).

The targets: the distilled student reaches 95% of the teacher's mean acc@1 and mean R@1, and
its mean R@1 over the seeds beats the undistilled student's by more than the spread (max - min)
of either group's 3 seeds. Runs that already have their evaluation are reused, so an interrupted
benchmark continues where it stopped. Prints a table and writes JSON (``--out``).

    python scripts/bench_distill.py                        # ~2 hours on 2 cores
    python scripts/bench_distill.py --teacher runs/hard    # reuse a trained teacher
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from _bench_runs import ROOT, evaluate, finished, mclip, metric, parameters, write_report

SUITE = ROOT / "eval_suites" / "demo_hard.yaml"
HARD_LEVEL = ["model.image.image_size=64", "model.text.max_length=192", "data.augment=false"]
CONTRASTIVE_ONLY = [
    "distill.teachers=[]",
    "distill.similarity_weight=0",
    "distill.feature_weight=0",
    "distill.contrastive_weight=1",
]
NOT_INHERITED = ["model.inherit.from_model=", "model.text.freeze=[]"]
WITHOUT_DISTILLATION = [*CONTRASTIVE_ONLY, *NOT_INHERITED]


def train(name: str, config: Path, overrides: list[str], args, runs: Path) -> Path:
    """Train one run into ``runs/name`` (kept if its final checkpoint exists); its directory."""
    out = runs / name
    if not finished(out):
        print(f"[{name}] training ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        mclip(
            [
                "train",
                "--config",
                str(config),
                "--overwrite",
                f"train.out_dir={out}",
                f"data.train_shards={args.data / 'train'}",
                f"train.threads={args.threads}",
                *overrides,
                *args.set,
            ],
            args.threads,
            runs / f"{name}.train.log",
        )
        print(
            f"[{name}] trained in {time.perf_counter() - started:.0f} s",
            file=sys.stderr,
            flush=True,
        )
    return out


def evaluate_run(run: Path, args) -> dict:
    """Mean zero-shot acc@1 and retrieval R@1 (in %) of one run over the suite's languages."""
    rows = evaluate(
        run,
        SUITE,
        args.data,
        run / "eval",
        args.threads,
        ["--limit", args.eval_limit] if args.eval_limit else [],
    )
    acc1 = statistics.mean(metric(rows, "relations", "acc@1").values())
    t2i = statistics.mean(metric(rows, "relations_retrieval", "text_to_image_R@1").values())
    i2t = statistics.mean(metric(rows, "relations_retrieval", "image_to_text_R@1").values())
    return {
        "acc@1": acc1,
        "t2i R@1": t2i,
        "i2t R@1": i2t,
        "R@1": (t2i + i2t) / 2,
        "parameters": parameters(run),
    }


def summary(rows: list[dict], metric: str) -> dict:
    """Mean and spread (max - min) of one metric over seeds."""
    values = [row[metric] for row in rows]
    return {"mean": statistics.mean(values), "spread": max(values) - min(values), "values": values}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=ROOT / "demo_hard_data",
        help="hard demo data (written here if absent)",
    )
    parser.add_argument(
        "--runs",
        type=Path,
        default=ROOT / "runs" / "bench_distill",
        help="where the teacher, embeddings and students go",
    )
    parser.add_argument("--teacher", type=Path, help="a trained teacher run (default: train one)")
    parser.add_argument("--teacher-steps", type=int, default=1200)
    parser.add_argument(
        "--student-config", type=Path, default=ROOT / "configs" / "demo_distill.yaml"
    )
    parser.add_argument("--student-steps", type=int, default=1200)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument(
        "--offline",
        action="store_true",
        help="embed the training set with the teacher once (mclip distill embed) "
        "instead of running it during training",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="config overrides for every training run (e.g. train.batch_size=16)",
    )
    parser.add_argument("--eval-limit", type=int, help="evaluate on the first N images only")
    parser.add_argument(
        "--inherit-only",
        action="store_true",
        help="also train the student with the teacher's inherited, frozen text "
        "tower and the contrastive loss alone (what the KD terms add)",
    )
    parser.add_argument(
        "--own-text",
        action="store_true",
        help="also distil into the student with its own text tower (random "
        "init, trained; feature KD on both towers; nothing inherited)",
    )
    parser.add_argument("--out", type=Path, default=Path("bench_distill.json"))
    args = parser.parse_args()
    args.runs.mkdir(parents=True, exist_ok=True)
    seeds = [int(seed) for seed in args.seeds.split(",")]

    if not (args.data / "dataset.json").exists():
        print(f"writing the hard demo data to {args.data} ...", file=sys.stderr, flush=True)
        mclip(
            ["data", "demo", "--level", "hard", "--out", str(args.data)],
            args.threads,
            args.runs / "data.log",
        )
    teacher = args.teacher or train(
        "teacher",
        ROOT / "configs" / "demo.yaml",
        [
            *HARD_LEVEL,
            f"train.steps={args.teacher_steps}",
            f"train.warmup_steps={min(80, args.teacher_steps // 10)}",
            "train.save_every=500",
        ],
        args,
        args.runs,
    )
    teacher_spec = "{model: %s}" % teacher
    if args.offline:
        embeddings = args.runs / "teacher_embeddings"
        if not (embeddings / "done").exists():
            print("embedding the training set with the teacher ...", file=sys.stderr, flush=True)
            mclip(
                [
                    "distill",
                    "embed",
                    "--teacher",
                    str(teacher),
                    "--shards",
                    str(args.data / "train"),
                    "--out",
                    str(embeddings),
                    "--dtype",
                    "fp32",
                ],
                args.threads,
                args.runs / "embed.log",
            )
            (embeddings / "done").touch()
        teacher_spec = "{embeddings: %s}" % embeddings

    kinds = (
        ["distilled", "undistilled"]
        + (["inherited only"] if args.inherit_only else [])
        + (["distilled own text"] if args.own_text else [])
    )
    results = {"teacher": evaluate_run(teacher, args), **{kind: [] for kind in kinds}}
    for seed in seeds:
        common = [
            f"train.seed={seed}",
            f"train.steps={args.student_steps}",
            f"train.warmup_steps={min(40, args.student_steps // 10)}",
        ]
        distilled = [f"distill.teachers=[{teacher_spec}]", f"model.inherit.from_model={teacher}"]
        arms = {
            "distilled": distilled,
            "undistilled": WITHOUT_DISTILLATION,
            "inherited only": [*CONTRASTIVE_ONLY, f"model.inherit.from_model={teacher}"],
            "distilled own text": [
                f"distill.teachers=[{teacher_spec}]",
                *NOT_INHERITED,
                "distill.feature_towers=[image,text]",
            ],
        }
        for kind in kinds:
            run = train(
                f"{kind.replace(' ', '_')}_seed{seed}",
                args.student_config,
                [*common, *arms[kind]],
                args,
                args.runs,
            )
            results[kind].append({"seed": seed, **evaluate_run(run, args)})

    metrics = ["acc@1", "t2i R@1", "i2t R@1", "R@1"]
    print("\n| model | parameters | seeds | " + " | ".join(f"mean {m}" for m in metrics) + " |")
    print("|---|---|---|" + "---|" * len(metrics))
    row = results["teacher"]
    print(
        f"| teacher | {row['parameters'] / 1e6:.2f}M | - | "
        + " | ".join(f"{row[m]:.1f}" for m in metrics)
        + " |"
    )
    stats = {}
    for kind in kinds:
        stats[kind] = {m: summary(results[kind], m) for m in metrics}
        for row in results[kind]:
            print(
                f"| {kind} student | {row['parameters'] / 1e6:.2f}M | {row['seed']} | "
                + " | ".join(f"{row[m]:.1f}" for m in metrics)
                + " |"
            )
        print(
            f"| **{kind} student, mean (spread)** | | {args.seeds} | "
            + " | ".join(
                f"**{stats[kind][m]['mean']:.1f}** ({stats[kind][m]['spread']:.1f})"
                for m in metrics
            )
            + " |"
        )
    teacher_row, distilled, undistilled = (
        results["teacher"],
        stats["distilled"],
        stats["undistilled"],
    )
    margin = distilled["R@1"]["mean"] - undistilled["R@1"]["mean"]
    spread = max(distilled["R@1"]["spread"], undistilled["R@1"]["spread"])
    targets = {
        "student_parameters<=teacher/4": results["distilled"][0]["parameters"]
        <= teacher_row["parameters"] / 4,
        "distilled_acc@1>=95%_teacher": distilled["acc@1"]["mean"] >= 0.95 * teacher_row["acc@1"],
        "distilled_R@1>=95%_teacher": distilled["R@1"]["mean"] >= 0.95 * teacher_row["R@1"],
        "R@1_gain>seed_spread": margin > spread,
    }
    for kind, base, name in (
        ("distilled", "inherited only", "KD_gain_over_inherited_only"),
        ("distilled own text", "undistilled", "KD_gain_own_text"),
    ):
        if kind in stats and base in stats:  # what the KD terms add on top of the other arm
            gain = stats[kind]["R@1"]["mean"] - stats[base]["R@1"]["mean"]
            gap = max(stats[kind]["R@1"]["spread"], stats[base]["R@1"]["spread"])
            print(
                f"{kind} - {base}: R@1 {gain:+.1f} points, acc@1 "
                f"{stats[kind]['acc@1']['mean'] - stats[base]['acc@1']['mean']:+.1f}; "
                f"largest seed spread {gap:.1f}"
            )
            targets[f"{name}>seed_spread"] = gain > gap
    print(
        f"\ndistilled / teacher: acc@1 {distilled['acc@1']['mean'] / teacher_row['acc@1']:.1%}, "
        f"R@1 {distilled['R@1']['mean'] / teacher_row['R@1']:.1%}; R@1 gain over undistilled "
        f"{margin:+.1f} points, largest seed spread {spread:.1f}"
    )
    write_report(args, targets, {"results": results, "summary": stats})


if __name__ == "__main__":
    main()
