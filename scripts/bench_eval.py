"""Benchmark evaluation metrics: mclip against the full-matrix approach of CLIP_benchmark.

Cases, all on random L2-normalised fp32 embeddings (seeded; d = 512; encoding excluded):

- retrieval_10k:   10,000 images x 50,000 captions (5 per image, text_to_image = arange(M) // 5)
- retrieval_100k: 100,000 images x 500,000 captions (the full matrix does not fit: reported so)
- classification_babel: Babel-ImageNet-sized zero-shot classification: 50,000 images (50 per
  class, the ImageNet validation layout) x 298 languages, each language with a seeded random
  subset of 10 to 1000 classes and the images of those classes; class embeddings are random
  (text encoding excluded) and are made before the clock starts.

- encoding: the texts/s and images/s rows. A seeded random-init open_clip ViT (64 px, patch 16,
  text width 128, 4 layers; ``scripts/_eval_encoding.py``) encodes 20,000 distinct prompts,
  4,000 of each of CLIP_benchmark's five languages (en, ar, cn, jp, it; ImageNet's class names x
  templates, the first in file order), with open_clip's plain ``tokenizer`` + ``encode_text``
  and with mclip's text path in fp32 and bf16, and 500 JPEGs of 500 x 375 px with mclip's image
  path with 0 decoding workers and with the default (on the CPU: the usable CPUs). One child
  process, ``--threads`` threads.

Implementations: ``mclip`` (``mclip.eval.retrieval.retrieval_metrics``; for classification
``image @ classifier.T`` -> ``true_class_ranks`` -> ``metrics_from_ranks`` per language) and
``full_matrix``, the computation of CLIP_benchmark (clip_benchmark/metrics/zeroshot_retrieval.py
and zeroshot_classification.py) redone on embeddings: the whole caption x image score matrix, a
boolean positive-pair matrix, per batch of rows ``topk`` + one-hot counting of true positives for
each k; for classification ``100 * image @ classifier`` per language, top-k accuracy from ``topk``
and mean per-class recall from scikit-learn's ``balanced_accuracy_score`` of the argmax. Its
classification logits are one matrix product per language (CLIP_benchmark computes them per image
batch while it encodes; one product is its fastest form).

Each (case, implementation) runs in its own process, so its peak memory (VmHWM: the whole
process, inputs included) is its own. The full matrix runs only where its estimated memory is
under 60% of RAM. "identical" compares every metric of the two implementations exactly (recall@1,
5, 10 both directions; acc@1, acc@5 and mean per-class recall of every language; the last to
1e-12, as it is a float average summed in a different order). The classification reference is
also run, after its clock and memory readings, without CLIP_benchmark's 100x scaling of the image
embeddings before the product: that scaling rounds the logits differently, so a near-tie a few
ulps wide can order the other way; where results differ, the table says whether they are
identical without it.

Exact duplicates are inserted (a few captions repeated for the same image, a few images repeated
within their class) so that mclip's duplicate handling runs; they are the kind whose ranking does
not depend on a tie rule. Ties between a positive and a negative are left to the tests
(tests/test_metrics.py): torch.topk, which CLIP_benchmark uses, orders equal scores arbitrarily.

    python scripts/bench_eval.py                                  # all cases, all cores
    python scripts/bench_eval.py --cases retrieval_10k --threads 2
    python scripts/bench_eval.py --cases encoding --threads 2            # texts/s, images/s
    python scripts/bench_eval.py --quick --json /tmp/bench_eval.json   # small sizes, seconds
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _eval_encoding import (
    encoding_table,
    throughput,
    write_class_texts,
    write_images,
    write_model,
)

CASES = ("retrieval_10k", "retrieval_100k", "classification_babel", "encoding")
IMPLS = ("mclip", "full_matrix")
DIM = 512
CAPTIONS_PER_IMAGE = 5
RECALL_KS = (1, 5, 10)
CLIP_BENCHMARK_BATCH = 64  # CLIP_benchmark's default --batch_size: its rows per recall batch
FIT_FRACTION = 0.6  # the full matrix runs where its estimated memory is under this part of RAM
MEAN_TOLERANCE = 1e-12  # for mean per-class recall: float averages summed in different orders

# sizes: retrieval (images,), classification (classes, images per class, languages, min classes)
SIZES = {
    "full": {
        "retrieval_10k": 10_000,
        "retrieval_100k": 100_000,
        "classification_babel": (1000, 50, 298, 10),
        "encoding": (20_000, 500),  # prompts, images
    },
    "quick": {
        "retrieval_10k": 600,
        "retrieval_100k": 1500,
        "classification_babel": (60, 10, 6, 10),
        "encoding": (200, 20),
    },
}


# --- measurements ----------------------------------------------------------------------------


def _status_bytes(field: str) -> int:
    """A memory field of /proc/self/status (VmHWM: peak resident set, VmRSS: now), in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}: this benchmark needs Linux")


