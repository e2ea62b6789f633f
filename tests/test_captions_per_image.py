"""data.captions_per_image: k captions of one image as k texts of one batch, exact everywhere.

The reference is the single-process full batch: both towers run once on every image and text
with autograd, and the dense multi-positive loss (``mclip.losses.reference``) is back-propagated.
The trainer's step (tiled loss, gradient cache, 2 gloo ranks) must give its loss and gradients.
"""

import json

import pytest
import torch

from mclip.config import LossConfig, config_from_dict
from mclip.data.languages import LanguagePolicy
from mclip.data.pipeline import TrainStream
from mclip.losses.gather import make_gather_groups
from mclip.losses.objective import ContrastiveObjective
from mclip.losses.reference import infonce_reference, sigmoid_reference
from mclip.models.dual import DualEncoder
from mclip.train.distributed import average_gradients
from mclip.train.trainer import step_gradients
from test_data import TRANSFORM, _txt_sample, _write
from conftest import on_gloo_ranks
from test_distributed import _close

CPU = torch.device("cpu")
K = 3  # captions per image
LOCAL = 4  # images per rank


def _model():
    cfg = config_from_dict(
        {
            "model": {
                "embed_dim": 16,
                "image": {"name": "vit_tiny_patch16_224", "image_size": 32},
                "text": {
                    "hidden_size": 32,
                    "num_layers": 1,
                    "num_heads": 2,
                    "intermediate_size": 64,
                    "max_length": 40,
                    "dropout": 0.0,
                },
            }
        }
    )
    torch.manual_seed(0)
    return DualEncoder(cfg.model)


def _batch(model, n_images):
    g = torch.Generator().manual_seed(7)
    images = torch.randn(n_images, 3, 32, 32, generator=g)
    texts = [
        f"image {i} caption {c} " + "xyz" * int(torch.randint(0, 5, (1,), generator=g))
        for i in range(n_images)
        for c in range(K)
    ]
    return images, model.tokenize(texts), torch.arange(n_images).repeat_interleave(K)


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _full_batch_reference(kind, images, tokens, text_to_image):
    model = _model()
    model.logit_bias.requires_grad_(kind == "sigmoid")
    image_emb, text_emb = model.encode_image(images), model.encode_text(tokens)
    if kind == "infonce":
        loss = infonce_reference(image_emb, text_emb, model.logit_scale, text_to_image)
    else:
        loss = sigmoid_reference(
            image_emb, text_emb, model.logit_scale, model.logit_bias, text_to_image
        )
    loss.backward()
    return loss.item(), _grads(model)


def _step(kind, images, tokens, text_to_image, micro_batches, groups=None, world=1):
    model = _model()
    objective = ContrastiveObjective(LossConfig(kind=kind), groups)
    model.logit_bias.requires_grad_(objective.uses_bias)
    model.zero_grad(set_to_none=True)
    loss = step_gradients(
        model,
        objective,
        images,
        tokens,
        micro_batches,
        CPU,
        world_size=world,
        text_to_image=text_to_image,
    )
    if world > 1:
        average_gradients(model, world)
    return loss.item(), _grads(model)


@pytest.mark.parametrize("kind", ["infonce", "sigmoid"])
@pytest.mark.parametrize("micro_batches", [1, 3])
def test_step_with_several_captions_equals_the_full_batch(kind, micro_batches):
    images, tokens, text_to_image = _batch(_model(), 2 * LOCAL)
    loss, grads = _step(kind, images, tokens, text_to_image, micro_batches)
    ref_loss, ref_grads = _full_batch_reference(kind, images, tokens, text_to_image)
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    assert _close(grads, ref_grads)
    # the multi-positive loss is not the one-caption loss of the same images
    first = torch.arange(0, 2 * LOCAL * K, K)
    one, _ = _full_batch_reference(kind, images, {k: v[first] for k, v in tokens.items()}, None)
    assert abs(one - ref_loss) > 1e-3


