"""The model card every export carries: ``README.md`` in the Hugging Face model-card layout.

Everything in it is read from what the run recorded, never written by hand: the architecture and
parameter counts from the model, the training data (sources, caption languages and how many
captions of each were trained on, summed from the run's ``log.jsonl``), steps, batch, losses and
teachers from the checkpoint's ``config.yaml``, and the evaluation table from a ``results.json``
of ``mclip eval`` (per language, with 95% intervals). Where a fact is missing (no training log
beside the checkpoint, no results file) the card says so instead of guessing.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Sequence

import yaml

from mclip.config import Config
from mclip.eval.metric_names import TEXT_FREE_KINDS
from mclip.models.dual import DualEncoder


def run_of(checkpoint: Path) -> Path | None:
    """The run directory of a checkpoint ``RUN/checkpoints/step_N`` or ``RUN/best`` (None for a
    model directory elsewhere)."""
    checkpoint = Path(checkpoint)
    if checkpoint.parent.name == "checkpoints":
        return checkpoint.parent.parent
    if checkpoint.name == "best":
        return checkpoint.parent
    return None


def training_facts(checkpoint: Path) -> dict | None:
    """What the run's log says, for a checkpoint of a run (:func:`run_of`; None without a log):
    {"steps", "images", "captions_by_language", "sources", "samples_per_s", "world_size",
    "skipped", "stopped_by"}. A step logged twice (before a crash and after the resume) counts
    once, with its later record."""
    run = run_of(checkpoint)
    log = run / "log.jsonl" if run is not None else None
    if log is None or not log.is_file():
        return None
    steps, start, end, sampling = {}, None, None, None
    for line in log.read_text("utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        event = record.get("event")
        if event is None and "step" in record:
            steps[record["step"]] = record
        elif event in ("start", "resume") and start is None:
            start = record
        elif event == "end":
            end = record
        elif event in ("languages", "sources"):
            sampling = record
    languages: Counter[str] = Counter()
    sources: Counter[str] = Counter()
    for record in steps.values():
        languages.update(record.get("languages", {}))
        sources.update(record.get("sources", {}))
    rates = [r["samples_per_s"] for r in steps.values() if "samples_per_s" in r]
    return {
        "steps": max(steps) if steps else 0,
        "images": sum(sources.values()),
        "captions_by_language": dict(languages.most_common()),
        "sources": dict(sources),
        "sampling": {k: v for k, v in (sampling or {}).items() if k not in ("event", "time")},
        "samples_per_s": sorted(rates)[len(rates) // 2] if rates else None,
        "world_size": (start or {}).get("world_size"),
        "skipped": (end or {}).get("skipped"),
        "stopped_by": (end or {}).get("stopped_by"),
    }


def parameter_counts(model: DualEncoder) -> dict[str, int]:
    """Parameters of the image tower, the text tower and the whole model."""
    image = sum(p.numel() for p in model.image.parameters())
    text = sum(p.numel() for p in model.text.parameters())
    return {"image": image, "text": text, "total": sum(p.numel() for p in model.parameters())}


def model_card(
    model: DualEncoder,
    config: Config,
    checkpoint: Path,
    export: dict,
    results: dict | None = None,
    license: str = "other",
    adapters: Sequence[str] = (),
) -> str:
    """The card's Markdown. ``export``: {"format" ("open_clip" / "onnx"), "embed_dim", "usage"
    (a code block showing how to load it), ...}; ``results``: a results document of
    ``mclip eval`` (its table goes in); ``adapters``: languages whose LoRA adapters were left
    out."""
    from mclip.eval.report import markdown_table

    facts = training_facts(checkpoint)
    trained = list((facts or {}).get("captions_by_language") or config.data.languages)
    evaluated = sorted(
        {
            lang
            for task in (results or {}).get("tasks", {}).values()
            if task.get("kind") not in TEXT_FREE_KINDS
            for lang in task.get("languages", {})
        }
    )
    counts = parameter_counts(model)
    m = config.model
    library = "open_clip" if export["format"] == "open_clip" else "onnx"
    tags = ["clip", "mclip", "zero-shot-image-classification", f"mclip-export-{export['format']}"]
    if len(trained) > 1:
        tags.insert(1, "multilingual")
    header = {
        "language": sorted(set(trained) | set(evaluated)) or None,
        "license": license,
        "library_name": library,
        "tags": tags,
        "pipeline_tag": "zero-shot-image-classification",
    }
    run = run_of(checkpoint)
    kind = "multilingual " if len(trained) > 1 else ""
    lines = [
        "---",
        yaml.safe_dump(
            {k: v for k, v in header.items() if v is not None}, sort_keys=False, allow_unicode=True
        ).strip(),
        "---",
        "",
        f"# {(run or checkpoint).name} ({export['format']} export)",
        "",
        f"A {kind}CLIP-style dual encoder trained with mclip (checkpoint "
        f"`{checkpoint.name}`) and exported with `mclip export`.",
        "",
        "## Architecture",
        "",
        "| part | what | parameters |",
        "|---|---|---|",
        f"| image tower | `{m.image.name}` at {m.image.image_size} px, {m.projection} "
        f"projection | {counts['image']:,} |",
        f"| text tower | `{m.text.name}` ({m.text.pooling} pooling, up to "
        f"{m.text.max_length} tokens) | {counts['text']:,} |",
        f"| embedding | {export['embed_dim']} dimensions"
        + (
            f" (the first {export['embed_dim']} of {m.embed_dim})"
            if export["embed_dim"] != m.embed_dim
            else ""
        )
        + " | |",
        f"| total | | {counts['total']:,} |",
        "",
    ]
    lines += _training_section(config, facts)
    lines += ["## Evaluation", ""]
    if results:
        lines += [
            f"`mclip eval` on the suite `{results.get('suite')}` (model "
            f"`{results.get('model')}`; values in %, ± half the 95% bootstrap interval):",
            "",
            markdown_table(results),
            "",
        ]
    else:
        lines += [
            "No evaluation was given to the export (`mclip export --results results.json`).",
            "",
        ]
    lines += ["## Use", "", export["usage"], "", "## Intended use and limits", ""]
    lines += _limits(config, trained, evaluated, export)
    if adapters:
        lines.append(
            f"- The run's LoRA language adapters ({', '.join(adapters)}) are not in this "
            f"export: those languages encode with the base model."
        )
    return "\n".join(lines) + "\n"


def _training_section(config: Config, facts: dict | None) -> list[str]:
    t, loss, distill = config.train, config.loss, config.distill
    lines = ["## Training", ""]
    sources = [
        f"`{s.name or 'source'}`: `{s.shards}` (weight {s.weight})" for s in config.data.sources
    ] or [f"`{config.data.train_shards}`"]
    lines += [
        f"- data: {'; '.join(sources)}",
        f"- steps: {t.steps}, global batch {t.batch_size} images, "
        f"{config.data.captions_per_image} caption(s) per image, lr {t.lr}, seed {t.seed}",
        f"- loss: {loss.kind}"
        + (
            f"; language temperature {config.data.language_temperature}"
            if config.data.language_temperature != 1
            else ""
        ),
    ]
    if distill.teachers:
        teachers = ", ".join(f"`{e.model or e.embeddings}`" for e in distill.teachers)
        lines.append(
            f"- distilled from {teachers} (contrastive {distill.contrastive_weight}, "
            f"similarity KD {distill.similarity_weight}, feature KD "
            f"{distill.feature_weight})"
        )
    if facts is None:
        lines += [
            "- no training log (`log.jsonl`) beside the checkpoint: caption counts unknown",
            "",
        ]
        return lines
    lines.append(
        f"- from the log: {facts['steps']} steps logged, {facts['images']:,} images"
        + (f", median {facts['samples_per_s']:.0f} samples/s" if facts["samples_per_s"] else "")
        + (f" on {facts['world_size']} rank(s)" if facts["world_size"] else "")
        + (f", skipped {facts['skipped']}" if facts["skipped"] else "")
    )
    if facts["captions_by_language"]:
        lines += ["", "| caption language | captions trained on |", "|---|---|"]
        lines += [f"| {lang} | {n:,} |" for lang, n in facts["captions_by_language"].items()]
    return lines + [""]


def _limits(config: Config, trained: list[str], evaluated: list[str], export: dict) -> list[str]:
    if trained:
        lines = [
            f"- Trained on captions in {len(trained)} language(s) ({', '.join(trained)}); "
            f"other languages were never seen and should be measured before use."
        ]
    else:
        lines = [
            "- The training languages are not recorded (no training log beside the "
            "checkpoint, no data.languages in its config): measure every language you "
            "need."
        ]
    if evaluated:
        missing = sorted(set(trained) - set(evaluated))
        lines.append(
            f"- Evaluated in {len(evaluated)} language(s)"
            + (f"; not evaluated: {', '.join(missing)}" if missing else "")
            + "."
        )
    else:
        lines.append("- Not evaluated in this card: measure it on your data first.")
    lines.append(
        f"- Images are resized to {config.model.image.image_size} px (shorter side, "
        f"centre crop); texts are cut at {config.model.text.max_length} tokens."
    )
    if export["format"] == "open_clip":
        lines.append(
            "- open_clip's tokenizer cleans texts (HTML entities, repeated white space) "
            "before tokenizing; mclip did not in training."
        )
    if export.get("quantize"):
        check = export["check"]
        images = (
            f" on {check['image_checked_on']} held-out calibration images"
            if "image_checked_on" in check
            else ""
        )
        lines.append(
            f"- Weights quantised to {export['quantize']}: embeddings differ slightly "
            f"from the fp32 model's (smallest cosine to fp32 in the export check: "
            f"images {check['image_cosine']:.4f}{images}, texts "
            f"{check['text_cosine']:.4f})."
        )
    return lines