def ram_bytes() -> int:
    """Physical memory of the machine, in bytes."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def full_matrix_bytes(case: str, size) -> int:
    """Estimated peak bytes of the full-matrix implementation of ``case`` (inputs included)."""
    if case.startswith("retrieval"):
        n = size
        m = CAPTIONS_PER_IMAGE * n
        # fp32 scores + bool positive pairs + inputs + the widest batch's one-hot int64 temporaries
        return m * n * 5 + (n + m) * DIM * 4 + 3 * CLIP_BENCHMARK_BATCH * max(RECALL_KS) * m * 8
    n_classes, per_class, _, _ = size
    images = n_classes * per_class
    return images * DIM * 4 * 2 + images * n_classes * 4 * 3


# --- data ------------------------------------------------------------------------------------


def retrieval_data(n_images: int, seed: int = 0):
    """Images [N, d], captions [5N, d] (normalised, fp32) and text_to_image [5N].

    Each caption is its image plus Gaussian noise (norm 5) so that recall@k is neither 0 nor 1;
    1% of images have their second caption equal to their first (an exact duplicate). Made in
    pieces so that making the data needs no memory beyond the result.
    """
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    images = F.normalize(torch.randn(n_images, DIM, generator=g), dim=-1)
    n_texts = CAPTIONS_PER_IMAGE * n_images
    text_to_image = torch.arange(n_texts) // CAPTIONS_PER_IMAGE
    texts = torch.empty(n_texts, DIM)
    piece = 65536
    for start in range(0, n_texts, piece):
        owner = text_to_image[start : start + piece]
        noise = torch.randn(len(owner), DIM, generator=g) * (5.0 / math.sqrt(DIM))
        texts[start : start + piece] = F.normalize(images[owner] + noise, dim=-1)
    repeated = torch.randperm(n_images, generator=g)[: max(1, n_images // 100)]
    texts[repeated * CAPTIONS_PER_IMAGE + 1] = texts[repeated * CAPTIONS_PER_IMAGE]
    return images, texts, text_to_image


def classification_data(size, layout: str, seed: int = 0):
    """Images [C*P, d] with labels [C*P] (P per class, in class order) and one classifier per
    language, with the language's classes (sorted class indices [C_l]).

    Classifiers are [C_l, d] for ``layout="rows"`` (mclip) and [d, C_l] for ``"columns"``
    (CLIP_benchmark stacks class embeddings as columns); the values are the same. Images are their
    class prototype plus noise; each language's class embeddings are the prototypes plus its own
    noise. 1% of classes have their second image equal to their first.
    """
    import torch
    import torch.nn.functional as F

    n_classes, per_class, n_languages, min_classes = size
    g = torch.Generator().manual_seed(seed)
    prototypes = F.normalize(torch.randn(n_classes, DIM, generator=g), dim=-1)
    labels = torch.arange(n_classes * per_class) // per_class
    images = F.normalize(
        prototypes[labels] + torch.randn(len(labels), DIM, generator=g) * (4.0 / math.sqrt(DIM)),
        dim=-1,
    )
    repeated = torch.randperm(n_classes, generator=g)[: max(1, n_classes // 100)]
    images[repeated * per_class + 1] = images[repeated * per_class]
    languages = []
    for _ in range(n_languages):
        n_kept = int(torch.randint(min_classes, n_classes + 1, (1,), generator=g))
        kept = torch.randperm(n_classes, generator=g)[:n_kept].sort().values
        classifier = F.normalize(
            prototypes[kept] + torch.randn(n_kept, DIM, generator=g) * (1.0 / math.sqrt(DIM)),
            dim=-1,
        )
        languages.append((kept, classifier.T.contiguous() if layout == "columns" else classifier))
    return images, labels, languages


def _language_images(labels, kept, n_classes: int):
    """Which images belong to the kept classes (bool [N]) and their labels renumbered [N_l]."""
    import torch

    remap = torch.full((n_classes,), -1, dtype=torch.long)
    remap[kept] = torch.arange(len(kept))
    new_labels = remap[labels]
    mask = new_labels >= 0
    return mask, new_labels[mask]


# --- the CLIP_benchmark computation, on embeddings ---------------------------------------------


def full_matrix_retrieval(
    images, texts, text_to_image, ks=RECALL_KS, batch_size: int = CLIP_BENCHMARK_BATCH
) -> dict[str, float]:
    """Recall@k both ways from the whole caption x image score matrix, as CLIP_benchmark does.

    images [N, d], texts [M, d], text_to_image [M]. Keys as mclip's retrieval_metrics.
    """
    import torch

    scores = texts @ images.t()  # [M, N], fp32: the full matrix
    positive = torch.zeros_like(scores, dtype=torch.bool)
    positive[torch.arange(len(scores)), text_to_image] = True
    out = {}
    for k in ks:
        out[f"text_to_image_R@{k}"] = _hits_mean(scores, positive, k, batch_size)
        out[f"image_to_text_R@{k}"] = _hits_mean(scores.t(), positive.t(), k, batch_size)
    return out


def _hits_mean(scores, positive, k: int, batch_size: int) -> float:
    """Fraction of rows with a positive column among their k best, a batch of rows at a time;
    the hits are counted from a one-hot [batch, k, columns] of the top-k columns."""
    import torch
    import torch.nn.functional as F

    recalls = []
    for start in range(0, scores.shape[0], batch_size):
        rows, pos = scores[start : start + batch_size], positive[start : start + batch_size]
        top = torch.topk(rows, k, dim=1).indices
        one_hot = F.one_hot(top, num_classes=rows.shape[1])  # [b, k, columns] int64
        true_positives = (one_hot * pos[:, None, :]).sum(dim=(1, 2))
        recalls.append(true_positives / pos.sum(dim=1))
    return (torch.cat(recalls) > 0).float().mean().item()


def full_matrix_classification(
    images, labels, classifier_columns, scale: float = 100.0
) -> dict[str, float]:
    """acc@1, acc@5 (top-k, when there are >= 5 classes) and mean per-class recall (balanced
    accuracy of the argmax), as CLIP_benchmark computes them; classifier_columns [d, C].

    CLIP_benchmark's logits are ``100. * image_features @ classifier``: the images are scaled
    before the product, which rounds differently from an unscaled product (``scale=1``).
    """
    from sklearn.metrics import balanced_accuracy_score

    logits = scale * images @ classifier_columns
    predicted = logits.argmax(dim=1)
    n_classes = classifier_columns.shape[1]
    ks = (1, 5) if n_classes >= 5 else (1,)
    top = logits.topk(max(ks), 1, True, True).indices.t()  # [k, N]
    correct = top == labels[None, :]
    out = {f"acc@{k}": correct[:k].sum().item() / len(labels) for k in ks}
    out.setdefault("acc@5", None)
    out["mean_per_class_recall"] = float(balanced_accuracy_score(labels.numpy(), predicted.numpy()))
    return out


def mclip_classification(images, labels, classifier_rows) -> dict[str, float]:
    """mclip's zero-shot metrics of one language: classifier_rows [C, d]."""
    from mclip.eval.zeroshot import metrics_from_ranks, true_class_ranks

    logits = images @ classifier_rows.T
    ranks = true_class_ranks(logits, labels)
    return metrics_from_ranks(ranks, labels, classifier_rows.shape[0], top_k=(1, 5))


