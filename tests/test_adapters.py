"""Model adapters: mclip checkpoints, open_clip and transformers models behind one interface.

Everything is built from tiny random-init configs in tmp_path: no download, CPU, seconds.
"""

import math
import pickle
from pathlib import Path

import open_clip
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

import mclip
from conftest import register_tiny_open_clip, tiny_overrides
from mclip.config import ConfigError, load_config
from mclip.models.adapters import ACCEPTED_FORMS, ModelAdapter, load_model
from mclip.models.dual import DualEncoder

ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["a red circle", "ein blauer Würfel", "un triangle vert sur fond blanc", "x"]
TINY_OPEN_CLIP = "mclip-test-tiny-vit"  # no 'siglip' in the name: open_clip's BPE tokenizer


def _images(n: int = 3, size: tuple[int, int] = (40, 48)) -> list[Image.Image]:
    gen = torch.Generator().manual_seed(0)
    return [
        Image.fromarray(
            (torch.rand(size[1], size[0], 3, generator=gen) * 255).to(torch.uint8).numpy()
        )
        for _ in range(n)
    ]


def _check_transform(adapter: ModelAdapter, size: int) -> torch.Tensor:
    """The eval transform pickles, and gives float [3, size, size]; returns the image batch."""
    transform = pickle.loads(pickle.dumps(adapter.image_transform(train=False)))
    batch = torch.stack([transform(image) for image in _images()])
    assert batch.shape == (3, 3, size, size) and batch.dtype == torch.float32
    grey = transform(Image.new("L", (20, 30), 90))  # non-RGB input is converted
    assert grey.shape == (3, size, size)
    return batch


def _check_common(adapter: ModelAdapter, embed_dim: int) -> None:
    assert isinstance(adapter, ModelAdapter) and not adapter.training
    assert adapter.embed_dim == embed_dim
    assert adapter.logit_scale.shape == ()
    assert adapter.versions and all(isinstance(v, str) for v in adapter.versions.values())
    out = adapter.encode_text(TEXTS)
    assert out.shape == (len(TEXTS), embed_dim) and out.dtype == torch.float32
    assert torch.allclose(out.norm(dim=-1), torch.ones(len(TEXTS)), atol=1e-5)


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.allclose(a, b, atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------- open_clip


@pytest.fixture(scope="module")
def open_clip_files(tmp_path_factory):
    """A registered tiny open_clip ViT, its raw model and its weights as .pt and .safetensors."""
    root = tmp_path_factory.mktemp("open_clip")
    raw = register_tiny_open_clip(root, TINY_OPEN_CLIP)
    state = {k: v.contiguous() for k, v in raw.state_dict().items()}
    torch.save(state, root / "tiny.pt")
    save_file(state, str(root / "tiny.safetensors"))
    return raw, {"pt": root / "tiny.pt", "safetensors": root / "tiny.safetensors"}


@pytest.mark.parametrize("kind", ["pt", "safetensors"])
def test_open_clip_local_weights_match_the_raw_model(open_clip_files, kind):
    raw, files = open_clip_files
    adapter = load_model(f"open_clip:{TINY_OPEN_CLIP}", pretrained=str(files[kind]))
    assert adapter.name == f"open_clip:{TINY_OPEN_CLIP}/{files[kind]}"
    _check_common(adapter, 32)
    images = _check_transform(adapter, 32)
    tokens = open_clip.get_tokenizer(TINY_OPEN_CLIP)(TEXTS)
    with torch.no_grad():
        assert _close(adapter.encode_image(images), raw.encode_image(images, normalize=True))
        assert _close(adapter.encode_text(TEXTS), raw.encode_text(tokens, normalize=True))
    assert adapter.logit_scale.item() == pytest.approx(math.log(1 / 0.07), rel=1e-6)
    assert adapter.logit_bias is None  # open_clip CLIP without init_logit_bias: InfoNCE
    train = pickle.loads(pickle.dumps(adapter.image_transform(train=True)))
    assert train(_images(1)[0]).shape == (3, 32, 32)


def test_open_clip_shorthand_and_top_level_export(open_clip_files):
    _, files = open_clip_files
    adapter = mclip.load_model(f"open_clip:{TINY_OPEN_CLIP}/{files['pt']}")
    assert adapter.pretrained == str(files["pt"])
    with pytest.raises(ConfigError, match="give only one"):
        load_model(f"open_clip:{TINY_OPEN_CLIP}/{files['pt']}", pretrained="other.pt")


def test_open_clip_errors_name_the_input_and_the_fix(open_clip_files, tmp_path):
    with pytest.raises(ConfigError, match=r"no architecture 'ViT-B-3'.*ViT-B-32"):
        load_model("open_clip:ViT-B-3", pretrained="openai")
    with pytest.raises(ConfigError, match=r"nope\.pt' does not exist"):
        load_model(f"open_clip:{TINY_OPEN_CLIP}", pretrained=str(tmp_path / "nope.pt"))
    with pytest.raises(ConfigError, match=r"needs weights.*laion2b_s34b_b79k"):
        load_model("open_clip:ViT-B-32")  # no pretrained: the tags are listed
    with pytest.raises(ConfigError, match=r"neither a tag.*laion2b_s34b_b79k"):
        load_model("open_clip:ViT-B-32/no_such_tag")
    wrong = tmp_path / "wrong.pt"
    torch.save({"something": torch.zeros(2)}, wrong)
    with pytest.raises(ConfigError, match=r"does not load into open_clip"):
        load_model(f"open_clip:{TINY_OPEN_CLIP}", pretrained=str(wrong))


# ---------------------------------------------------------------- transformers


def _hf_vision_text(tokenizer) -> tuple[dict, dict]:
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.pad_token_id,
    )
    vision = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
    )
    return text, vision


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    """Tiny CLIPModel and SiglipModel directories (model, ByT5 tokenizer, image processor)."""
    from transformers import (
        ByT5Tokenizer,
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        SiglipConfig,
        SiglipImageProcessor,
        SiglipModel,
    )

    tokenizer = ByT5Tokenizer()
    text, vision = _hf_vision_text(tokenizer)
    torch.manual_seed(0)
    clip = CLIPModel(
        CLIPConfig(
            text_config={**text, "max_position_embeddings": 77},
            vision_config=vision,
            projection_dim=16,
        )
    ).eval()
    siglip = SiglipModel(
        SiglipConfig(text_config={**text, "max_position_embeddings": 64}, vision_config=vision)
    ).eval()
    with torch.no_grad():
        siglip.logit_scale.fill_(math.log(10.0))
        siglip.logit_bias.fill_(-10.0)
    processors = {
        "clip": CLIPImageProcessor(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
        ),
        "siglip": SiglipImageProcessor(size={"height": 32, "width": 32}),
    }
    out = {}
    for key, model in (("clip", clip), ("siglip", siglip)):
        directory = tmp_path_factory.mktemp(key)
        model.save_pretrained(directory)
        processors[key].save_pretrained(directory)
        tokenizer.save_pretrained(directory)
        out[key] = (directory, model, processors[key], tokenizer)
    return out


