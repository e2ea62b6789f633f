"""Topic matching (MVL-SIB adapted to dual encoders): readers, metric by hand, runner, demo."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from mclip.config import ConfigError
from mclip.data.shards import SkipCounter
from mclip.eval.datasets import MvlSibTopics, TsvTopics, open_topics
from mclip.eval.datasets.codes import FLORES, FLORES_200
from mclip.eval.runner import RUNNERS, run_tasks
from mclip.eval.suite import load_suite, make_task
from mclip.eval.topic_matching import mean_embeddings, rank_topics, run_topic_matching

ROOT = Path(__file__).resolve().parents[1]
SIB_TOPICS = ("science/technology", "sports", "travel")


def _image(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (36, 36, 3), dtype=np.uint8)).save(path)


def _sib_tsv(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["index_id\tcategory\ttext"] + ["\t".join(map(str, row)) for row in rows]
    path.write_text("\n".join(lines) + "\n", "utf-8")


def make_mvl_sib(root: Path, languages=("eng_Latn", "deu_Latn", "xyz_Latn"), images=2) -> Path:
    """A small copy of the published MVL-SIB repository: data/sib200/{flores}/{split}.tsv and
    data/images/sib200/{topic}_{n}.png (topic 'science' where SIB-200 says science/technology)."""
    for code in languages:
        for split, ids in (("train", range(0, 6)), ("dev", range(6, 8)), ("test", range(8, 10))):
            rows = [
                (i, SIB_TOPICS[i % 3], f"{code} sentence {i} about {SIB_TOPICS[i % 3]}")
                for i in ids
            ]
            if split == "test" and code == "deu_Latn":
                rows += [
                    (90, "sports", ""),
                    (91, "cooking", "Kochen ist ein Thema."),
                    (92, "sports", '"""Zitat"" im Satz"'),
                ]  # quoted as pandas writes it
            _sib_tsv(root / "data" / "sib200" / code / f"{split}.tsv", rows)
    for t, topic in enumerate(("science", "sports", "travel")):
        for n in range(images):
            _image(root / "data" / "images" / "sib200" / f"{topic}_{n}.png", 10 * t + n)
    return root


def make_topic_folders(root: Path, rows: list[str]) -> Path:
    for t, topic in enumerate(("apple", "boat")):
        for n in range(2):
            _image(root / topic / f"{n}.png", 100 + 10 * t + n)
    (root / "sentences.tsv").write_text("\n".join(rows) + "\n", "utf-8")
    return root


# --- Flores-200 codes ------------------------------------------------------------------------


def test_flores_table_is_explicit_and_unknown_codes_are_kept():
    assert len(FLORES_200) == 206 and len(set(FLORES_200.values())) == 206
    assert FLORES.to_mclip("deu_Latn") == "de" and FLORES.to_mclip("zho_Hans") == "zh"
    assert FLORES.to_mclip("zho_Hant") == "zh-hant" and FLORES.to_mclip("arb_Arab") == "ar"
    assert FLORES.to_mclip("swh_Latn") == "sw" and FLORES.to_mclip("prs_Arab") == "prs"
    assert FLORES.to_mclip("xyz_Latn") == "xyz_Latn" and not FLORES.knows("xyz_Latn")


# --- readers ---------------------------------------------------------------------------------


def test_mvl_sib_layout_reads_languages_topics_and_skips(tmp_path):
    root = make_mvl_sib(tmp_path / "mvl-sib")
    topics = open_topics(root)
    assert isinstance(topics, MvlSibTopics) and topics.layout == "MVL-SIB"
    assert topics.topics == ["science", "sports", "travel"]
    assert topics.languages() == ["de", "en", "xyz_Latn"]
    assert topics.unmapped_codes() == ["xyz_Latn"]
    assert topics.source_code("de") == "deu_Latn"
    items = list(topics.items(SkipCounter()))
    assert [(i.key, i.label) for i in items[:3]] == [
        ("science_0.png", 0),
        ("science_1.png", 0),
        ("sports_0.png", 1),
    ]
    en = topics.sentences("en")
    assert len(en.texts) == 10 and en.topics[:4] == [0, 1, 2, 0]  # science/technology -> science
    assert en.items[:2] == ["0", "1"] and not en.skipped
    de = topics.sentences("de")
    assert len(de.texts) == 11 and de.skipped == {"empty_sentence": 1, "unknown_topic": 1}
    assert de.texts[-1] == '"Zitat" im Satz' and de.items[-1] == "92"
    test_only = open_topics(root, split="test").sentences("en")
    assert test_only.items == ["8", "9"]
    assert len(open_topics(root, split="dev,test").sentences("en").texts) == 4
    # the same data from its data/ folder, its language folder, or with the images given
    for path, images in (
        (root / "data", None),
        (root / "data" / "sib200", None),
        (root / "data" / "sib200", root / "data" / "images"),
    ):
        again = open_topics(path, images=images)
        assert again.topics == topics.topics and again.fingerprint() == topics.fingerprint()
    with pytest.raises(ConfigError, match="Flores-200's code; mclip calls it 'de'"):
        topics.sentences("deu_Latn")


