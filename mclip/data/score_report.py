"""Per-language score histograms and quantiles of ``mclip data score``'s output.

A single threshold removes far more of some languages than of others (the model scores a
low-resource language's captions lower); ``histograms.png`` shows each language's distribution
with the LAION-5B thresholds (0.26, 0.28) marked, ``quantiles.csv`` gives per language the count,
mean, quantiles and the share each of those thresholds would remove, ``histograms.csv`` the
counts per bin.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from mclip.data.score import all_scores
from mclip.outputs import write_atomically

LAION_THRESHOLDS = (0.26, 0.28)
QUANTILES = (0.05, 0.10, 0.25, 0.50, 0.75, 0.90, 0.95)
MAX_PANELS = 40


def score_summary(scores: dict[str, list[float]]) -> list[dict]:
    """A row per language (most captions first): n, mean, the quantiles, and the share of its
    captions below each LAION threshold."""
    rows = []
    for language, values in sorted(scores.items(), key=lambda kv: -len(kv[1])):
        array = np.asarray(values, dtype=np.float64)
        row = {"language": language, "n": len(array), "mean": float(array.mean())}
        row.update({f"p{round(100 * q):02d}": float(np.quantile(array, q)) for q in QUANTILES})
        row.update({f"removed_below_{t}": float((array < t).mean()) for t in LAION_THRESHOLDS})
        rows.append(row)
    return rows


def write_score_report(scores_dir: str | Path, bins: int = 40) -> dict[str, Path]:
    """Write ``histograms.csv``, ``quantiles.csv`` and ``histograms.png`` into ``scores_dir``;
    returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores_dir = Path(scores_dir)
    scores = all_scores(scores_dir)
    summary = score_summary(scores)
    every = np.concatenate([np.asarray(v) for v in scores.values()]) if scores else np.zeros(1)
    edges = np.linspace(min(every.min(), 0.0), max(every.max(), 0.5), bins + 1)
    paths = {
        "quantiles": scores_dir / "quantiles.csv",
        "histograms": scores_dir / "histograms.csv",
        "plot": scores_dir / "histograms.png",
    }

    def write_quantiles(tmp: Path) -> None:
        with tmp.open("w", newline="") as handle:
            writer = csv.DictWriter(
                handle, fieldnames=list(summary[0]) if summary else ["language"]
            )
            writer.writeheader()
            writer.writerows(summary)

    def write_histograms(tmp: Path) -> None:
        with tmp.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["language", "bin_low", "bin_high", "count"])
            for row in summary:
                counts, _ = np.histogram(scores[row["language"]], bins=edges)
                writer.writerows(
                    [row["language"], f"{lo:.4f}", f"{hi:.4f}", int(c)]
                    for lo, hi, c in zip(edges[:-1], edges[1:], counts)
                )

    write_atomically(paths["quantiles"], write_quantiles)
    write_atomically(paths["histograms"], write_histograms)
    shown = summary[:MAX_PANELS]
    columns = min(4, max(len(shown), 1))
    rows = max((len(shown) + columns - 1) // columns, 1)
    fig, axes = plt.subplots(
        rows,
        columns,
        figsize=(3.2 * columns, 2.2 * rows),
        squeeze=False,
        sharex=True,
        layout="constrained",
    )
    for ax, row in zip(axes.flat, shown):
        ax.hist(scores[row["language"]], bins=edges, color="#4c72b0")
        for threshold, style in zip(LAION_THRESHOLDS, ("--", ":")):
            ax.axvline(threshold, color="#c44e52", linestyle=style, linewidth=1)
        ax.set_title(
            f"{row['language']} (n={row['n']}, {100 * row['removed_below_0.26']:.0f}% < 0.26)",
            fontsize=8,
        )
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(shown) :]:
        ax.axis("off")
    fig.suptitle("image-text score per caption language (dashed 0.26, dotted 0.28)", fontsize=9)
    write_atomically(paths["plot"], lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)
    return paths
