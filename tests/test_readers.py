"""Evaluation data readers (mclip.eval.datasets): real files from ../shared/data where present,
and small generated copies of every layout."""

import gzip
import io
import json
import tarfile

import pytest
from PIL import Image

from conftest import SHARED_DATA
from mclip.config import ConfigError
from mclip.data.shards import SkipCounter
from mclip.eval.datasets import (
    BabelImageNetTexts,
    BabelRetrievalSet,
    CaptionShardSet,
    ClipBenchmarkTexts,
    CsvCaptionSet,
    ImageFolderSet,
    LabelledShardSet,
    Multi30kTask1,
    Multi30kTask2,
    XM3600Set,
    XTD10Set,
    open_class_texts,
    open_image_set,
    open_retrieval,
)
from mclip.eval.zeroshot import fill_template

MULTI30K = SHARED_DATA / "multi30k"
CLIP_BENCHMARK = SHARED_DATA / "clip_benchmark"
BABEL = SHARED_DATA / "babel_imagenet"
BABEL_LABELS = BABEL / "babel_imagenet.json"
BABEL_PROMPTS = BABEL / "nllb_dist13b_prompts.json"


def _need(path):
    if not path.exists():
        pytest.skip(f"{path} is absent (../shared/data)")


def _png(size=(2, 2), colour=(200, 10, 10)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _write_tar(path, samples):
    """samples: list of {"__key__": k, ext: bytes}."""
    with tarfile.open(path, "w") as tar:
        for sample in samples:
            for ext, data in sample.items():
                if ext == "__key__":
                    continue
                info = tarfile.TarInfo(f"{sample['__key__']}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def _keys(image_set):
    return [item.key for item in image_set.items(SkipCounter())]


# ---------------------------------------------------------------- real files: Multi30K


def test_multi30k_task1_real_captions_with_absent_images(tmp_path):
    _need(MULTI30K / "task1")
    reader = open_retrieval(MULTI30K / "task1", tmp_path)
    assert isinstance(reader, Multi30kTask1)
    assert reader.languages() == ["cs", "de", "en", "fr"]
    items = list(reader.items(SkipCounter()))
    assert len(items) == 1000 and items[0].key == "1007129816.jpg"
    assert all(item.path.parent == tmp_path and not item.path.exists() for item in items)
    expected = gzip.decompress((MULTI30K / "task1/raw/test_2016_flickr.de.gz").read_bytes())
    de = reader.captions("de")
    assert de.texts == [line.strip() for line in expected.decode().splitlines()]
    assert de.image_keys == [item.key for item in items] and not de.skipped
    with pytest.raises(ConfigError, match="'ja' is not in .*languages there: cs, de, en, fr"):
        reader.captions("ja")


@pytest.mark.parametrize(
    "split,n,languages",
    [
        ("test_2017_flickr", 1000, ["de", "en", "fr"]),
        ("test_2017_mscoco", 461, ["de", "en", "fr"]),
        ("test_2018_flickr", 1071, ["cs", "de", "en", "fr"]),
    ],
)
def test_multi30k_task1_other_splits(tmp_path, split, n, languages):
    _need(MULTI30K / "task1")
    reader = Multi30kTask1(MULTI30K / "task1", tmp_path, split=split)
    assert reader.languages() == languages and len(_keys(reader)) == n
    assert len(reader.captions("en").texts) == n
    if split == "test_2017_mscoco":  # key keeps the caption id, the file does not
        item = next(reader.items(SkipCounter()))
        assert "#" in item.key and item.path.name == item.key.split("#")[0]


def test_multi30k_split_errors_name_file_and_choices(tmp_path):
    _need(MULTI30K / "task1")
    with pytest.raises(
        ConfigError,
        match=r"expected 'test_2099\.txt'.*image_splits.*splits there: "
        r"test_2016_flickr, test_2017_flickr",
    ):
        Multi30kTask1(MULTI30K / "task1", tmp_path, split="test_2099")
    with pytest.raises(ConfigError, match="images folder .* does not exist .*Flickr30k"):
        Multi30kTask1(MULTI30K / "task1", tmp_path / "nope")
    with pytest.raises(ConfigError, match="holds Multi30K tasks task1, task2"):
        open_retrieval(MULTI30K, tmp_path)


def test_multi30k_task2_real_five_captions_per_image(tmp_path):
    _need(MULTI30K / "task2")
    reader = open_retrieval(MULTI30K / "task2", tmp_path)
    assert isinstance(reader, Multi30kTask2) and reader.languages() == ["de", "en"]
    keys = _keys(reader)
    en = reader.captions("en")
    assert len(keys) == 1000 and len(en.texts) == 5000
    third = gzip.decompress((MULTI30K / "task2/raw/test_2016.3.en.gz").read_bytes()).decode()
    line = third.splitlines()[7].strip()  # caption 3 of image 8 is line 8 of file 3
    assert en.texts[7 * 5 + 2] == line and en.image_keys[7 * 5 + 2] == keys[7]
    assert en.image_keys == [k for k in keys for _ in range(5)]


# ---------------------------------------------------------------- real files: class texts


def test_clip_benchmark_real_en_cn_it():
    _need(CLIP_BENCHMARK)
    reader = open_class_texts(CLIP_BENCHMARK)
    assert isinstance(reader, ClipBenchmarkTexts)
    assert reader.languages() == ["en", "it", "zh"]
    assert "imagenet1k" in reader.datasets() and reader.datasets("zh") == ["imagenet1k"]
    for language in ("en", "it", "zh"):
        texts = reader.load(language, "imagenet1k")
        assert len(texts.names) == 1000 and len(texts.templates) > 0
        assert all("{c}" in t for t in texts.templates) and texts.language == language
    assert "cn" in reader.load("zh", "imagenet1k").source
    with pytest.raises(ConfigError, match="'cn' is CLIP_benchmark's code; mclip calls it 'zh'"):
        reader.load("cn", "imagenet1k")
    with pytest.raises(ConfigError, match="no class names for dataset 'cifar10'"):
        reader.load("en", "cifar10")
    with pytest.raises(ConfigError, match="no templates for dataset 'caltech101_vtab'"):
        reader.load("en", "caltech101_vtab")
    assert reader.load("en", "caltech101_vtab", default_templates=["a photo of a {c}."]).templates
    with pytest.raises(ConfigError, match="name one of"):
        reader.load("en")


def test_babel_imagenet_real_labels_every_language():
    _need(BABEL_LABELS)
    reader = open_class_texts(BABEL_LABELS, prompts=BABEL_PROMPTS)
    assert isinstance(reader, BabelImageNetTexts)
    raw = json.loads(BABEL_LABELS.read_text())
    assert reader.languages() == sorted(code.lower() for code in raw) and len(raw) >= 93
    sizes = {}
    for language in reader.languages():
        texts = reader.load(language)
        assert len(texts.names) == 1000
        sizes[language] = len(texts.kept_classes())
        assert texts.kept_classes() == sorted(raw[language.upper()][0])
    assert min(sizes.values()) == 18 and max(sizes.values()) == 1000 and sizes["en"] == 1000
    for language in ("br", "fy", "la"):  # no translated prompts: the bare label
        assert reader.load(language).templates == ["{}"] and not reader.has_prompts(language)
        assert "bare label" in reader.load(language).source
    assert len(reader.load("en").templates) == 80 and reader.has_prompts("en")
    assert reader.load("en").names[0] == "Tinca tinca"  # BabelNet's English, not OpenAI's
    assert all(
        len(reader.load(lang).templates) == 80
        for lang in reader.languages()
        if lang not in ("br", "fy", "la")
    )
    de = reader.load("de")
    assert len(de.templates) == 80 and all("{}" in t for t in de.templates)
    assert de.names[raw["DE"][0][0]] == raw["DE"][1][0]
    assert fill_template(de.templates[0], "Goldfisch") != de.templates[0]
    with pytest.raises(ConfigError, match="mclip codes are lowercase: use 'de'"):
        reader.load("DE")
    english = BabelImageNetTexts(
        BABEL_LABELS, BABEL_PROMPTS, extra_templates={"en": ["a photo of a {}."]}
    )
    assert english.load("en").templates == ["a photo of a {}."]
    assert "given by the caller" in english.load("en").source
    assert BabelImageNetTexts(BABEL_LABELS).load("de").templates == ["{}"]  # no prompts file


# ---------------------------------------------------------------- generated: classification


def test_babel_subset_rule_on_a_1000_class_imagefolder(tmp_path):
    png = _png()
    root = tmp_path / "val"
    for index in range(1000):
        folder = root / f"n{index:08d}"
        folder.mkdir(parents=True)
        (folder / "a.png").write_bytes(png)
    own = [999, 3, 500, 17]
    labels = {"DE": [own, ["z", "d", "m", "q"]], "EN": [list(range(1000)), ["x"] * 1000]}
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    texts = BabelImageNetTexts(tmp_path / "labels.json").load("de")
    images = ImageFolderSet(root)
    assert len(images.classes) == 1000 == len(texts.names)
    kept = [item for item in images.items(SkipCounter()) if texts.names[item.label] is not None]
    assert sorted(item.label for item in kept) == sorted(own) == texts.kept_classes()
    assert [texts.names[item.label] for item in kept] == ["d", "q", "m", "z"]
    assert texts.templates == ["{}"]


def test_imagefolder_order_extensions_and_fingerprint(tmp_path):
    png = _png()
    for name in (
        "b/2.PNG",
        "b/1.jpg",
        "b/sub/0.webp",
        "a/x.JPEG",
        "a/notes.txt",
        "c/.keep",
        ".ipynb_checkpoints/y.png",
        "d/z.bmp",
    ):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png)
    (tmp_path / "c/.keep").unlink()
    images = open_image_set(tmp_path)
    assert isinstance(images, ImageFolderSet)
    assert images.classes == ["a", "b", "c", "d"]  # empty c keeps its index; hidden is no class
    items = list(images.items(SkipCounter()))
    assert [(i.key, i.label) for i in items] == [
        ("a/x.JPEG", 0),
        ("b/1.jpg", 1),
        ("b/2.PNG", 1),
        ("b/sub/0.webp", 1),
        ("d/z.bmp", 3),
    ]
    assert items[0].open().size == (2, 2)
    before = images.fingerprint()
    assert ImageFolderSet(tmp_path).fingerprint() == before
    (tmp_path / "a/y.png").write_bytes(png)
    assert ImageFolderSet(tmp_path).fingerprint() != before
    with pytest.raises(ConfigError, match="no class sub-folders"):
        ImageFolderSet(tmp_path / "a")


def test_labelled_shards_count_unlabelled_samples(tmp_path):
    png = _png()
    _write_tar(
        tmp_path / "00000.tar",
        [
            {"__key__": "s0", "png": png, "cls": b"3"},
            {"__key__": "s1", "jpg": png, "json": json.dumps({"label": 7}).encode()},
            {"__key__": "s2", "png": png, "json": b"{}"},
            {"__key__": "s3", "cls": b"1"},
        ],
    )
    _write_tar(tmp_path / "00001.tar", [{"__key__": "s4", "webp": png, "cls": b" 0\n"}])
    images = open_image_set(str(tmp_path / "{00000..00001}.tar"))
    assert isinstance(images, LabelledShardSet)
    skipped = SkipCounter()
    items = list(images.items(skipped))
    assert [(i.key, i.label) for i in items] == [("s0", 3), ("s1", 7), ("s4", 0)]
    assert skipped == {"missing_label": 1, "missing_image": 1}
    assert items[1].data == png and items[1].open().size == (2, 2)
    assert open_image_set(tmp_path).fingerprint() == images.fingerprint()


# ---------------------------------------------------------------- generated: class texts


def test_clip_benchmark_generated_gz_and_jp(tmp_path):
    (tmp_path / "jp_classnames.json.gz").write_bytes(
        gzip.compress(json.dumps({"toy": ["猫", "犬"]}).encode())
    )
    (tmp_path / "jp_zeroshot_classification_templates.json").write_text(
        json.dumps({"toy": ["{c}の写真"]})
    )
    (tmp_path / "de_classnames.json").write_text(json.dumps({"toy": ["Katze", "Hund"]}))
    reader = open_class_texts(tmp_path)
    assert reader.languages() == ["de", "ja"]
    assert reader.load("ja", "toy").names == ["猫", "犬"]
    with pytest.raises(ConfigError, match="expected 'de_zeroshot_classification_templates.json'"):
        reader.load("de", "toy")


def test_babel_labels_any_number_of_languages_and_bad_files(tmp_path):
    codes = [f"L{i:03d}" for i in range(300)] + ["ACW", "ZH"]
    labels = {
        code: [[i % 10 for i in range(10)], [f"{code}-{i}" for i in range(10)]] for code in codes
    }
    (tmp_path / "big.json").write_text(json.dumps(labels))
    (tmp_path / "prompts.json").write_text(json.dumps({"ZH": ["{}的照片"], "ACW": []}))
    reader = open_class_texts(tmp_path / "big.json", prompts=tmp_path / "prompts.json")
    assert len(reader.languages()) == 302 and "acw" in reader.languages()
    assert reader.load("zh").templates == ["{}的照片"] and reader.load("acw").templates == ["{}"]
    assert reader.datasets() == ["imagenet1k"]
    (tmp_path / "bad.json").write_text(json.dumps({"DE": [[0, 1000], ["a", "b"]]}))
    with pytest.raises(ConfigError, match="language 'DE': class index 1000 is not in 0..999"):
        BabelImageNetTexts(tmp_path / "bad.json")
    (tmp_path / "odd.json").write_text(json.dumps({"DE": [[0, 1], ["a"]]}))
    with pytest.raises(ConfigError, match="2 class indices but 1 labels"):
        BabelImageNetTexts(tmp_path / "odd.json")
    assert len(BabelImageNetTexts(tmp_path / "big.json", n_classes=10).load("zh").names) == 10


# ---------------------------------------------------------------- generated: retrieval


def _xtd10(root, captions, gz=False):
    root.mkdir(parents=True, exist_ok=True)
    (root / "test_image_names.txt").write_text("a.jpg\nb.jpg\nc.jpg\n")
    for code, lines in captions.items():
        data = ("\n".join(lines) + "\n").encode()
        name = f"test_1kcaptions_{code}.txt"
        if gz:
            (root / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (root / name).write_bytes(data)


@pytest.mark.parametrize("gz", [False, True])
def test_xtd10_generated(tmp_path, gz):
    _xtd10(tmp_path / "xtd", {"en": ["a cat", " ", "a car\r"], "jp": ["猫", "犬", "車"]}, gz=gz)
    (tmp_path / "img").mkdir()
    reader = open_retrieval(tmp_path / "xtd", tmp_path / "img")
    assert isinstance(reader, XTD10Set) and reader.languages() == ["en", "ja"]
    en = reader.captions("en")
    assert en.texts == ["a cat", "a car"] and en.image_keys == ["a.jpg", "c.jpg"]
    assert en.skipped["empty_caption"] == 1
    assert reader.captions("ja").image_keys == _keys(reader) == ["a.jpg", "b.jpg", "c.jpg"]
    with pytest.raises(ConfigError, match="'jp' is XTD10's code; mclip calls it 'ja'"):
        reader.captions("jp")
    assert isinstance(
        open_retrieval(tmp_path / "xtd/test_image_names.txt", tmp_path / "img"), XTD10Set
    )


def test_line_aligned_length_mismatch_and_missing_files(tmp_path):
    _xtd10(tmp_path / "xtd", {"de": ["eins", "zwei"]})
    (tmp_path / "img").mkdir()
    reader = XTD10Set(tmp_path / "xtd", tmp_path / "img")
    with pytest.raises(
        ConfigError,
        match=r"test_1kcaptions_de\.txt' has 2 lines but image list "
        r"'.*test_image_names\.txt' has 3",
    ):
        reader.captions("de")
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        ConfigError, match=rf"expected 'test_image_names\.txt' .* in '{tmp_path}/empty'"
    ):
        XTD10Set(tmp_path / "empty", tmp_path / "img")
    with pytest.raises(ConfigError, match="needs the folder of its images"):
        open_retrieval(tmp_path / "xtd")


def test_multi30k_generated_task2_missing_file_and_gz_free(tmp_path):
    root = tmp_path / "task2"
    (root / "image_splits").mkdir(parents=True)
    (root / "raw").mkdir()
    (root / "image_splits/test_2016_images.txt").write_text("x.jpg\ny.jpg\n")
    for i in (1, 2, 3):
        (root / f"raw/test_2016.{i}.en").write_text(f"x{i}\ny{i}\n")
    reader = open_retrieval(root, tmp_path)
    assert isinstance(reader, Multi30kTask2)
    en = reader.captions("en")
    assert en.texts == ["x1", "x2", "x3", "y1", "y2", "y3"]
    assert en.image_keys == ["x.jpg"] * 3 + ["y.jpg"] * 3
    (root / "raw/test_2016.5.en").write_text("x5\ny5\n")
    with pytest.raises(ConfigError, match=r"'test_2016\.4\.en\.gz' is missing"):
        Multi30kTask2(root, tmp_path)


def test_xm3600_keeps_every_caption(tmp_path):
    records = [
        {
            "image/key": "00aa",
            "image/locale": "de",
            "de": {"caption": ["ein Hund", "ein brauner Hund"], "caption/tokenized": ["x"]},
            "en": {"caption": ["a dog"]},
        },
        {"image/key": "00bb", "image/locale": "en", "en": {"caption": ["a cat", "", "two cats"]}},
    ]
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    (tmp_path / "captions.jsonl.gz").write_bytes(gzip.compress(text.encode()))
    (tmp_path / "images").mkdir()
    reader = open_retrieval(tmp_path / "captions.jsonl.gz", tmp_path / "images")
    assert isinstance(reader, XM3600Set) and reader.languages() == ["de", "en"]
    items = list(reader.items(SkipCounter()))
    assert [i.path.name for i in items] == ["00aa.jpg", "00bb.jpg"]
    en = reader.captions("en")
    assert en.texts == ["a dog", "a cat", "two cats"] and en.image_keys == ["00aa", "00bb", "00bb"]
    assert en.skipped["empty_caption"] == 1
    assert reader.captions("de").texts == ["ein Hund", "ein brauner Hund"]
    with pytest.raises(
        ConfigError,
        match=r"language 'fr' is not in '.*captions\.jsonl\.gz'; "
        r"languages there: de, en",
    ):
        reader.captions("fr")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder/captions.jsonl").write_text(text)
    assert isinstance(open_retrieval(tmp_path / "folder", tmp_path / "images"), XM3600Set)


def test_babel_retrieval_json(tmp_path):
    data = {
        "images": ["p/1.jpg", "p/2.jpg"],
        "captions": {"de": [["eins", "uno"], []], "zh": [["一"], ["二"]]},
    }
    (tmp_path / "xtd.json").write_text(json.dumps(data, ensure_ascii=False))
    reader = open_retrieval(tmp_path / "xtd.json", tmp_path)
    assert isinstance(reader, BabelRetrievalSet) and reader.languages() == ["de", "zh"]
    de = reader.captions("de")
    assert de.texts == ["eins", "uno"] and de.image_keys == ["p/1.jpg"] * 2
    paths = [i.path for i in reader.items(SkipCounter())]
    assert paths == [tmp_path / "p/1.jpg", tmp_path / "p/2.jpg"]
    data["captions"]["fr"] = [["un"]]
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="'fr' has 1 caption entries but there are 2 images"):
        open_retrieval(tmp_path / "bad.json", tmp_path)