def test_mvl_sib_images_in_one_folder_per_topic(tmp_path):
    root = make_mvl_sib(tmp_path / "m", languages=("eng_Latn",))
    folders = tmp_path / "topic_images"
    for t, topic in enumerate(("science", "sports", "travel")):
        _image(folders / topic / "a.jpg", t)
    topics = open_topics(root / "data" / "sib200", images=folders)
    assert topics.topics == ["science", "sports", "travel"]
    assert [i.key for i in topics.items(SkipCounter())] == [
        "science/a.jpg",
        "sports/a.jpg",
        "travel/a.jpg",
    ]


def test_folder_and_tsv_layout(tmp_path):
    root = make_topic_folders(
        tmp_path / "topics",
        [
            "topic\tlanguage\tsentence",
            "apple\ten\tan apple",
            "boat\ten\ta boat",
            "apple\tde\tein Apfel",
            "boat\tde\t  ",
            "car\tde\tein Auto",
            "apple\t\tno language",
            "only two\tfields",
            "",
            "boat\tde\tein Boot\twith a tab",
        ],
    )
    topics = open_topics(root)
    assert isinstance(topics, TsvTopics) and topics.topics == ["apple", "boat"]
    assert topics.languages() == ["de", "en"] and topics.unmapped_codes() == []
    de = topics.sentences("de")
    assert de.texts == ["ein Apfel", "ein Boot\twith a tab"] and de.topics == [0, 1]
    assert de.items == [None, None]
    assert de.skipped == {"empty_sentence": 1, "unknown_topic": 1}
    assert topics.skipped == {"missing_language": 1, "bad_row": 1}
    assert [(i.key, i.label) for i in topics.items(SkipCounter())] == [
        ("apple/0.png", 0),
        ("apple/1.png", 0),
        ("boat/0.png", 1),
        ("boat/1.png", 1),
    ]
    # the TSV itself as the path, images elsewhere
    tsv = tmp_path / "elsewhere.tsv"
    tsv.write_text("apple\ten\tan apple\n", "utf-8")
    assert open_topics(tsv, images=root).sentences("en").topics == [0]


def test_reader_errors_name_the_file_and_the_fix(tmp_path):
    with pytest.raises(ConfigError, match="do not exist; expected one of"):
        open_topics(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="(?s)fit no known layout.*MVL-SIB.*sentences.tsv"):
        open_topics(tmp_path / "empty")
    root = make_mvl_sib(tmp_path / "m", languages=("eng_Latn",))
    with pytest.raises(ConfigError, match="unknown split.*validation"):
        open_topics(root, split="validation")
    (root / "data" / "sib200" / "eng_Latn" / "train.tsv").unlink()
    with pytest.raises(ConfigError, match="expected 'train.tsv'"):
        open_topics(root).sentences("en")
    assert open_topics(root, split="test").sentences("en").texts  # a split that is there
    no_images = make_mvl_sib(tmp_path / "n", languages=("eng_Latn",))
    import shutil

    shutil.rmtree(no_images / "data" / "images")
    with pytest.raises(ConfigError, match="no images folder found.*give images"):
        open_topics(no_images)
    bad_header = make_mvl_sib(tmp_path / "h", languages=("eng_Latn",))
    (bad_header / "data" / "sib200" / "eng_Latn" / "dev.tsv").write_text("id\tlabel\tsentence\n")
    with pytest.raises(ConfigError, match="no column.*index_id"):
        open_topics(bad_header).sentences("en")
    badly_named = make_mvl_sib(tmp_path / "b", languages=("eng_Latn",))
    _image(badly_named / "data" / "images" / "sib200" / "cover.png", 0)
    with pytest.raises(ConfigError, match="cover.png' is not named"):
        open_topics(badly_named)
    folders = make_topic_folders(tmp_path / "t", ["apple\ten\tan apple"])
    (folders / "empty_topic").mkdir()
    with pytest.raises(ConfigError, match="empty_topic' has no images"):
        open_topics(folders)
    wrong = make_topic_folders(tmp_path / "w", ["Apple\ten\tan apple", "car\ten\ta car"])
    with pytest.raises(ConfigError, match="no row names a topic.*apple, boat"):
        open_topics(wrong)
    with pytest.raises(ConfigError, match="'split' applies to the MVL-SIB layout only"):
        open_topics(folders.parent / "t" / "sentences.tsv", split="test")