# --- one case in this process --------------------------------------------------------------------


def run_case(case: str, impl: str, size, threads: int) -> dict:
    """Make the data, warm up on a tiny input, then time ``impl`` once on ``case``: a result row
    with seconds, peak_bytes (the process's peak resident memory, inputs included),
    extra_peak_bytes (above the memory in use when the clock started) and the metrics."""
    import torch

    torch.set_num_threads(threads)
    run = _run_retrieval if case.startswith("retrieval") else _run_classification
    row = run(impl, size)
    return {"case": case, "impl": impl, "status": "ok", "threads": threads, **row}


def _timed(fn, *args) -> tuple[object, dict]:
    """fn(*args) once, with its seconds, peak_bytes and extra_peak_bytes."""
    base = _status_bytes("VmRSS")
    start = time.perf_counter()
    out = fn(*args)
    seconds = time.perf_counter() - start
    peak = _status_bytes("VmHWM")
    return out, {"seconds": seconds, "peak_bytes": peak, "extra_peak_bytes": max(peak - base, 0)}


def _run_retrieval(impl: str, n_images: int) -> dict:
    from mclip.eval.retrieval import retrieval_metrics

    images, texts, text_to_image = retrieval_data(n_images)
    fn = retrieval_metrics if impl == "mclip" else full_matrix_retrieval
    fn(*retrieval_data(64, seed=1))  # warm-up: thread pool, kernels
    metrics, row = _timed(fn, images, texts, text_to_image)
    return {
        **row,
        "n_images": len(images),
        "n_texts": len(texts),
        "metrics": {k: v for k, v in metrics.items() if "@" in k},
    }


