"""Where a language's gap comes from: its image-task score read beside its bitext score.

A language that scores low on an image task may have a text tower that does not align it with
the pivot language at all, or one that aligns it but an image side that does not carry the
alignment over. With a ``bitext_retrieval`` task (:mod:`mclip.eval.bitext_retrieval`) and an
image task of the same languages, :func:`alignment_rows` puts, per language, the image task's main
metric relative to the pivot's beside ``bitext_acc@1`` and reads them:

* ``on par``: the image score is at least :data:`ON_PAR` of the pivot's;
* ``image side``: below that, while the bitext accuracy is at least :data:`ALIGNED` (the texts
  are aligned with the pivot; the transfer to images is what fails);
* ``text tower``: below that, with bitext accuracy under :data:`UNALIGNED` (the text tower does
  not align the language with the pivot);
* ``partly aligned``: in between.

The thresholds are a reading aid; the numbers are in the table.
"""

from __future__ import annotations

from mclip.eval.metric_names import headline, short_name

ON_PAR, ALIGNED, UNALIGNED = 0.9, 0.9, 0.5
IMAGE_KINDS = ("zeroshot_classification", "retrieval", "topic_matching")


def reading(relative: float, bitext: float) -> str:
    """The reading of one language (module docstring): ``relative`` = its image score / the
    pivot's, ``bitext`` = its bitext_acc@1."""
    if relative >= ON_PAR:
        return "on par"
    if bitext >= ALIGNED:
        return "image side"
    if bitext < UNALIGNED:
        return "text tower"
    return "partly aligned"


def alignment_rows(report: dict) -> list[dict]:
    """Per (image task, language) with both scores: task, metric, language, image score, the
    pivot's, bitext_acc@1 and the reading; [] without a bitext task or a pivot score."""
    tasks = report["tasks"]
    bitext = next((t for t in tasks.values() if t["kind"] == "bitext_retrieval"), None)
    if bitext is None or not bitext["languages"]:
        return []
    pivot = next(iter(bitext["languages"].values())).get("pivot")
    rows = []
    for name, task in tasks.items():
        if task["kind"] not in IMAGE_KINDS or task.get("base_task"):
            continue
        metric = headline(task["kind"])[0]
        base = task["languages"].get(pivot, {}).get(metric)
        if not base:
            continue
        for lang, metrics in bitext["languages"].items():
            score, text = task["languages"].get(lang, {}).get(metric), metrics.get("bitext_acc@1")
            if score is None or text is None:
                continue
            rows.append(
                {
                    "task": name,
                    "metric": metric,
                    "language": lang,
                    "image": score,
                    "pivot": pivot,
                    "pivot_image": base,
                    "bitext": text,
                    "reading": reading(score / base, text),
                }
            )
    return rows


def alignment_table(report: dict) -> str:
    """Markdown of :func:`alignment_rows` ("" when there are none)."""
    rows = alignment_rows(report)
    if not rows:
        return ""
    lines = [
        f"Where the gap is: each language's image score against the pivot "
        f"({rows[0]['pivot']}) beside its bitext acc@1 (on par: >= {ON_PAR:.0%} of the "
        f"pivot; image side: bitext >= {ALIGNED:.0%}; text tower: bitext < {UNALIGNED:.0%})",
        "",
        "| task | lang | image score | % of pivot | bitext acc@1 | reading |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['task']} {short_name(r['metric'])} | {r['language']} | "
            f"{100 * r['image']:.1f} | {100 * r['image'] / r['pivot_image']:.0f} | "
            f"{100 * r['bitext']:.1f} | {r['reading']} |"
        )
    return "\n".join(lines)