# --- the metric by hand ----------------------------------------------------------------------


class FakeImages:
    """ImageEmbeddings stand-in: an embedding per image key (by topic and file name)."""

    def __init__(self, vectors: dict[str, list[float]]):
        self.vectors = vectors

    def get(self, image_set):
        items = list(image_set.items(SkipCounter()))
        emb = torch.tensor([self.vectors[i.key] for i in items], dtype=torch.float32)
        return emb, [i.key for i in items], [i.label for i in items], {}


class FakeText:
    """TextEmbeddings stand-in: a fixed vector per sentence; records each call."""

    def __init__(self, vectors: dict[str, list[float]]):
        self.vectors, self.calls = vectors, []

    def encode(self, texts):
        self.calls.append(list(texts))
        return F.normalize(
            torch.tensor([self.vectors[t] for t in texts], dtype=torch.float32), dim=-1
        )


def _task(path, languages="all", **extra):
    return make_task(
        {
            "name": "topics",
            "kind": "topic_matching",
            "languages": languages,
            "sentences": str(path),
            **extra,
        },
        Path("."),
        "test",
    )


def test_metric_by_hand_with_leave_one_out_and_ties(tmp_path):
    """Images of 'apple' point along x, of 'boat' along y. In English (the reference), 'a one'
    is on x, 'a two' on y (a misleading apple sentence), 'b one' on y. German sentences sit
    between: the image topics rank them wrongly, the English text topics half rightly."""
    root = make_topic_folders(
        tmp_path / "topics",
        [
            "apple\ten\ta one",
            "apple\ten\ta two",
            "boat\ten\tb one",
            "apple\tde\ta de",
            "boat\tde\tb de",
            "kite\tde\tk de",
        ],
    )
    images = FakeImages(
        {"apple/0.png": [1, 0], "apple/1.png": [1, 0], "boat/0.png": [0, 1], "boat/1.png": [0, 1]}
    )
    text = FakeText(
        {"a one": [1, 0], "a two": [0, 1], "b one": [0, 1], "a de": [0.6, 0.8], "b de": [0.8, 0.6]}
    )
    result = run_topic_matching(_task(root), images, text, lambda m: None)
    assert len(text.calls) == 1 and sorted(text.calls[0]) == sorted(text.vectors)
    assert set(result) == {"kind", "languages", "views", "skipped", "data"}
    assert result["kind"] == "topic_matching" and result["skipped"] == {"unknown_topic": 1}
    en, de = result["languages"]["en"], result["languages"]["de"]
    # images: 'a one' -> apple (rank 0), 'a two' -> boat (rank 1), 'b one' -> boat (rank 0)
    assert en["topic_acc@1"] == pytest.approx(2 / 3) and en["n_sentences"] == 3
    assert en["mean_per_topic_recall"] == pytest.approx((1 / 2 + 1) / 2)
    # text-only, leave-one-out: 'a one' against apple = {'a two'} = y and boat = {'b one'} = y:
    # a tie at 0, won by the lower topic index (apple) -> rank 0; 'a two' against apple = x
    # loses to boat -> rank 1; 'b one' is boat's only sentence: nothing left to match, not scored
    assert en["text_only_topic_acc@1"] == pytest.approx(1 / 2)
    assert en["n_sentences_text_only"] == 2 and en["n_topics_text_only"] == 2
    # German: images put 'a de' nearer boat and 'b de' nearer apple; the English means
    # apple = (x + y) / sqrt 2 and boat = y get 'a de' right and 'b de' wrong
    assert de["topic_acc@1"] == 0.0 and de["text_only_topic_acc@1"] == 0.5
    assert de["n_sentences"] == 2 and de["n_topics"] == 2 and de["sentences_dropped"] == 1
    assert de["source_code"] == "de"
    views = result["views"]["en"]
    assert set(views) == {"sentences", "sentences_text_only"}
    assert views["sentences"].ranks.tolist() == [0, 1, 0]
    assert views["sentences"].labels.tolist() == [0, 0, 1]
    assert views["sentences_text_only"].ranks.tolist() == [0, 1]
    assert views["sentences"].ids != views["sentences_text_only"].ids


