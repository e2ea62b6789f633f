"""Cost next to accuracy: parameters per tower, FLOPs, embedding size, throughput, the Pareto
front, and their place in results files, tables and charts."""

import csv
import json
from typing import Sequence

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import register_tiny_open_clip, tiny_model_config
from mclip.eval.cost import forward_flops, tower_parameters
from mclip.eval.cost_report import cost_rows, pareto_front
from mclip.models.adapters.base import ModelAdapter
from mclip.models.dual import ImageTransform


class LinearAdapter(ModelAdapter):
    """An image tower of one Linear over the flattened 3x8x8 pixels; a text tower of an embedding
    and one Linear per character (so a text's FLOPs grow with its length); a shared Linear."""

    def __init__(self):
        super().__init__()
        self.image_proj = nn.Linear(3 * 8 * 8, 16, bias=False)
        self.chars = nn.Embedding(256, 16)
        self.text_proj = nn.Linear(16, 16, bias=False)
        self.shared = nn.Linear(16, 16, bias=False)
        self.scale = nn.Parameter(torch.tensor(1.0))
        self.embed_dim, self.name = 16, "linear"

    def encode_image(self, images):
        return F.normalize(self.shared(self.image_proj(images.flatten(1))), dim=-1)

    def encode_text(self, texts: Sequence[str]):
        rows = []
        for text in texts:
            codes = torch.tensor([min(ord(c), 255) for c in text])
            rows.append(self.shared(self.text_proj(self.chars(codes))).mean(0))
        return F.normalize(torch.stack(rows), dim=-1)

    def image_transform(self, train=False):
        return ImageTransform(8, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))

    def logit_scale(self):
        return self.scale

    def logit_bias(self):
        return None

    @property
    def versions(self):
        return {}


def test_parameters_per_tower_by_gradient_and_flops_by_counting():
    model = LinearAdapter()
    counts = tower_parameters(model, torch.device("cpu"))
    # image: image_proj + shared; text: chars + text_proj + shared; total counts shared once
    assert counts == {
        "image": 192 * 16 + 256,
        "text": 256 * 16 + 256 + 256,
        "total": 192 * 16 + 256 * 16 + 256 + 256 + 1,
    }
    assert all(p.grad is None for p in model.parameters())  # left as found
    flops = forward_flops(model, torch.device("cpu"), ["ab", "abcd"])
    assert flops["image"] == 2 * 192 * 16 + 2 * 16 * 16
    # per character: text_proj and shared (2 * 16 * 16 each); mean over lengths 2 and 4
    assert flops["text"] == pytest.approx(3 * 2 * (2 * 16 * 16))


def test_mclip_and_open_clip_towers_match_their_modules(tmp_path):
    from mclip.models.adapters.native import NativeAdapter
    from mclip.models.dual import DualEncoder

    cfg = tiny_model_config("resnet10t")
    native = NativeAdapter(DualEncoder(cfg.model), cfg, name="tiny")
    counts = tower_parameters(native, torch.device("cpu"))
    encoder = native.model
    assert counts["image"] == sum(p.numel() for p in encoder.image.parameters())
    assert counts["text"] == sum(p.numel() for p in encoder.text.parameters())
    assert counts["total"] == sum(p.numel() for p in encoder.parameters())

    from mclip.models.adapters import load_model

    model = register_tiny_open_clip(tmp_path, "tiny-cost-vit")
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    adapter = load_model("open_clip:tiny-cost-vit", pretrained=str(tmp_path / "weights.pt"))
    counts = tower_parameters(adapter, torch.device("cpu"))
    visual = sum(p.numel() for p in model.visual.parameters())
    total = sum(p.numel() for p in model.parameters())
    assert counts["image"] == visual
    # the text tower is everything but the visual tower and the logit scale
    assert counts["text"] == total - visual - model.logit_scale.numel()
    assert counts["total"] == total


def test_pareto_front():
    points = [(1.0, 0.5), (2.0, 0.6), (2.0, 0.55), (3.0, 0.6), (0.5, 0.4), (None, 0.9), (1.0, 0.5)]
    # (2, .55) is beaten by (2, .6); (3, .6) by (2, .6); the two (1, .5) tie: neither beats
    # the other, both stay; a point without a cost is not on it
    assert pareto_front(points) == [True, True, False, False, True, False, True]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from mclip.models.dual import DualEncoder

    root = tmp_path_factory.mktemp("cost")
    for name, image in (("small", "resnet10t"), ("vit", "vit_tiny_patch16_224")):
        cfg = tiny_model_config(image)
        torch.manual_seed(0)
        DualEncoder(cfg.model).save(root / name, cfg)
    return root


