"""Percentile-bootstrap intervals and paired bootstrap comparisons from per-sample ranks.

Interval: resample the samples of a view (images, or captions for text->image retrieval) with
replacement, recompute the metric, and take the 2.5th and 97.5th percentiles of the
``n_resamples`` values (Efron & Tibshirani, "An Introduction to the Bootstrap", 1993, ch. 13).
Paired comparison: resample the *same* samples for both models and take the interval of the
difference; a difference is significant at 95% when that interval excludes 0 (paired bootstrap
resampling, Koehn, EMNLP 2004).

No resample is materialised as an index list. For a mean of 0/1 hits, the number of hits in a
resample of n from n is Binomial(n, hits / n) — the same distribution as drawing n indices — so a
resample costs O(1) instead of O(n). Mean per-class recall draws the class sizes of a resample
from a multinomial and each class's hits from a binomial; paired metrics draw the joint outcomes
(hit / miss of model A x model B) the same way. Each (seed, task, language, metric) has its own
generator, so a number does not depend on which other languages or metrics were computed.
"""

from __future__ import annotations

from typing import Any
import zlib

import numpy as np

from mclip.eval.samples import SampleRanks, metric_spec

CONFIDENCE = 0.95


def generator(seed: int, *names: str) -> np.random.Generator:
    """A generator determined by ``seed`` and ``names`` (task, language, metric)."""
    return np.random.default_rng([seed] + [zlib.crc32(name.encode("utf-8")) for name in names])


def _hits(view: SampleRanks, k: int | None) -> np.ndarray:
    return view.ranks < (1 if k is None else k)


def _labels(view: SampleRanks) -> np.ndarray:
    """The class labels mean per-class recall needs; a view without them is a caller's error."""
    if view.labels is None:
        raise ValueError("mean per-class recall needs the samples' class labels (view.labels)")
    return view.labels


def _percentiles(values: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def resampled_metric(
    view: SampleRanks, k: int | None, n_resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """The metric on ``n_resamples`` bootstrap resamples of ``view`` [n_resamples].

    ``k`` set: the fraction of ranks below k (acc@k, R@k). ``k`` None: mean per-class recall
    (needs ``view.labels``), averaged over the classes present in each resample.
    """
    n, hits = len(view), _hits(view, k)
    if k is not None:
        return rng.binomial(n, hits.mean(), size=n_resamples) / n
    classes, labels = np.unique(_labels(view), return_inverse=True)
    support = np.bincount(labels, minlength=len(classes))
    correct = np.bincount(labels[hits], minlength=len(classes))
    sizes = rng.multinomial(n, support / n, size=n_resamples)  # [R, C]
    resampled = rng.binomial(sizes, correct / support)  # [R, C]
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(sizes > 0, resampled / np.maximum(sizes, 1), np.nan)
    means: np.ndarray = np.nanmean(recall, axis=1)
    return means


def interval(
    view: SampleRanks,
    metric: str,
    n_resamples: int,
    rng: np.random.Generator,
    confidence: float = CONFIDENCE,
) -> tuple[float, float]:
    """Percentile interval (low, high) of ``metric`` (e.g. ``acc@1``), fractions in [0, 1]."""
    spec = metric_spec(metric)
    if spec is None:
        raise ValueError(f"'{metric}' is not a per-sample metric; no interval")
    return _percentiles(resampled_metric(view, spec[1], n_resamples, rng), confidence)


def language_intervals(
    metrics: dict[str, Any],
    views: dict[str, SampleRanks],
    n_resamples: int,
    seed: int,
    task: str,
    language: str,
    confidence: float = CONFIDENCE,
) -> dict[str, Any]:
    """{metric: [low, high]} for every per-sample metric in ``metrics`` that has a value and whose
    view is in ``views``."""
    out = {}
    for metric, value in metrics.items():
        spec = metric_spec(metric)
        if spec is None or value is None or spec[0] not in views or not len(views[spec[0]]):
            continue
        rng = generator(seed, task, language, metric)
        out[metric] = list(interval(views[spec[0]], metric, n_resamples, rng, confidence))
    return out


def resampled_difference(
    a: SampleRanks, b: SampleRanks, k: int | None, n_resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """metric(A) - metric(B) on ``n_resamples`` paired resamples [n_resamples].

    ``a`` and ``b`` must hold the same samples in the same order (equal ``ids``).
    """
    hits_a, hits_b = _hits(a, k), _hits(b, k)
    n = len(a)
    if k is not None:
        better, worse = np.mean(hits_a & ~hits_b), np.mean(~hits_a & hits_b)
        counts = rng.multinomial(n, [better, worse, 1.0 - better - worse], size=n_resamples)
        return (counts[:, 0] - counts[:, 1]) / n
    classes, labels = np.unique(_labels(a), return_inverse=True)
    n_classes = len(classes)
    support = np.bincount(labels, minlength=n_classes)
    outcome = 2 * hits_a.astype(np.int64) + hits_b  # 0 none, 1 B, 2 A, 3 both
    joint = np.bincount(labels * 4 + outcome, minlength=4 * n_classes).reshape(n_classes, 4)
    sizes = rng.multinomial(n, support / n, size=n_resamples)  # [R, C]
    drawn = rng.multinomial(sizes, joint / support[:, None])  # [R, C, 4]
    with np.errstate(invalid="ignore", divide="ignore"):
        diff = np.where(sizes > 0, (drawn[..., 2] - drawn[..., 1]) / np.maximum(sizes, 1), np.nan)
    means: np.ndarray = np.nanmean(diff, axis=1)
    return means


def paired_comparison(
    a: SampleRanks,
    b: SampleRanks,
    metric: str,
    n_resamples: int,
    rng: np.random.Generator,
    confidence: float = CONFIDENCE,
) -> dict[str, Any]:
    """Paired bootstrap of metric(A) - metric(B).

    Returns {"difference": point estimate, "interval": [low, high], "p_value": two-sided
    bootstrap p, "significant": the interval excludes 0}. Raises ValueError when the two views did
    not score the same samples (different ``ids``).
    """
    spec = metric_spec(metric)
    if spec is None:
        raise ValueError(f"'{metric}' is not a per-sample metric; no paired comparison")
    if a.ids != b.ids or len(a) != len(b):
        raise ValueError(
            f"'{metric}': the two results scored different samples "
            f"({len(a)} vs {len(b)}); a paired comparison needs the same data"
        )
    k = spec[1]
    point = _point(a, k) - _point(b, k)
    diffs = resampled_difference(a, b, k, n_resamples, rng)
    low, high = _percentiles(diffs, confidence)
    p_value = min(1.0, 2 * min(float(np.mean(diffs <= 0)), float(np.mean(diffs >= 0))))
    return {
        "difference": point,
        "interval": [low, high],
        "p_value": float(p_value),
        "significant": bool(low > 0 or high < 0),
    }


def _point(view: SampleRanks, k: int | None) -> float:
    hits = _hits(view, k)
    if k is not None:
        return float(hits.mean())
    classes, labels = np.unique(_labels(view), return_inverse=True)
    support = np.bincount(labels, minlength=len(classes))
    return float(np.mean(np.bincount(labels[hits], minlength=len(classes)) / support))
