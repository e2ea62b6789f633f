"""Curating by score on the demo (issue 23, item 5): a trained model ranks mismatched captions below
the true ones, and a model trained on the filtered copy beats one trained on the noisy copy.

1. The demo data (``mclip data demo``) unless ``--data`` holds it, and a scorer: the demo model
   (``configs/demo.yaml``) trained on it, unless ``--scorer`` names a run.
2. A noisy copy of the training shards: each sample keeps one phrasing per language, and
   ``--noise`` (30%) of the samples get the captions of a sample of another class instead (in
   every language, so the noise is as multilingual as the data).
3. ``mclip data score`` of the noisy copy with the scorer: the AUC of a caption's score for "its
   caption is the true one" (1 - noise of the captions are), per language and over all.
4. ``mclip data filter --keep-fraction`` 1 - noise (each language's quantile), and for each seed
   two demo models trained with the same steps: on the noisy copy and on the filtered copy; both
   evaluated on ``eval_suites/demo.yaml`` (mean zero-shot acc@1 and t2i R@1 over 12 languages).

Targets: AUC >= 0.95 over all captions; the filtered models' mean acc@1 above the noisy ones' by
more than the larger seed spread. Finished steps are reused. Prints tables and writes JSON.

    python scripts/bench_curation.py                   # ~25 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

from _bench_runs import ROOT, evaluate, finished, mclip, metric, write_report

SUITE = ROOT / "eval_suites" / "demo.yaml"


def train(name: str, shards: Path, args, extra: list[str] = ()) -> Path:
    """A demo model on ``shards`` into ``args.runs / name`` unless it finished already."""
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
                f"data.train_shards={shards}",
                f"train.steps={args.steps}",
                f"train.threads={args.threads}",
                *extra,
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


def noisy_copy(source: Path, out: Path, noise: float, seed: int = 0) -> dict[str, bool]:
    """Write the noisy copy of ``source``'s training shards into ``out``; {key: its captions are
    the true ones}."""
    import webdataset as wds

    from mclip.data.shards import SkipCounter, expand_shards, iter_raw_samples

    labels_path = out / "labels.json"
    if labels_path.exists():
        return json.loads(labels_path.read_text())
    rng = random.Random(seed)
    samples = list(iter_raw_samples(expand_shards(str(source / "train")), SkipCounter()))
    metas = [json.loads(s["json"]) for s in samples]
    out.mkdir(parents=True, exist_ok=True)
    labels = {}
    with wds.ShardWriter(str(out / "shard-%06d.tar"), maxcount=1000, verbose=0) as sink:
        for sample, meta in zip(samples, metas):
            own = {lang: [rng.choice(texts)] for lang, texts in meta["captions"].items()}
            true = rng.random() >= noise
            if not true:  # the captions of another class's image
                while True:
                    other = metas[rng.randrange(len(metas))]
                    if other.get("label") != meta.get("label"):
                        break
                own = {lang: [rng.choice(texts)] for lang, texts in other["captions"].items()}
            labels[sample["__key__"]] = true
            sink.write(
                {
                    "__key__": sample["__key__"],
                    "jpg": sample["jpg"],
                    "json": json.dumps({**meta, "captions": own}).encode("utf-8"),
                }
            )
    labels_path.write_text(json.dumps(labels))
    return labels


def auc(scores: list[float], positive: list[bool]) -> float:
    """The area under the ROC curve of ``scores`` for ``positive`` (scikit-learn's)."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(positive, scores))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT / "demo_data")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "bench_curation")
    parser.add_argument("--scorer", type=Path, help="a trained demo run (default: train one)")
    parser.add_argument("--noise", type=float, default=0.3)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--eval-limit", type=int)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=Path("bench_curation.json"))
    args = parser.parse_args()
    args.runs.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    if not (args.data / "train").is_dir():
        mclip(["data", "demo", "--out", args.data], args.threads, args.runs / "data.log")
    scorer = args.scorer or train("scorer", args.data / "train", args)
    noisy = args.runs / "noisy"
    labels = noisy_copy(args.data, noisy, args.noise)
    scores_dir = args.runs / "scores"
    if not (scores_dir / "quantiles.csv").exists():
        print("scoring the noisy copy ...", file=sys.stderr, flush=True)
        mclip(
            ["data", "score", noisy, "--model", scorer, "--out", scores_dir],
            args.threads,
            args.runs / "score.log",
        )
    filtered = args.runs / "filtered"
    if not (filtered / "done").exists():
        mclip(
            [
                "data",
                "filter",
                noisy,
                "--scores",
                scores_dir,
                "--out",
                filtered,
                "--keep-fraction",
                f"{1 - args.noise}",
            ],
            args.threads,
            args.runs / "filter.log",
        )
        (filtered / "done").touch()

    from mclip.data.score import PARTS_DIR, _pyarrow

    pa = _pyarrow()
    by_language: dict[str, tuple[list, list]] = {}
    for part in sorted((scores_dir / PARTS_DIR).glob("*.parquet")):
        data = pa.parquet.read_table(str(part), columns=["key", "language", "score"]).to_pydict()
        for key, language, score in zip(data["key"], data["language"], data["score"]):
            values, truth = by_language.setdefault(language, ([], []))
            values.append(score)
            truth.append(labels[key])
    every = (
        [s for v, _ in by_language.values() for s in v],
        [t for _, t in by_language.values() for t in t],
    )
    aucs = {lang: auc(*pair) for lang, pair in sorted(by_language.items())}
    overall = auc(*every)

    extra = ["--limit", args.eval_limit] if args.eval_limit else []
    results = {"noisy": [], "filtered": []}
    for seed in seeds:
        for arm, shards in (("noisy", noisy), ("filtered", filtered)):
            run = train(f"{arm}_seed{seed}", shards, args, [f"train.seed={seed}"])
            rows = evaluate(run, SUITE, args.data, run / "eval", args.threads, extra)
            results[arm].append(
                {
                    "seed": seed,
                    "acc@1": statistics.mean(metric(rows, "shapes", "acc@1").values()),
                    "t2i R@1": statistics.mean(
                        metric(rows, "shapes_retrieval", "text_to_image_R@1").values()
                    ),
                }
            )

    print(
        f"\nAUC of the scorer's score for 'the caption is the sample's own' ({args.noise:.0%} "
        f"of the samples mismatched): {overall:.4f} over {len(every[0])} captions"
    )
    print("\n| language | " + " | ".join(aucs) + " |\n|---|" + "---|" * len(aucs))
    print("| AUC | " + " | ".join(f"{v:.3f}" for v in aucs.values()) + " |")
    print(f"\nDemo models trained {args.steps} steps (mean over 12 languages, %)\n")
    print("| training data | seed | acc@1 | t2i R@1 |\n|---|---|---|---|")
    stats = {}
    for arm, rows in results.items():
        for row in rows:
            print(f"| {arm} | {row['seed']} | {row['acc@1']:.1f} | {row['t2i R@1']:.1f} |")
        values = [r["acc@1"] for r in rows]
        stats[arm] = {"mean": statistics.mean(values), "spread": max(values) - min(values)}
        print(
            f"| **{arm}, mean (spread)** | {args.seeds} | **{stats[arm]['mean']:.1f}** "
            f"({stats[arm]['spread']:.1f}) | |"
        )
    gain = stats["filtered"]["mean"] - stats["noisy"]["mean"]
    spread = max(s["spread"] for s in stats.values())
    print(f"\nfiltered - noisy: acc@1 {gain:+.1f} points, largest seed spread {spread:.1f}")
    write_report(
        args,
        {"AUC>=0.95": overall >= 0.95, "filtered_beats_noisy>spread": gain > spread},
        {"auc": {"all": overall, **aucs}, "results": results, "summary": stats},
    )


if __name__ == "__main__":
    main()
