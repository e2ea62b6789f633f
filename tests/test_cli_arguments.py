"""Every numeric and path argument of every subcommand is checked while the arguments are parsed,
before any work: one line (``mclip: error: argument ...``), exit status 2, no traceback. Also
the small faults of the CLI: a progress line at an accuracy of exactly 0, ``report --help``, an
empty template list, the comparison's ``n`` column, ``--model-config`` and resource groups of
``--task`` runs."""

import json
from pathlib import Path

import pytest
import torch

from mclip.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]


def _refused(capsys, argv, *needles):
    status = main(argv)
    err = capsys.readouterr().err
    assert status == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("mclip: error:"), lines
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


CASES = [
    (["eval", "--model", "M", "--limit", "0"], ["--limit", "0", ">= 1"]),
    (["eval", "--model", "M", "--batch-size", "0"], ["--batch-size", ">= 1"]),
    (["eval", "--model", "M", "--seed", "-1"], ["--seed", "-1", ">= 0"]),
    (["eval", "--model", "M", "--bootstrap", "-5"], ["--bootstrap", ">= 0"]),
    (["eval", "--model", "M", "--limit", "ten"], ["--limit", "'ten' is not an integer"]),
    (["eval", "--model", "M", "--device", "banana"], ["--device", "'banana' is not a device"]),
    (["eval", "--model", "M", "--suite", "{tmp}"], ["--suite", "is a directory"]),
    (["eval", "--model", "M", "--data-root", "{tmp}/absent"], ["--data-root", "does not exist"]),
    (["eval", "--model", "M", "--model-config", "{tmp}/absent.json"], ["--model-config"]),
    (["report", "{tmp}/a.json", "--seed", "-1"], ["--seed", ">= 0"]),
    (["report", "{tmp}/a.json", "--bootstrap", "-1"], ["--bootstrap", ">= 0"]),
    (["report", "{tmp}/missing.json"], ["missing.json", "does not exist"]),
    (["train", "--config", "{tmp}"], ["--config", "is a directory"]),
    (["data", "demo", "--out", "{tmp}/x", "--train", "0"], ["--train", ">= 1"]),
    (["data", "demo", "--out", "{tmp}/x", "--image-size", "4"], ["--image-size", ">= 16"]),
    (["data", "demo", "--out", "{tmp}/x", "--seed", "-3"], ["--seed"]),
    (["data", "parallel", "s", "--out", "{tmp}/x", "--per-language", "0"], ["--per-language"]),
    (
        [
            "distill",
            "embed",
            "--teacher",
            "T",
            "--shards",
            "s",
            "--out",
            "{tmp}/o",
            "--batch-size",
            "0",
        ],
        ["--batch-size"],
    ),
    (["adapt", "--model", "M", "--language", "sw", "--data", "d", "--steps", "0"], ["--steps"]),
    (["adapt", "--model", "M", "--language", "sw", "--data", "d", "--lr", "0"], ["--lr"]),
    (
        ["adapt", "--model", "M", "--language", "sw", "--data", "d", "--lora-dropout", "1.5"],
        ["--lora-dropout", "[0, 1)"],
    ),
    (["adapt", "--model", "M", "--language", "sw", "--data", "d", "--rank", "0"], ["--rank"]),
    (
        ["adapt", "--model", "M", "--language", "sw", "--data", "d", "--threads", "-1"],
        ["--threads"],
    ),
    (["eval", "--model", "M", "--bogus"], ["unrecognized arguments: --bogus"]),
]


@pytest.mark.parametrize("argv,needles", CASES, ids=[" ".join(c[0][:1] + c[0][-2:]) for c in CASES])
def test_bad_arguments_are_one_line_before_any_work(capsys, tmp_path, argv, needles):
    (tmp_path / "a.json").write_text("{}")
    _refused(capsys, [a.replace("{tmp}", str(tmp_path)) for a in argv], *needles)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize(
    "command",
    [
        ["eval", "--model", "M"],
        ["distill", "embed", "--teacher", "T", "--shards", "s", "--out", "{tmp}/o"],
        ["adapt", "--model", "M", "--language", "sw", "--data", "d"],
    ],
)
def test_device_cuda_without_cuda_is_one_line(capsys, command):
    _refused(capsys, [*command, "--device", "cuda"], "--device", "no CUDA device")


@pytest.mark.parametrize(
    "content,needle",
    [("- a\n- b\n", "is a YAML list"), ("", "is empty"), ("model: [\n", "is not valid YAML")],
)
def test_a_config_that_is_not_a_mapping_is_one_line(capsys, tmp_path, content, needle):
    path = tmp_path / "config.yaml"
    path.write_text(content)
    assert main(["train", "--config", str(path)]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0] and str(path) in lines[0]


def test_report_help_shows_a_plain_percent_sign():
    parser = build_parser()
    report = parser._subparsers._group_actions[0].choices["report"]
    text = report.format_help()
    assert "95% intervals" in text and "%%" not in text