def _reference_ranks(emb, labels, members, member_labels, left_out, n_topics):
    """Plain-loop reference: topic t's mean over ``members`` of t minus the left-out one."""
    ranks, scored = [], []
    for s in range(len(emb)):
        scores = []
        for t in range(n_topics):
            rows = [m for m in range(len(members)) if member_labels[m] == t and m != left_out[s]]
            if not rows:
                scores.append(-math.inf)
                continue
            mean = members[rows].sum(0)
            scores.append(float(emb[s] @ (mean / mean.norm())))
        y = labels[s]
        if scores[y] == -math.inf:
            scored.append(False)
            continue
        scored.append(True)
        ranks.append(
            sum(
                1
                for t in range(n_topics)
                if scores[t] > scores[y] or (scores[t] == scores[y] and t < y)
            )
        )
    return ranks, scored


def test_rank_topics_matches_a_plain_loop():
    gen = torch.Generator().manual_seed(0)
    members = F.normalize(torch.randn(12, 5, generator=gen), dim=-1)
    member_labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 0, 1])  # topic 4 has none
    emb = F.normalize(torch.randn(9, 5, generator=gen), dim=-1)
    labels = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2, 3])
    left_out_row = torch.tensor([0, 3, -1, 9, -1, 10, 4, 5, -1])  # row 9: topic 3's only member
    sums, counts = mean_embeddings(members, member_labels, 5)
    left_out = torch.where(
        left_out_row >= 0, member_labels[left_out_row.clamp(min=0)], left_out_row
    )
    got = rank_topics(emb, labels, sums, counts, left_out, members[left_out_row.clamp(min=0)])
    want, scored = _reference_ranks(
        emb, labels.tolist(), members, member_labels.tolist(), left_out_row.tolist(), 5
    )
    assert got.scored.tolist() == scored and got.ranks.tolist() == want
    assert got.n_topics == 4 and scored == [True, True, True, False, False, True, True, True, True]


def test_translations_are_left_out_of_the_text_topic_means(tmp_path):
    """MVL-SIB's index_id ties a German sentence to its English translation, which is left out
    of the English topic mean the German sentence is scored against."""
    root = make_mvl_sib(tmp_path / "m", languages=("eng_Latn", "deu_Latn"))
    topics = open_topics(root, split="train")  # ids 0..5, topics science, sports, travel x 2
    en, de = topics.sentences("en"), topics.sentences("de")
    gen = torch.Generator().manual_seed(1)
    vectors = {
        t: F.normalize(torch.randn(4, generator=gen), dim=0).tolist() for t in en.texts + de.texts
    }
    keys = [i.key for i in topics.items(SkipCounter())]
    images = FakeImages(
        {k: F.normalize(torch.randn(4, generator=gen), dim=0).tolist() for k in keys}
    )
    result = run_topic_matching(
        _task(root, ["de", "en"], split="train"), images, FakeText(vectors), lambda m: None
    )
    members = torch.tensor([vectors[t] for t in en.texts])
    for lang, batch in (("en", en), ("de", de)):
        emb = torch.tensor([vectors[t] for t in batch.texts])
        left_out = [en.items.index(item) for item in batch.items]  # itself / its translation
        want, _ = _reference_ranks(emb, batch.topics, members, en.topics, left_out, 3)
        view = result["views"][lang]["sentences_text_only"]
        assert view.ranks.tolist() == want, lang
        assert result["languages"][lang]["text_only_topic_acc@1"] == pytest.approx(
            np.mean(np.array(want) == 0)
        )


def test_reference_language_must_be_there(tmp_path):
    root = make_topic_folders(tmp_path / "t", ["apple\tde\tein Apfel", "boat\tde\tein Boot"])
    images = FakeImages({f"{t}/{n}.png": [1, 0] for t in ("apple", "boat") for n in (0, 1)})
    with pytest.raises(ConfigError, match="reference language 'en'.*reference_language"):
        run_topic_matching(_task(root), images, FakeText({}), lambda m: None)
    with pytest.raises(ConfigError, match="language.*fr not in"):
        run_topic_matching(
            _task(root, ["fr"], reference_language="de"), images, FakeText({}), lambda m: None
        )