@pytest.mark.parametrize(
    "name,separator", [("c.csv", ","), ("c.tsv", "\t"), ("tab.csv", "\t"), ("c.tsv.gz", "\t")]
)
def test_csv_and_tsv(tmp_path, name, separator):
    rows = [
        ["filepath", "title", "lang"],
        ["a.png", "a red square", "en"],
        ["a.png", "ein rotes Quadrat", "de"],
        ["b.png", "", "de"],
        ["/abs/c.png", "x, y", "en"],
    ]
    text = "".join(separator.join(f'"{c}"' if "," in c else c for c in row) + "\n" for row in rows)
    path = tmp_path / name
    path.write_bytes(gzip.compress(text.encode()) if name.endswith(".gz") else text.encode())
    reader = open_retrieval(path, language_column="lang")
    assert isinstance(reader, CsvCaptionSet) and reader.languages() == ["de", "en"]
    items = list(reader.items(SkipCounter()))
    assert [i.key for i in items] == ["a.png", "b.png", "/abs/c.png"]
    assert items[0].path == tmp_path / "a.png" and str(items[2].path) == "/abs/c.png"
    en = reader.captions("en")
    assert en.texts == ["a red square", "x, y"] and en.image_keys == ["a.png", "/abs/c.png"]
    assert reader.captions("de").skipped["empty_caption"] == 1
    plain = CsvCaptionSet(path, language="de")
    assert plain.languages() == ["de"] and len(plain.captions("de").texts) == 3
    with pytest.raises(ConfigError, match="lacks the column.*'image'"):
        CsvCaptionSet(path, image_column="image")