def _run_classification(impl: str, size) -> dict:
    layout = "rows" if impl == "mclip" else "columns"
    fn = mclip_classification if impl == "mclip" else full_matrix_classification
    images, labels, languages = classification_data(size, layout)
    _classify_languages(fn, *classification_data((20, 2, 1, 10), layout, seed=1), 20)  # warm-up
    (per_language, kept_images), row = _timed(
        _classify_languages, fn, images, labels, languages, size[0]
    )
    metrics = {"per_language": per_language}
    metrics.update(
        {
            key: _mean([m[key] for m in per_language])
            for key in ("acc@1", "acc@5", "mean_per_class_recall")
        }
    )
    row.update(
        n_images=len(images),
        n_languages=len(languages),
        classes_per_language=[len(kept) for kept, _ in languages],
        images_per_language=kept_images,
        metrics=metrics,
    )
    if impl == "full_matrix":  # after the readings: without the 100x, to explain differences

        def unscaled(x, y, classifier):
            return full_matrix_classification(x, y, classifier, scale=1.0)

        row["metrics_unscaled"] = {
            "per_language": _classify_languages(unscaled, images, labels, languages, size[0])[0]
        }
    return row


def _classify_languages(fn, images, labels, languages, n_classes: int) -> tuple[list, list]:
    """fn(kept images, their renumbered labels, classifier) per language: (metrics per language,
    number of kept images per language)."""
    per_language, kept_images = [], []
    for kept, classifier in languages:
        mask, new_labels = _language_images(labels, kept, n_classes)
        per_language.append(fn(images[mask], new_labels, classifier))
        kept_images.append(len(new_labels))
    return per_language, kept_images