def test_hf_clip_matches_the_raw_model(hf_dirs):
    directory, raw, processor, tokenizer = hf_dirs["clip"]
    adapter = load_model(f"hf:{directory}")
    assert adapter.name == f"hf:{directory}"
    _check_common(adapter, 16)
    images = _check_transform(adapter, 32)
    expected = processor(images=_images()[0], return_tensors="pt")["pixel_values"][0]
    assert torch.equal(images[0], expected)  # the model's own processor
    tokens = adapter.tokenize(TEXTS)  # CLIP: longest in the batch, with a mask
    longest = max(len(t.encode("utf-8")) for t in TEXTS) + 1  # bytes + </s>
    assert tokens["input_ids"].shape == (len(TEXTS), longest) and "attention_mask" in tokens
    ref = tokenizer(TEXTS, padding=True, truncation=True, max_length=77, return_tensors="pt")
    with torch.no_grad():
        want_img = F.normalize(raw.get_image_features(pixel_values=images).pooler_output, dim=-1)
        want_txt = F.normalize(raw.get_text_features(**ref).pooler_output, dim=-1)
        assert _close(adapter.encode_image(images), want_img)
        assert _close(adapter.encode_text(TEXTS), want_txt)
    assert adapter.logit_scale.item() == pytest.approx(raw.logit_scale.item())
    assert adapter.logit_bias is None


