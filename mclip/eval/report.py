"""Evaluation reports: results JSON, a Markdown table and a per-language bar chart."""

from __future__ import annotations

import datetime
import json
import platform
from importlib import metadata
from pathlib import Path

_PACKAGES = ("mclip", "torch", "timm", "transformers", "open_clip_torch", "torchmetrics",
             "webdataset", "numpy")
# Metrics shown in the table and the plot, per task kind, in order.
HEADLINE = {"zeroshot_classification": ("acc@1", "acc@5", "mean_per_class_recall", "n_classes"),
            "retrieval": ("text_to_image_R@1", "text_to_image_R@5", "image_to_text_R@1",
                          "image_to_text_R@5")}
SHORT = {"acc@1": "acc@1", "acc@5": "acc@5", "mean_per_class_recall": "mpcr",
         "n_classes": "classes", "text_to_image_R@1": "t2i R@1", "text_to_image_R@5": "t2i R@5",
         "image_to_text_R@1": "i2t R@1", "image_to_text_R@5": "i2t R@5"}


# Babel-ImageNet's resource groups by the number of classes a language has (arXiv:2306.08658).
BABEL_GROUPS = ((100, "<=100"), (333, "101-333"), (666, "334-666"), (10**9, ">666"))


def resource_group(n_classes: int) -> str:
    """Babel-ImageNet's resource group of a language with ``n_classes`` classes."""
    return next(name for bound, name in BABEL_GROUPS if n_classes <= bound)


def package_versions() -> dict[str, str]:
    """Versions of Python and the packages that determine the numbers."""
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def build_report(model_name: str, suite_name: str, results: dict,
                 model_versions: dict | None = None) -> dict:
    """The results document: model spec, its adapter's library versions, suite, time, package
    versions, per-task results and per-task means over languages (and per resource group)."""
    for task in results.values():
        keys = [k for k in HEADLINE[task["kind"]] if not k.startswith("n_")]
        langs = [m for m in task["languages"].values() if keys[0] in m]
        task["mean"] = _mean(langs, keys)
        groups = sorted({m["resource_group"] for m in langs if "resource_group" in m})
        if groups:
            task["group_means"] = {g: _mean([m for m in langs if m.get("resource_group") == g],
                                            keys) for g in groups}
    return {"model": model_name, "model_versions": dict(model_versions or {}), "suite": suite_name,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "versions": package_versions(), "tasks": results}


def _mean(rows: list[dict], keys: list[str]) -> dict:
    out = {}
    for k in keys:
        values = [m[k] for m in rows if m.get(k) is not None]
        if values:
            out[k] = sum(values) / len(values)
    return out


def markdown_table(report: dict) -> str:
    """One row per language, columns = headline metrics of every task (percent), plus a mean."""
    tasks = report["tasks"]
    columns = [(name, key) for name, task in tasks.items() for key in HEADLINE[task["kind"]]]
    languages = list(dict.fromkeys(lang for t in tasks.values() for lang in t["languages"]))
    group_of = {lang: m["resource_group"] for t in tasks.values()
                for lang, m in t["languages"].items() if "resource_group" in m}
    if group_of:  # rows grouped by resource group, smallest first, then as listed
        order = [name for _, name in BABEL_GROUPS]
        languages.sort(key=lambda lang: order.index(group_of[lang]) if lang in group_of
                       else len(order))
    header = "| lang | " + " | ".join(f"{name} {SHORT[key]}" for name, key in columns) + " |"
    lines = [header, "|" + "---|" * (len(columns) + 1)]

    def cell(value, key):
        if value is None:
            return "–"
        return str(int(value)) if key.startswith("n_") else f"{100 * value:.1f}"

    for lang in languages:
        values = [tasks[name]["languages"].get(lang, {}).get(key) for name, key in columns]
        label = f"{lang} ({group_of[lang]})" if lang in group_of else lang
        lines.append(f"| {label} | " + " | ".join(cell(v, k) for v, (_, k) in zip(values, columns))
                     + " |")
    means = [tasks[name]["mean"].get(key) for name, key in columns]
    lines.append("| **mean** | " + " | ".join(cell(v, k) for v, (_, k) in zip(means, columns))
                 + " |")
    groups = list(dict.fromkeys(g for t in tasks.values() for g in t.get("group_means", {})))
    for group in groups:  # Babel-ImageNet resource groups (classes per language)
        values = [tasks[name].get("group_means", {}).get(group, {}).get(key)
                  for name, key in columns]
        lines.append(f"| **mean {group}** | "
                     + " | ".join(cell(v, k) for v, (_, k) in zip(values, columns)) + " |")
    return "\n".join(lines)


def plot_languages(report: dict, path: str | Path) -> None:
    """A bar chart per task: the headline metrics of each language, in percent."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = report["tasks"]
    n_languages = max(len(t["languages"]) for t in tasks.values())
    fig, axes = plt.subplots(len(tasks), 1, figsize=(min(60, max(8, 0.45 * n_languages + 2)),
                                                     3.2 * len(tasks)), squeeze=False)
    for ax, (name, task) in zip(axes[:, 0], tasks.items()):
        keys = [k for k in HEADLINE[task["kind"]] if not k.startswith("n_")][:3]
        langs = list(task["languages"])
        width = 0.8 / len(keys)
        for i, key in enumerate(keys):
            values = [100 * (task["languages"][lang].get(key) or 0.0) for lang in langs]
            ax.bar([x + i * width - 0.4 + width / 2 for x in range(len(langs))], values, width,
                   label=SHORT[key])
        ax.set_xticks(range(len(langs)), langs, rotation=90 if len(langs) > 30 else 0,
                      fontsize=7 if len(langs) > 30 else 9)
        ax.set_ylim(0, 105)
        ax.set_ylabel("%")
        ax.set_title(f"{name} ({task['kind']})")
        ax.legend(loc="lower right", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{report['model']} on {report['suite']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(report: dict, out_dir: str | Path) -> dict[str, Path]:
    """Write results.json, results.md and results.png into ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "results.json", "markdown": out_dir / "results.md",
             "plot": out_dir / "results.png"}
    paths["json"].write_text(json.dumps(report, indent=1, ensure_ascii=False), "utf-8")
    paths["markdown"].write_text(f"# {report['model']} on {report['suite']}\n\n"
                                 + markdown_table(report) + "\n", "utf-8")
    plot_languages(report, paths["plot"])
    return paths
