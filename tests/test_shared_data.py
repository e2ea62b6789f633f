"""Real class names and templates from ../shared/data (skipped when it is absent)."""

import json

import pytest
import torch
import torch.nn.functional as F

from conftest import SHARED_DATA
from mclip.config import ConfigError
from mclip.eval.datasets import ClipBenchmarkTexts
from mclip.eval.zeroshot import build_classifier, evaluate_language, fill_template

CLIP_BENCHMARK = SHARED_DATA / "clip_benchmark"
pytestmark = pytest.mark.skipif(not CLIP_BENCHMARK.is_dir(), reason="../shared/data is absent")


def load_class_texts(directory, lang, dataset):
    texts = ClipBenchmarkTexts(directory).load(lang, dataset)
    return texts.names, texts.templates


def _hash_encoder(texts):
    out = []
    for text in texts:
        g = torch.Generator().manual_seed(hash(text) % (2**31))
        out.append(torch.randn(16, generator=g))
    return F.normalize(torch.stack(out), dim=-1)


def test_chinese_is_read_from_cn_files_and_codes_are_not_guessed():
    names, templates = load_class_texts(CLIP_BENCHMARK, "zh", "imagenet1k")
    assert len(names) == 1000 and len(templates) == 80 and all("{c}" in t for t in templates)
    with pytest.raises(ConfigError, match="cn2.*en, it, zh"):
        load_class_texts(CLIP_BENCHMARK, "cn2", "imagenet1k")
    with pytest.raises(ConfigError, match="imagenet21k"):
        load_class_texts(CLIP_BENCHMARK, "it", "imagenet1k".replace("1k", "21k"))


@pytest.mark.parametrize("lang,duplicates", [("en", 2), ("it", 19)])
def test_duplicate_imagenet_names_tie_deterministically(lang, duplicates):
    names, templates = load_class_texts(CLIP_BENCHMARK, lang, "imagenet1k")
    repeated = {n for n in names if names.count(n) > 1}
    assert len(repeated) == duplicates
    first = {n: names.index(n) for n in repeated}
    second = {n: len(names) - 1 - names[::-1].index(n) for n in repeated}
    classifier = build_classifier(_hash_encoder, names, templates[:2])
    # an image equal to a duplicated class embedding: both classes tie, the lower index wins
    labels = torch.tensor(
        [second[n] for n in sorted(repeated)] + [first[n] for n in sorted(repeated)]
    )
    images = classifier[labels]
    result = evaluate_language(images, labels, _hash_encoder, names, templates[:2], top_k=(1, 5))
    assert result["acc@1"] == pytest.approx(0.5)
    assert result["acc@5"] == 1.0 and result["n_classes"] == 1000


def test_babel_imagenet_prompts_use_braces():
    prompts = json.loads((SHARED_DATA / "babel_imagenet" / "nllb_dist13b_prompts.json").read_text())
    lang, templates = next(iter(prompts.items()))
    assert all("{}" in t for t in templates[:5]), lang
    assert "{}" not in fill_template(templates[0], "X") and "X" in fill_template(templates[0], "X")