def test_hf_siglip_pads_to_max_length_and_has_a_bias(hf_dirs):
    directory, raw, processor, tokenizer = hf_dirs["siglip"]
    adapter = load_model(f"hf:{directory}")
    _check_common(adapter, 32)
    images = _check_transform(adapter, 32)
    tokens = adapter.tokenize(TEXTS)
    assert tokens["input_ids"].shape == (len(TEXTS), 64)  # max_length, as SigLIP was trained
    assert set(tokens) == {"input_ids"}  # and with no attention mask
    ids = tokenizer(TEXTS, padding="max_length", max_length=64, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        want_img = F.normalize(raw.get_image_features(pixel_values=images).pooler_output, dim=-1)
        want_txt = F.normalize(raw.get_text_features(input_ids=ids).pooler_output, dim=-1)
        assert _close(adapter.encode_image(images), want_img)
        assert _close(adapter.encode_text(TEXTS), want_txt)
        # a text's embedding does not depend on the other texts of the batch
        assert _close(adapter.encode_text(TEXTS[:1]), adapter.encode_text(TEXTS)[:1])
    assert adapter.logit_scale.item() == pytest.approx(math.log(10.0))
    assert adapter.logit_bias is not None and adapter.logit_bias.item() == pytest.approx(-10.0)


def test_hf_errors_name_the_input_and_the_fix(tmp_path):
    with pytest.raises(ConfigError, match=r"does not exist"):
        load_model(f"hf:{tmp_path / 'missing'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"cannot load its model.*save_pretrained"):
        load_model(f"hf:{tmp_path / 'empty'}")
    with pytest.raises(ConfigError, match="only used with 'open_clip:ARCH'"):
        load_model(f"hf:{tmp_path / 'empty'}", pretrained="x.pt")


# ---------------------------------------------------------------- mclip's own models


def _tiny_config(tmp_path: Path, kind: str):
    return load_config(
        ROOT / "configs" / "demo.yaml",
        tiny_overrides(tmp_path / "data", tmp_path / "run") + [f"loss.kind={kind}"],
    )


@pytest.mark.parametrize("kind", ["infonce", "sigmoid"])
def test_native_checkpoint_and_run_dir(tmp_path, kind):
    cfg = _tiny_config(tmp_path, kind)
    torch.manual_seed(0)
    model = DualEncoder(cfg.model).eval()
    checkpoint = tmp_path / "run" / "checkpoints" / "step_0000003"
    model.save(checkpoint, cfg)
    for spec in (checkpoint, tmp_path / "run"):  # a checkpoint, or a run: its newest checkpoint
        adapter = load_model(spec)
        assert adapter.name == str(spec)
        _check_common(adapter, 64)
        images = _check_transform(adapter, 32)
        with torch.no_grad():
            assert _close(adapter.encode_image(images), model.encode_image(images))
            assert _close(adapter.encode_text(TEXTS), model.encode_text(TEXTS))
        assert isinstance(adapter.model, DualEncoder) and adapter.config.loss.kind == kind
        if kind == "infonce":
            assert adapter.logit_bias is None
        else:
            assert adapter.logit_bias.item() == pytest.approx(cfg.model.init_logit_bias)
    assert "mclip" in adapter.versions


# ---------------------------------------------------------------- specs and devices


def test_bad_specs_name_the_accepted_forms(tmp_path):
    for spec in (tmp_path / "missing", "openclip:ViT-B-32", "", str(tmp_path)):
        with pytest.raises(ConfigError) as error:
            load_model(spec)
        message = str(error.value)
        for form in ("DIR", "open_clip:ARCH", "hf:NAME_OR_DIR"):
            assert form in message, (spec, message)
    with pytest.raises(ConfigError, match=r"unknown prefix 'openclip:'.*did you mean 'open_clip:'"):
        load_model("openclip:ViT-B-32")
    with pytest.raises(ConfigError, match="not a torch device"):
        load_model("open_clip:ViT-B-32", device="gpu7")
    assert "open_clip:ARCH" in ACCEPTED_FORMS


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_device_places_every_parameter(open_clip_files, hf_dirs, tmp_path, device):
    cfg = _tiny_config(tmp_path, "infonce")
    DualEncoder(cfg.model).save(tmp_path / "ckpt", cfg)
    specs = [
        (tmp_path / "ckpt", None),
        (f"open_clip:{TINY_OPEN_CLIP}", str(open_clip_files[1]["pt"])),
        (f"hf:{hf_dirs['clip'][0]}", None),
        (f"hf:{hf_dirs['siglip'][0]}", None),
    ]
    for spec, pretrained in specs:
        adapter = load_model(spec, pretrained=pretrained, device=device)
        assert adapter.device == torch.device(device)
        assert {p.device.type for p in adapter.parameters()} == {device}, spec
        assert adapter.logit_scale.device.type == device