def test_progress_line_shows_an_accuracy_of_zero_as_zero(demo_data, monkeypatch):
    """The eval progress line of a language scored 0 says 0.0000 (it said nan)."""
    import mclip.eval.runner as runner
    from conftest import tiny_model_config
    from mclip.eval.suite import load_suite
    from mclip.models.adapters.native import NativeAdapter
    from mclip.models.dual import DualEncoder

    real = runner.classify_language

    def nothing_right(*args, **kwargs):
        scores = real(*args, **kwargs)
        scores.metrics["acc@1"] = 0.0
        return scores

    monkeypatch.setattr(runner, "classify_language", nothing_right)
    cfg = tiny_model_config()
    lines = []
    suite = load_suite(ROOT / "eval_suites" / "demo.yaml", demo_data)
    runner.run_tasks(
        NativeAdapter(DualEncoder(cfg.model), cfg),
        suite.tasks[:1],
        bootstrap=0,
        progress=lines.append,
    )
    shown = [line for line in lines if "acc@1=" in line]
    assert shown and all(
        line.split(" (templates alone")[0].endswith("acc@1=0.0000") for line in shown
    ), shown


def test_an_empty_template_list_names_the_templates_file(tmp_path):
    from mclip.config import ConfigError
    from mclip.eval.datasets import open_class_texts

    (tmp_path / "en_classnames.json").write_text(json.dumps({"pets": ["cat", "dog"]}))
    templates = tmp_path / "en_zeroshot_classification_templates.json"
    templates.write_text(json.dumps({"pets": []}))
    with pytest.raises(ConfigError) as error:
        open_class_texts(str(tmp_path)).load("en", "pets")
    assert "templates" in str(error.value) and str(templates) in str(error.value)
    assert "classnames" not in str(error.value)


def test_the_comparison_shows_each_models_n_where_they_differ():
    from mclip.eval.compare import compare_reports, comparison_markdown
    from test_report import language_codes, synthetic_report

    langs = language_codes(2)
    a = synthetic_report("A", langs, seed=0, n_images=300, retrieval=False)
    b = synthetic_report("B", langs, seed=1, n_images=250, retrieval=False)
    c = synthetic_report("C", langs, seed=2, n_images=300, retrieval=False)
    table = comparison_markdown(compare_reports([a, b, c], ["A", "B", "C"], 100, 0))
    rows = [line for line in table.splitlines() if line.startswith(f"| {langs[0]}")]
    assert rows and all("| 300 / 250 / 300 |" in row for row in rows), rows
    same = comparison_markdown(compare_reports([a, c], ["A", "C"], 100, 0))
    assert "| 300 |" in [line for line in same.splitlines() if line.startswith(f"| {langs[0]}")][0]


def test_task_on_a_babel_imagenet_labels_file_reports_resource_groups(tmp_path, capsys):
    """--task zeroshot_classification with a Babel-ImageNet labels file (no prompts): each
    language's resource group, as the suite gives it."""
    from conftest import random_image_folder, tiny_model_config
    from mclip.models.dual import DualEncoder

    random_image_folder(tmp_path / "images")
    labels = {"EN": [[0, 1, 2], ["cat", "dog", "car"]], "DE": [[0, 1], ["Katze", "Hund"]]}
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    cfg = tiny_model_config()
    DualEncoder(cfg.model).save(tmp_path / "model", cfg)
    assert (
        main(
            [
                "eval",
                "--model",
                str(tmp_path / "model"),
                "--task",
                "zeroshot_classification",
                "--images",
                str(tmp_path / "images"),
                "--class-texts",
                str(tmp_path / "labels.json"),
                "--bootstrap",
                "0",
                "--quiet",
                "--out",
                str(tmp_path / "out"),
            ]
        )
        == 0
    )
    result = json.loads((tmp_path / "out" / "results.json").read_text())
    languages = result["tasks"]["zeroshot_classification"]["languages"]
    assert languages["en"]["resource_group"] == "<=100" and languages["de"]["resource_group"]


def test_model_config_names_an_open_clip_architecture_of_ones_own(tmp_path, capsys):
    """``--model open_clip:ARCH --model-config JSON --pretrained FILE``: no registration by hand."""
    import open_clip
    from safetensors.torch import save_file

    config = {
        "embed_dim": 32,
        "vision_cfg": {
            "image_size": 32,
            "layers": 1,
            "width": 64,
            "head_width": 32,
            "patch_size": 16,
        },
        "text_cfg": {
            "context_length": 77,
            "vocab_size": 49408,
            "width": 64,
            "heads": 2,
            "layers": 1,
        },
    }
    (tmp_path / "cfg.json").write_text(json.dumps(config))
    from mclip.models.adapters import load_model

    open_clip.add_model_config(tmp_path / "cfg.json")  # to build weights to load: as 'cfg'
    torch.manual_seed(0)
    reference = open_clip.create_model("cfg", pretrained=None)
    save_file(
        {k: v.contiguous() for k, v in reference.state_dict().items()},
        str(tmp_path / "w.safetensors"),
    )
    model = load_model(
        "open_clip:mine-tiny-vit",
        pretrained=str(tmp_path / "w.safetensors"),
        model_config=tmp_path / "cfg.json",
    )
    assert (
        model.embed_dim == 32
        and model.name == f"open_clip:mine-tiny-vit/{tmp_path / 'w.safetensors'}"
    )
    with torch.no_grad():
        expected = torch.nn.functional.normalize(
            reference.encode_text(open_clip.get_tokenizer("cfg")(["a cat"])), dim=-1
        )
    assert torch.allclose(model.encode_text(["a cat"]), expected, atol=1e-6)
    from mclip.config import ConfigError

    with pytest.raises(ConfigError, match="only used with 'open_clip:ARCH'"):
        load_model(str(tmp_path), model_config=tmp_path / "cfg.json")
