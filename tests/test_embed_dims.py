"""``mclip eval --embed-dims``: every task also scored on re-normalised prefixes of the same
embeddings (nothing encoded twice), equal to a model whose encoders return the prefix; the report
shows accuracy against dimension."""

import json
from pathlib import Path

import pytest
import torch.nn.functional as F

from conftest import tiny_model_config
from mclip.config import ConfigError
from mclip.eval.embed_dims import check_dims, parse_embed_dims
from mclip.eval.runner import run_tasks
from mclip.eval.suite import load_suite
from mclip.models.adapters.native import NativeAdapter
from mclip.models.dual import DualEncoder

ROOT = Path(__file__).resolve().parents[1]


class Counting(NativeAdapter):
    """The native adapter counting encoded images and texts, optionally cut to a prefix."""

    def __init__(self, *args, prefix=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.images, self.texts, self.prefix = 0, 0, prefix

    def _cut(self, emb):
        return emb if self.prefix is None else F.normalize(emb[:, : self.prefix], dim=-1)

    def encode_image(self, images):
        self.images += len(images)
        return self._cut(super().encode_image(images))

    def encode_text(self, texts):
        self.texts += len(texts)
        return self._cut(super().encode_text(texts))


def _adapter(prefix=None):
    import torch

    cfg = tiny_model_config()
    torch.manual_seed(0)
    adapter = Counting(DualEncoder(cfg.model), cfg, name="tiny", prefix=prefix)
    if prefix is not None:
        adapter.embed_dim = prefix
    return adapter


def _metrics(task):
    return {
        lang: {k: v for k, v in m.items() if k not in ("samples", "ci")}
        for lang, m in task["languages"].items()
    }


def test_prefixes_are_scored_from_one_set_of_embeddings(demo_data):
    suite = load_suite(ROOT / "eval_suites" / "demo.yaml", demo_data)
    model = _adapter()
    results = run_tasks(model, suite.tasks, bootstrap=50, embed_dims=[4, 8, None])
    once = _adapter()
    run_tasks(once, suite.tasks, bootstrap=0)
    two_sizes = _adapter()
    run_tasks(two_sizes, suite.tasks, bootstrap=0, embed_dims=[8, None])
    # a further size encodes nothing (a text shared by two tasks is encoded once per task
    # without --embed-dims, once with it)
    assert (model.images, model.texts) == (two_sizes.images, two_sizes.texts)
    assert model.images == once.images and model.texts <= once.texts
    for task in suite.tasks:
        assert {task.name, f"{task.name}@4d", f"{task.name}@8d"} <= set(results)
        assert results[f"{task.name}@4d"]["embed_dim"] == 4
        assert results[task.name]["embed_dim"] == 16
        assert results[f"{task.name}@8d"]["base_task"] == task.name
    cut = run_tasks(_adapter(prefix=4), suite.tasks, bootstrap=0)
    for task in suite.tasks:
        assert _metrics(results[f"{task.name}@4d"]) == _metrics(cut[task.name])


def test_the_report_shows_accuracy_against_dimension(demo_data, tmp_path, capsys):
    from mclip.cli import main

    cfg = tiny_model_config()
    DualEncoder(cfg.model).save(tmp_path / "model", cfg)
    assert (
        main(
            [
                "eval",
                "--model",
                str(tmp_path / "model"),
                "--suite",
                str(ROOT / "eval_suites" / "demo.yaml"),
                "--data-root",
                str(demo_data),
                "--embed-dims",
                "4,8,full",
                "--bootstrap",
                "0",
                "--quiet",
                "--out",
                str(tmp_path / "eval"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "accuracy against embedding size" in out and "| 4 |" in out and "| 16 |" in out
    assert (tmp_path / "eval" / "results_dims.png").stat().st_size > 3000
    tasks = json.loads((tmp_path / "eval" / "results.json").read_text())["tasks"]
    assert "shapes@4d" in tasks and tasks["shapes@4d"]["embed_dim"] == 4


def test_embed_dims_errors_name_the_value():
    assert parse_embed_dims("full,32, 8,32") == [8, 32, None]
    for bad, needle in (("0", ">= 1"), ("abc", "neither a number"), ("", "empty")):
        with pytest.raises(ConfigError, match=needle):
            parse_embed_dims(bad)
    with pytest.raises(ConfigError, match="larger than the model's embedding"):
        check_dims([8, 64], 16)
    assert check_dims([8, 16], 16) == [8, None]


def test_without_the_full_size_the_share_is_of_the_largest(demo_data):
    from mclip.eval.report import build_report, dims_table

    suite = load_suite(ROOT / "eval_suites" / "demo.yaml", demo_data)
    results = run_tasks(_adapter(), suite.tasks[:1], bootstrap=0, embed_dims=[4, 8])
    table = dims_table(build_report("tiny", "demo", results))
    assert "% of 8d acc@1" in table and "% of full" not in table
    assert table.splitlines()[-1].endswith("| 100.0 |")
