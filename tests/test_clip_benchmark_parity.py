"""mclip's numbers equal clip-benchmark's (PyPI) on the same model, images and texts.

A random-init tiny open_clip model, a generated ImageFolder and CLIP_benchmark-layout class
texts; retrieval on a Babel-ImageNet-layout caption JSON with two captions per image. The
definitions agree: acc@1, acc@5, mean per-class recall (balanced accuracy); text->image recall
over captions (clip-benchmark ``image_retrieval_recall@k``) and image->text "any caption in the
top k" over images (``text_retrieval_recall@k``).
"""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import register_tiny_open_clip
from mclip.eval.runner import run_tasks
from mclip.eval.suite import make_task
from mclip.models.adapters import load_model

zs = pytest.importorskip("clip_benchmark.metrics.zeroshot_classification")
zr = pytest.importorskip("clip_benchmark.metrics.zeroshot_retrieval")
open_clip = pytest.importorskip("open_clip")

ARCH = "mclip-parity-tiny-vit"
CLASSES = ["cat", "dog", "tree", "car", "boat", "house", "bird"]


def _accuracy_numpy2(output, target, topk=(1,)):
    """clip-benchmark's accuracy with the numpy-2 fix (a 1-element array is not a float)."""
    pred = output.topk(max(topk), 1, True, True)[1].t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    return [correct[:k].reshape(-1).float().sum().item() / len(target) for k in topk]


@pytest.fixture(scope="module")
def tiny_open_clip(tmp_path_factory):
    root = tmp_path_factory.mktemp("parity_model")
    raw = register_tiny_open_clip(root, ARCH)
    torch.save(raw.state_dict(), root / "tiny.pt")
    return raw, load_model(f"open_clip:{ARCH}", pretrained=str(root / "tiny.pt"))


def _noise_image(rng, path):
    Image.fromarray(rng.integers(0, 256, (40, 44, 3), dtype=np.uint8)).save(path)


def test_zeroshot_classification_equals_clip_benchmark(tiny_open_clip, tmp_path, monkeypatch):
    raw, adapter = tiny_open_clip
    rng = np.random.default_rng(0)
    for c, name in enumerate(CLASSES):
        (tmp_path / "images" / f"{c:02d}_{name}").mkdir(parents=True)
        for i in range(4 + c % 3):
            _noise_image(rng, tmp_path / "images" / f"{c:02d}_{name}" / f"{i}.png")
    texts = tmp_path / "texts"
    texts.mkdir()
    templates = ["a photo of a {c}.", "a blurry {c}.", "art of the {c}."]
    (texts / "en_classnames.json").write_text(json.dumps({"toy": CLASSES}))
    (texts / "en_zeroshot_classification_templates.json").write_text(json.dumps({"toy": templates}))

    task = make_task(
        {
            "name": "toy",
            "kind": "zeroshot_classification",
            "languages": ["en"],
            "images": str(tmp_path / "images"),
            "class_texts": str(texts),
            "dataset": "toy",
        },
        tmp_path,
        "test",
    )
    ours = run_tasks(adapter, [task])["toy"]["languages"]["en"]

    import torchvision

    monkeypatch.setattr(zs, "accuracy", _accuracy_numpy2)
    dataset = torchvision.datasets.ImageFolder(
        str(tmp_path / "images"), transform=adapter.image_transform()
    )
    loader = torch.utils.data.DataLoader(dataset, batch_size=8)
    theirs = zs.evaluate(
        raw, loader, open_clip.get_tokenizer(ARCH), CLASSES, templates, "cpu", amp=False
    )
    print("mclip", ours, "\nclip-benchmark", theirs)
    assert ours["acc@1"] == pytest.approx(theirs["acc1"], abs=1e-6)
    assert ours["acc@5"] == pytest.approx(theirs["acc5"], abs=1e-6)
    assert ours["mean_per_class_recall"] == pytest.approx(theirs["mean_per_class_recall"], abs=1e-6)
    assert ours["n_images"] == len(dataset)


class _CaptionedImages(torch.utils.data.Dataset):
    def __init__(self, files, captions, transform):
        self.files, self.captions, self.transform = files, captions, transform

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        return self.transform(Image.open(self.files[i]).convert("RGB")), self.captions[i]


def test_retrieval_equals_clip_benchmark(tiny_open_clip, tmp_path):
    raw, adapter = tiny_open_clip
    rng = np.random.default_rng(1)
    (tmp_path / "images").mkdir()
    names = [f"img{i:03d}.png" for i in range(30)]
    for name in names:
        _noise_image(rng, tmp_path / "images" / name)
    words = ["red", "small", "old", "a", "the", "near", "water", "street", "two", "dog"]
    captions = [[" ".join(rng.choice(words, 5)) for _ in range(2)] for _ in names]
    (tmp_path / "captions.json").write_text(
        json.dumps({"images": names, "captions": {"en": captions}})
    )
    task = make_task(
        {
            "name": "ret",
            "kind": "retrieval",
            "languages": ["en"],
            "captions": str(tmp_path / "captions.json"),
            "images": str(tmp_path / "images"),
            "recall_at": [1, 5, 10],
        },
        tmp_path,
        "test",
    )
    ours = run_tasks(adapter, [task])["ret"]["languages"]["en"]

    dataset = _CaptionedImages(
        [tmp_path / "images" / n for n in names], captions, adapter.image_transform()
    )
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=8,
        collate_fn=lambda b: (torch.stack([x for x, _ in b]), [y for _, y in b]),
    )
    theirs = zr.evaluate(
        raw, loader, open_clip.get_tokenizer(ARCH), "cpu", amp=False, recall_k_list=[1, 5, 10]
    )
    print("mclip", ours, "\nclip-benchmark", theirs)
    for k in (1, 5, 10):
        assert ours[f"text_to_image_R@{k}"] == pytest.approx(
            theirs[f"image_retrieval_recall@{k}"], abs=1e-6
        )
        assert ours[f"image_to_text_R@{k}"] == pytest.approx(
            theirs[f"text_retrieval_recall@{k}"], abs=1e-6
        )