# --- suite and runner ------------------------------------------------------------------------


def test_suite_task_keys_and_errors(tmp_path):
    task = make_task(
        {
            "name": "t",
            "kind": "topic_matching",
            "languages": "de,en",
            "sentences": "mvl-sib",
            "images": "imgs",
            "split": "test",
            "reference_language": "de",
        },
        tmp_path,
        "task 1",
    )
    assert task.sentences == str(tmp_path / "mvl-sib") and task.images == str(tmp_path / "imgs")
    assert task.languages == ["de", "en"] and task.reference_language == "de"
    assert (
        make_task(
            {"name": "t", "kind": "topic_matching", "languages": ["en"], "sentences": "x"},
            tmp_path,
            "t",
        ).reference_language
        == "en"
    )
    with pytest.raises(ConfigError, match="missing sentences"):
        make_task({"name": "t", "kind": "topic_matching", "languages": ["en"]}, tmp_path, "t")
    with pytest.raises(ConfigError, match="unknown key.*captions.*reference_language"):
        make_task(
            {
                "name": "t",
                "kind": "topic_matching",
                "languages": ["en"],
                "sentences": "x",
                "captions": "y",
            },
            tmp_path,
            "t",
        )
    assert "topic_matching" in RUNNERS


def test_runner_end_to_end_on_mvl_sib(adapter, tmp_path):
    root = make_mvl_sib(tmp_path / "m")
    (root / "data" / "images" / "sib200" / "travel_1.png").write_bytes(b"not a png")
    task = make_task(
        {"name": "mvl_sib", "kind": "topic_matching", "languages": "all", "sentences": str(root)},
        tmp_path,
        "test",
    )
    lines = []
    result = run_tasks(adapter, [task], progress=lines.append, bootstrap=50)["mvl_sib"]
    assert set(result) == {
        "kind",
        "languages",
        "skipped",
        "data",
        "bootstrap",
        "seconds",
        "precision",
    }
    assert result["skipped"] == {"unreadable_image": 1, "empty_sentence": 1, "unknown_topic": 1}
    assert set(result["languages"]) == {"de", "en", "xyz_Latn"}
    de = result["languages"]["de"]
    assert de["source_code"] == "deu_Latn" and de["n_topics"] == 3 and de["n_sentences"] == 11
    assert de["sentences_dropped"] == 2 and de["n_sentences_text_only"] == 11
    assert result["languages"]["en"]["n_sentences_text_only"] == 10  # every topic has 3+ in en
    assert set(de["samples"]) == {"sentences", "sentences_text_only"}
    assert set(de["ci"]) == {
        "topic_acc@1",
        "text_only_topic_acc@1",
        "mean_per_topic_recall",
        "text_only_mean_per_topic_recall",
    }
    for metric in ("topic_acc@1", "text_only_topic_acc@1"):
        assert 0.0 <= de[metric] <= 1.0 and de["ci"][metric][0] <= de["ci"][metric][1]
    assert any("xyz_Latn" in line and "reported as written" in line for line in lines)


def test_demo_suite_topic_task_runs_on_demo_data(adapter, tmp_path):
    from mclip.data.demo import write_demo_dataset

    summary = write_demo_dataset(
        tmp_path / "demo",
        n_train=12,
        n_eval_per_class=1,
        image_size=32,
        shard_size=50,
        topic_images=2,
    )
    assert summary["topics"] == {"topics": 4, "images": 8, "sentences": 288}
    suite = load_suite(ROOT / "eval_suites" / "demo.yaml", data_root=tmp_path / "demo")
    tasks = [t for t in suite.tasks if t.kind == "topic_matching"]
    assert len(tasks) == 1
    result = run_tasks(adapter, tasks, bootstrap=0)[tasks[0].name]
    assert set(result["languages"]) == {
        "en",
        "de",
        "fr",
        "es",
        "it",
        "pt",
        "ru",
        "zh",
        "ja",
        "ar",
        "hi",
        "sw",
    }
    for metrics in result["languages"].values():
        assert metrics["n_topics"] == 4 and metrics["n_sentences"] == 24
        assert metrics["n_sentences_text_only"] == 24 and metrics["sentences_dropped"] == 0
        assert metrics["topic_acc@1"] is not None and metrics["text_only_topic_acc@1"] is not None
    assert result["skipped"] == {}