def test_results_and_comparison_carry_the_cost(tiny_run, demo_data, tmp_path, capsys):
    from mclip.cli import main

    for name in ("small", "vit"):
        assert (
            main(
                [
                    "eval",
                    "--model",
                    str(tiny_run / name),
                    "--task",
                    "zeroshot_classification",
                    "--images",
                    str(demo_data / "eval"),
                    "--class-texts",
                    str(demo_data / "classnames"),
                    "--dataset",
                    "demo_shapes",
                    "--languages",
                    "en,de",
                    "--out",
                    str(tmp_path / name),
                    "--bootstrap",
                    "0",
                    "--quiet",
                ]
            )
            == 0
        )
    reports = [json.loads((tmp_path / n / "results.json").read_text()) for n in ("small", "vit")]
    for report in reports:
        cost = report["cost"]
        assert cost["parameters"]["image"] > 0 and cost["parameters"]["text"] > 0
        assert cost["flops"]["image"] > 0 and cost["flops"]["text"] > 0
        assert cost["embedding_bytes"] == {
            "fp32": 4 * cost["embed_dim"],
            "fp16": 2 * cost["embed_dim"],
            "int8": cost["embed_dim"],
        }
        assert cost["throughput"]["images_per_s"] > 0 and cost["throughput"]["texts_per_s"] > 0
        assert cost["device"] == "cpu" and cost["precision"] == "fp32"
    assert "Cost: parameters image" in (tmp_path / "small" / "results.md").read_text()
    capsys.readouterr()
    assert (
        main(
            [
                "report",
                str(tmp_path / "small" / "results.json"),
                str(tmp_path / "vit" / "results.json"),
                "--out",
                str(tmp_path / "cmp"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "Accuracy against cost" in out and "| params image (M) |" in out
    assert (tmp_path / "cmp" / "comparison_cost.png").stat().st_size > 5000
    comparison = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    rows = comparison["cost"]
    assert [r["model"] for r in rows] == [str(tiny_run / "small"), str(tiny_run / "vit")]
    assert rows == cost_rows(reports, [r["model"] for r in rows])
    for key in ("parameters", "gflops", "bytes"):
        cheap, dear = sorted(rows, key=lambda r: (r[key], -r["accuracy"]))
        assert cheap[f"{key}_front"]  # nothing costs less
        # the dearer model is on the front only when it scores higher
        assert dear[f"{key}_front"] == (
            dear[key] == cheap[key]
            and dear["accuracy"] == cheap["accuracy"]
            or dear["accuracy"] > cheap["accuracy"]
        )
    with open(tmp_path / "cmp" / "comparison.csv", newline="") as f:
        costs = [r for r in csv.DictReader(f) if r["task"] == "cost"]
    assert {r["metric"] for r in costs} >= {
        "parameters_image",
        "parameters_text",
        "flops_image",
        "flops_text",
        "embed_dim",
        "embedding_bytes_fp32",
        "images_per_s",
        "texts_per_s",
    }
    assert len(costs) == 2 * len({r["metric"] for r in costs})


def test_accuracy_is_over_tasks_with_a_value_in_every_report():
    from mclip.eval.cost_report import accuracy_metrics, mean_accuracy

    def report(t2t):
        return {
            "tasks": {
                "cls": {"kind": "zeroshot_classification", "mean": {"acc@1": 0.6}},
                "cls@32d": {
                    "kind": "zeroshot_classification",
                    "base_task": "cls",
                    "mean": {"acc@1": 0.1},
                },
                "t2t": {"kind": "text_to_text", "mean": t2t},
            }
        }

    reports = [
        report({"text_to_pivot_text_R@1": 0.4}),
        report({"text_to_pivot_text_R@1": 0.2, "text_to_text_R@1": 0.9}),
    ]
    # XTD10-like: no within-language R@1 in the first report, so its next headline metric counts;
    # the 32-d prefix task is not a task of its own
    assert accuracy_metrics(reports) == {"cls": "acc@1", "t2t": "text_to_pivot_text_R@1"}
    assert mean_accuracy(reports[0], accuracy_metrics(reports)) == pytest.approx(0.5)


def test_an_onnx_export_counts_its_initializers(tmp_path):
    from mclip.export.onnx import export_onnx
    from mclip.models.adapters import load_model
    from mclip.models.dual import DualEncoder

    cfg = tiny_model_config("resnet10t")
    model = DualEncoder(cfg.model)
    export_onnx(model, cfg, tmp_path / "onnx")
    counts = tower_parameters(load_model(f"onnx:{tmp_path / 'onnx'}"), torch.device("cpu"))
    image = sum(p.numel() for p in model.image.parameters())
    text = sum(p.numel() for p in model.text.parameters())
    # the graphs fold batch norms and hold a few constants: within 2% of the torch towers
    assert counts["image"] == pytest.approx(image, rel=0.02)
    assert counts["text"] == pytest.approx(text, rel=0.02)
    assert forward_flops(load_model(f"onnx:{tmp_path / 'onnx'}"), torch.device("cpu"), ["a"]) == {
        "image": None,
        "text": None,
    }
