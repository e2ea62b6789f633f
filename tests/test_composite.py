"""Composite models: a frozen image tower from an mclip, open_clip or transformers model with an
mclip text tower; it reproduces the source's image embeddings and saves / loads (no network)
like any mclip model."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny_model_config
from mclip.config import ConfigError, load_config
from mclip.data.parallel import parallel_from_shards, write_parallel_tsv
from mclip.data.shards import expand_shards
from mclip.models.adapters import load_model
from mclip.models.composite import composite_config, load_image_tower
from mclip.models.dual import DualEncoder
from mclip.train.trainer import train
from test_adapters import TINY_OPEN_CLIP, hf_dirs, open_clip_files  # noqa: F401 (fixtures)
from test_resume import DEMO, _overrides


def _images(n=3, size=32):
    rng = np.random.default_rng(0)
    return [
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)) for _ in range(n)
    ]


def _source(kind, open_clip_files, hf_dirs, tmp_path):  # noqa: F811
    if kind == "open_clip":
        return load_model(f"open_clip:{TINY_OPEN_CLIP}", pretrained=str(open_clip_files[1]["pt"]))
    if kind in ("clip", "siglip"):
        return load_model(f"hf:{hf_dirs[kind][0]}")
    cfg = tiny_model_config()
    model = DualEncoder(cfg.model)
    model.save(tmp_path / "mclip_source", cfg)
    return load_model(str(tmp_path / "mclip_source"))


@pytest.mark.parametrize("kind", ["mclip", "open_clip", "clip", "siglip"])
@pytest.mark.slow
def test_composite_reproduces_the_source_image_embeddings_and_reloads_offline(
    kind, open_clip_files, hf_dirs, tmp_path
):  # noqa: F811
    source = _source(kind, open_clip_files, hf_dirs, tmp_path)
    cfg, weights = composite_config(tiny_model_config(), source)
    model = DualEncoder(cfg.model)
    load_image_tower(model, weights)
    model.eval()
    assert not any(p.requires_grad for p in model.image.parameters())
    images = _images()
    with torch.no_grad():
        ours = model.encode_image(torch.stack([model.image_transform()(i) for i in images]))
        theirs = source.encode_image(torch.stack([source.image_transform()(i) for i in images]))
    torch.testing.assert_close(ours, theirs, atol=2e-5, rtol=1e-4)
    assert model.logit_scale.item() == pytest.approx(float(source.logit_scale.detach()))

    out = tmp_path / "composite"
    model.save(out, cfg)
    np.save(tmp_path / "expected.npy", ours.numpy())
    # a fresh interpreter, in which the tiny open_clip architecture was never registered
    script = textwrap.dedent(f"""
        import numpy as np, numpy.testing as npt, torch
        from PIL import Image
        from mclip.models.adapters import load_model
        model = load_model({str(out)!r})
        rng = np.random.default_rng(0)
        images = [Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) \
for _ in range(3)]
        with torch.no_grad():
            got = model.encode_image(torch.stack([model.image_transform()(i) for i in images]))
        npt.assert_allclose(got.numpy(), np.load({str(tmp_path / "expected.npy")!r}), atol=1e-6)
        print("ok", model.encode_text(["ein Kreis"]).shape[-1])
    """)
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["ok", str(cfg.model.embed_dim)]


def test_projection_none_needs_matching_sizes():
    cfg = load_config(DEMO, ["model.image.projection=none"])
    with pytest.raises(ConfigError, match="set model.embed_dim=512"):
        DualEncoder(cfg.model)


def test_teacher_learning_from_an_open_clip_teacher_gives_a_composite(
    demo_data, open_clip_files, tmp_path
):  # noqa: F811
    pairs, _ = parallel_from_shards(expand_shards(str(demo_data / "train"))[:1], "en", ["de"])
    parallel = write_parallel_tsv(pairs, tmp_path / "p.tsv")
    run = tmp_path / "run"
    spec = f"open_clip:{TINY_OPEN_CLIP}/{open_clip_files[1]['pt']}"
    train(
        load_config(
            DEMO,
            _overrides(demo_data, run, 2)
            + [f"teacher_learning.teacher={spec}", f"teacher_learning.parallel={parallel}"],
        ),
        quiet=True,
    )
    model = load_model(str(run))
    source = load_model(spec)
    images = torch.stack([source.image_transform()(i) for i in _images()])
    with torch.no_grad():
        torch.testing.assert_close(
            model.encode_image(images), source.encode_image(images), atol=2e-5, rtol=1e-4
        )
    assert model.config.model.image.name == f"open_clip:{TINY_OPEN_CLIP}"
