"""matplotlib for the report's charts: the Agg backend (no display needed) and PNG files written
whole (:mod:`mclip.outputs`)."""

from __future__ import annotations

from pathlib import Path

from mclip.outputs import write_atomically


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (imported on first use: plotting is optional)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path) -> None:
    """Write ``fig`` as a PNG to ``path`` whole or not at all (:mod:`mclip.outputs`), then
    close it."""
    try:
        write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    finally:
        pyplot().close(fig)
