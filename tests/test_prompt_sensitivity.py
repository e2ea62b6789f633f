"""Prompt sensitivity (issue 25 item 4): with several templates, each template's own acc@1 and
their spread per language, from the embeddings the classifier is built from anyway; a language
whose templates disagree by 10 points is flagged; in results.json, the table and the CSV."""

import pytest
import torch

from mclip.config import ConfigError
from mclip.eval.export import report_rows
from mclip.eval.report import build_report, markdown_table
from mclip.eval.suite import make_task
from mclip.eval.zeroshot import classify_language

BASIS = torch.eye(4)


def _encoder(texts):
    """'good X' -> X's own axis; 'bad X' -> the next class's axis; 'half X' -> its own axis for
    classes 0 and 1, the next class's for 2 and 3."""
    rows = []
    for text in texts:
        kind, name = text.split(maxsplit=1)
        index = int(name[-1])
        shift = {"good": 0, "bad": 1, "half": 0 if index < 2 else 1}[kind]
        rows.append(BASIS[(index + shift) % 4])
    return torch.stack(rows)


def _classify(templates, **kwargs):
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    images = BASIS[labels]
    names = [f"class{i}" for i in range(4)]
    return classify_language(images, labels, _encoder, names, templates, (1,), **kwargs).metrics


def test_each_template_is_scored_alone_and_the_spread_is_flagged():
    metrics = _classify(["good {c}", "bad {c}", "half {c}"])
    assert metrics["template_acc@1"] == {"good {c}": 1.0, "bad {c}": 0.0, "half {c}": 0.5}
    assert metrics["acc@1_template_min"] == 0.0 and metrics["acc@1_template_max"] == 1.0
    assert metrics["acc@1_template_std"] == pytest.approx(
        torch.tensor([1.0, 0.0, 0.5]).std(unbiased=False).item()
    )
    assert metrics["prompt_sensitive"] is True


def test_templates_that_agree_are_not_flagged_and_one_template_has_no_spread():
    agree = _classify(["good {c}", "good  {c}"])
    assert agree["acc@1_template_min"] == agree["acc@1_template_max"] == 1.0
    assert agree["prompt_sensitive"] is False
    assert "template_acc@1" not in _classify(["good {c}"])
    assert "template_acc@1" not in _classify(["good {c}", "bad {c}"], template_scores=False)


def test_the_table_and_the_csv_show_it():
    metrics = _classify(["good {c}", "bad {c}"])
    task = {"kind": "zeroshot_classification", "languages": {"en": metrics}}
    report = build_report("m", "s", {"toy": task})
    table = markdown_table(report)
    assert "Prompt sensitivity" in table and "| toy | en | 2 | 0.0 | 100.0 | 50.0 |" in table
    assert "**prompt-sensitive**" in table
    names = {row["metric"] for row in report_rows(report, "m")}
    assert {"acc@1_template_min", "acc@1_template_max", "acc@1_template_std"} <= names
    assert "template_acc@1" not in names and "prompt_sensitive" not in names


def test_a_suite_can_switch_it_off_and_a_wrong_value_is_one_line(tmp_path):
    raw = {
        "name": "t",
        "kind": "zeroshot_classification",
        "languages": ["en"],
        "images": "i",
        "class_texts": "c",
    }
    assert make_task(raw, tmp_path, "test").template_scores is True
    assert make_task({**raw, "template_scores": False}, tmp_path, "test").template_scores is False
    with pytest.raises(ConfigError, match="template_scores must be true or false"):
        make_task({**raw, "template_scores": "yes"}, tmp_path, "test")


def test_the_report_draws_the_template_ranges(tmp_path):
    from mclip.eval.report import write_report

    metrics = _classify(["good {c}", "bad {c}", "half {c}"])
    report = build_report(
        "m",
        "s",
        {"toy": {"kind": "zeroshot_classification", "languages": {"en": metrics, "de": metrics}}},
    )
    paths = write_report(report, tmp_path)
    chart = tmp_path / "results_prompts.png"
    assert chart in paths["charts"] and chart.stat().st_size > 1000
    assert "Prompt sensitivity" in (tmp_path / "results.md").read_text()


def test_a_comparison_compares_the_spread_and_draws_both_models(tmp_path):
    import json

    from mclip.cli import main
    from mclip.eval.report import write_report

    sensitive = _classify(["good {c}", "bad {c}"])
    steady = _classify(["good {c}", "good  {c}"])
    for name, metrics in (("a", sensitive), ("b", steady)):
        write_report(
            build_report(
                name,
                "s",
                {"toy": {"kind": "zeroshot_classification", "languages": {"en": metrics}}},
            ),
            tmp_path / name,
        )
    assert (
        main(
            [
                "report",
                str(tmp_path / "a" / "results.json"),
                str(tmp_path / "b" / "results.json"),
                "--out",
                str(tmp_path / "cmp"),
            ]
        )
        == 0
    )
    assert (tmp_path / "cmp" / "comparison_prompts.png").stat().st_size > 1000
    rows = json.loads((tmp_path / "cmp" / "comparison.json").read_text())["results"]
    assert any(row["metric"] == "acc@1_template_min" for row in rows)