def _rank_results(rank, world):
    images, tokens, _ = _batch(_model(), world * LOCAL)
    rows, texts = (
        slice(rank * LOCAL, (rank + 1) * LOCAL),
        slice(rank * LOCAL * K, (rank + 1) * LOCAL * K),
    )
    local_text_to_image = torch.arange(LOCAL).repeat_interleave(K)
    return {
        (kind, micro): _step(
            kind,
            images[rows],
            {k: v[texts] for k, v in tokens.items()},
            local_text_to_image,
            micro,
            make_gather_groups(world),
            world,
        )
        for kind in ("infonce", "sigmoid")
        for micro in (1, 2)
    }


@pytest.mark.slow
def test_two_gloo_ranks_with_several_captions_equal_the_full_batch(tmp_path):
    results = on_gloo_ranks(_rank_results, tmp_path)
    images, tokens, text_to_image = _batch(_model(), 2 * LOCAL)
    for kind in ("infonce", "sigmoid"):
        ref_loss, ref_grads = _full_batch_reference(kind, images, tokens, text_to_image)
        for micro in (1, 2):
            loss, grads = results[kind, micro]
            assert loss == pytest.approx(ref_loss, rel=1e-5), (kind, micro)
            assert _close(grads, ref_grads), (kind, micro)


def _multilingual_sample(key, captions):
    return {**_txt_sample(key, "unused"), "json": json.dumps({"captions": captions}).encode()}


def test_stream_puts_k_captions_in_k_languages_next_to_their_image(tmp_path):
    _write(
        tmp_path / "a.tar",
        [
            _multilingual_sample(
                "0",
                {
                    "en": ["a red circle", "a round red thing"],
                    "de": ["ein roter Kreis"],
                    "fr": ["un cercle rouge"],
                    "sw": ["duara jekundu"],
                },
            ),
            _multilingual_sample(
                "1", {"en": ["a blue star"], "de": ["ein blauer Stern"], "ja": ["青い星"]}
            ),
            _multilingual_sample("2", {"en": ["a green square", "a square, green"]}),
        ],
    )
    stream = TrainStream(
        [str(tmp_path / "a.tar")],
        TRANSFORM,
        LanguagePolicy(),
        3,
        shuffle_size=1,
        captions_per_image=K,
    )
    batch = next(iter(stream))
    assert batch["images"].shape[0] == 3 and len(batch["texts"]) == 3 * K
    assert batch["text_to_image"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert len(set(batch["languages"][0:3])) == 3  # four languages available: three distinct
    assert sorted(batch["texts"][3:6]) == sorted(["a blue star", "ein blauer Stern", "青い星"])
    # one language with two captions: both, then one again (counted, never silent)
    assert sorted(batch["texts"][6:8]) == ["a green square", "a square, green"]
    assert batch["texts"][8] in ("a green square", "a square, green")
    assert batch["skipped"] == {"caption_repeated_to_fill_captions_per_image": 1}
    # a language restriction holds for every caption
    german = TrainStream(
        [str(tmp_path / "a.tar")],
        TRANSFORM,
        LanguagePolicy(languages=["de", "fr"]),
        2,
        shuffle_size=1,
        captions_per_image=2,
    )
    batch = next(iter(german))
    assert set(batch["languages"]) <= {"de", "fr"}
    assert sorted(batch["texts"][:2]) == ["ein roter Kreis", "un cercle rouge"]
    # one caption per image is the default, with the diagonal map
    single = next(
        iter(TrainStream([str(tmp_path / "a.tar")], TRANSFORM, LanguagePolicy(), 3, shuffle_size=1))
    )
    assert single["text_to_image"].tolist() == [0, 1, 2] and len(single["texts"]) == 3


def test_captions_per_image_must_be_positive():
    with pytest.raises(Exception, match="data.captions_per_image"):
        config_from_dict({"data": {"captions_per_image": 0}})