def test_caption_shards_by_language(tmp_path):
    png = _png()
    _write_tar(
        tmp_path / "00000.tar",
        [
            {
                "__key__": "k0",
                "jpg": png,
                "json": json.dumps(
                    {"captions": {"de": ["ein Bild", " "], "EN": ["a picture"]}}
                ).encode(),
            },
            {
                "__key__": "k1",
                "jpg": png,
                "txt": "une image".encode(),
                "json": json.dumps({"LANGUAGE": "fr", "url": "u"}).encode(),
            },
            {"__key__": "k2", "png": png, "txt": b"plain"},
            {"__key__": "k3", "txt": b"no image"},
        ],
    )
    reader = open_retrieval(tmp_path / "00000.tar")
    assert isinstance(reader, CaptionShardSet)
    skipped = SkipCounter()
    assert [i.key for i in reader.items(skipped)] == ["k0", "k1", "k2"]
    assert skipped == {"missing_image": 1}
    assert reader.languages() == ["de", "en", "fr"]
    assert reader.captions("de").texts == ["ein Bild"]
    en = reader.captions("en")
    assert en.texts == ["a picture", "plain"] and en.image_keys == ["k0", "k2"]
    assert open_retrieval(str(tmp_path / "*.tar"), language="es").languages() == [
        "de",
        "en",
        "es",
        "fr",
    ]


def test_layout_detection_errors(tmp_path):
    (tmp_path / "other.json").write_text(json.dumps({"a": 1}))
    with pytest.raises(
        ConfigError,
        match="(?s)fit no known layout.*XTD10 folder.*Multi30K.*XM3600"
        ".*Babel-ImageNet retrieval.*csv.*WebDataset",
    ):
        open_retrieval(tmp_path / "other.json", tmp_path)
    with pytest.raises(
        ConfigError, match="(?s)fit no known layout.*CLIP_benchmark.*Babel-ImageNet"
    ):
        open_class_texts(tmp_path / "other.json")
    with pytest.raises(ConfigError, match="do not exist"):
        open_retrieval(tmp_path / "missing", tmp_path)
    with pytest.raises(ConfigError, match="fit no known layout"):
        open_class_texts(tmp_path)
    with pytest.raises(ConfigError, match="matches no shard|do not exist"):
        open_retrieval(str(tmp_path / "nothing-*.tar"))