def _mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


# --- the driver ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    parser.add_argument("--impl", nargs="+", default=list(IMPLS), choices=IMPLS)
    parser.add_argument(
        "--threads",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="torch threads of each case (default: all cores)",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--json", default="bench_out/bench_eval.json", help="where to write JSON")
    parser.add_argument("--run-one", nargs=2, metavar=("CASE", "IMPL"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    sizes = SIZES["quick" if args.quick else "full"]

    if args.run_one:
        case, impl = args.run_one
        print(json.dumps(run_case(case, impl, sizes[case], args.threads)))
        return 0

    results, encoding = [], None
    for case in args.cases:
        if case == "encoding":
            encoding = encoding_throughput(*sizes[case], args.threads, args.quick)
            continue
        rows = [_run_child(case, impl, sizes[case], args) for impl in args.impl]
        _mark_identical(rows)
        for row in rows:
            print(_format_row(row), flush=True)
        results.extend(rows)

    if results:
        print("\n" + table(results))
    if encoding:
        print("\n" + encoding_table(encoding))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(
        json.dumps(
            {
                "quick": args.quick,
                "threads": args.threads,
                "ram_bytes": ram_bytes(),
                "results": results,
                "encoding": encoding,
            },
            indent=1,
        )
    )
    print(f"\nwrote {args.json}")
    return 0


def encoding_throughput(prompts: int, images: int, threads: int, quick: bool) -> dict:
    """The ``encoding`` case (see the module docstring): texts/s and images/s, in a child
    process, on a model, prompts and JPEGs written to a temporary folder."""
    languages = ["en"] if quick else ["en", "ar", "cn", "jp", "it"]
    with tempfile.TemporaryDirectory(prefix="bench_eval_encoding_") as folder:
        work = Path(folder)
        write_model(work / "model", quick)
        write_class_texts(work / "texts", languages, None, None)
        write_images(work, 10, max(1, images // 10), (64, 48) if quick else (500, 375))
        return throughput(
            work, work / "model", work / "texts", languages, prompts, work / "val", threads
        )


def _run_child(case: str, impl: str, size, args) -> dict:
    """Run one (case, implementation) in a fresh process; a row with a status if it cannot."""
    shape = (
        {"n_images": size, "n_texts": CAPTIONS_PER_IMAGE * size}
        if case.startswith("retrieval")
        else {"n_images": size[0] * size[1], "n_languages": size[2]}
    )
    if impl == "full_matrix":
        need = full_matrix_bytes(case, size)
        if need > FIT_FRACTION * ram_bytes():
            return {
                "case": case,
                "impl": impl,
                **shape,
                "status": f"does not fit (needs {need / 1e9:.0f} GB of "
                f"{ram_bytes() / 1e9:.0f} GB RAM)",
            }
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--run-one",
        case,
        impl,
        "--threads",
        str(args.threads),
    ] + (["--quick"] if args.quick else [])
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or [""])[-1]
        return {
            "case": case,
            "impl": impl,
            **shape,
            "status": f"failed (exit {proc.returncode}): {last[:160]}",
        }
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _differences(ours: dict, reference: dict) -> list[str]:
    """What differs between two rows' metrics, in words (empty: identical).

    Recalls and accuracies are compared exactly and a difference is given in queries or images;
    mean per-class recall is an average of fractions that the two implementations sum in different
    orders, so it is compared to 1e-12 (one image more or less changes it by >= 1e-5).
    """
    m, r = ours["metrics"], reference["metrics"]
    if "per_language" not in m:
        count = {"text_to_image": ours["n_texts"], "image_to_text": ours["n_images"]}
        return [
            f"{key} {m[key]:.6f} vs {r[key]:.6f} "
            f"({abs(m[key] - r[key]) * count[key.split('_R@')[0]]:.0f} queries)"
            for key in sorted(m)
            if m[key] != r[key]
        ]
    languages = list(zip(m["per_language"], r["per_language"], ours["images_per_language"]))
    out = []
    for key in ("acc@1", "acc@5", "mean_per_class_recall"):
        tolerance = MEAN_TOLERANCE if key == "mean_per_class_recall" else 0.0
        differing = [
            (x[key], y[key], n) for x, y, n in languages if _differ(x[key], y[key], tolerance)
        ]
        if not differing:
            continue
        gaps = [abs(x - y) for x, y, _ in differing if x is not None and y is not None]
        images = [abs(x - y) * n for x, y, n in differing if x is not None and y is not None]
        worst = round(max(images, default=0))
        by = (
            f"by at most {worst} image{'s' * (worst != 1)}"
            if key != "mean_per_class_recall"
            else f"by at most {max(gaps, default=0):.2g}"
        )
        out.append(f"{key} differs in {len(differing)} of {len(languages)} languages ({by})")
    return out


def _differ(x, y, tolerance: float) -> bool:
    if x is None or y is None:
        return (x is None) != (y is None)
    return abs(x - y) > tolerance


def _mark_identical(rows: list[dict]) -> None:
    """Set ``identical`` on mclip's row: True / False against the full matrix, None if that did
    not run; ``differences`` says what differs."""
    done = {r["impl"]: r for r in rows if r["status"] == "ok"}
    if "mclip" not in done:
        return
    ours = done["mclip"]
    if "full_matrix" not in done:
        ours["identical"] = None
        return
    reference = done["full_matrix"]
    ours["differences"] = _differences(ours, reference)
    ours["identical"] = not ours["differences"]
    if ours["differences"] and "metrics_unscaled" in reference:
        unscaled = _differences(ours, {"metrics": reference["metrics_unscaled"]})
        ours["differences"].append(
            "identical to CLIP_benchmark's computation without its 100x pre-scaling"
            if not unscaled
            else "without its 100x pre-scaling: " + "; ".join(unscaled)
        )


def _format_row(row: dict) -> str:
    if row["status"] != "ok":
        return f"{row['case']:<21} {row['impl']:<12} {row['status']}"
    return (
        f"{row['case']:<21} {row['impl']:<12} {row['seconds']:9.2f} s "
        f"{row['peak_bytes'] / 1e9:7.2f} GB peak  {_summary(row)}"
    )


def _summary(row: dict) -> str:
    m = row["metrics"]
    if "per_language" in m:
        return (
            f"mean acc@1={m['acc@1']:.4f} acc@5={m['acc@5']:.4f} "
            f"mpcr={m['mean_per_class_recall']:.4f}"
        )
    return " ".join(
        f"{k.replace('text_to_image', 't2i').replace('image_to_text', 'i2t')}={v:.4f}"
        for k, v in sorted(m.items())
    )


def table(results: list[dict]) -> str:
    """Markdown table: time, peak memory (whole process) and agreement with the full matrix."""
    lines = [
        "| case | size | implementation | time (s) | peak memory (GB) | identical to full matrix |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        size = _size_text(r)
        if r["status"] != "ok":
            lines.append(f"| {r['case']} | {size} | {r['impl']} | – | – | {r['status']} |")
            continue
        same = (
            {True: "yes", False: "no: " + "; ".join(r.get("differences", [])), None: "–"}[
                r.get("identical")
            ]
            if r["impl"] == "mclip"
            else "(reference)"
        )
        lines.append(
            f"| {r['case']} | {size} | {r['impl']} | {r['seconds']:.2f} | "
            f"{r['peak_bytes'] / 1e9:.2f} | {same} |"
        )
    return "\n".join(lines)


def _size_text(row: dict) -> str:
    if "n_languages" in row:
        return f"{row['n_images']} images x {row['n_languages']} languages"
    if "n_texts" in row:
        return f"{row['n_images']} x {row['n_texts']}"
    return ""


if __name__ == "__main__":
    sys.exit(main())
