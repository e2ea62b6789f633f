"""Bitext retrieval (text-only cross-lingual alignment): readers, metric by hand, runner, CLI."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mclip.config import ConfigError
from mclip.eval.bitext_retrieval import run_bitext, translation_ranks
from mclip.eval.datasets.bitext import FloresBitext, TatoebaBitext, TsvBitext, open_bitext
from mclip.eval.report import build_report, markdown_table
from mclip.eval.runner import run_tasks
from mclip.eval.suite import load_suite, make_task

ROOT = Path(__file__).resolve().parents[1]


class FakeText:
    """TextEmbeddings stand-in: a fixed vector per sentence; records (texts, language) calls."""

    def __init__(self, vectors: dict[str, list[float]]):
        self.vectors, self.calls = vectors, []

    def encode(self, texts, language=None):
        self.calls.append((list(texts), language))
        return F.normalize(
            torch.tensor([self.vectors[t] for t in texts], dtype=torch.float32), dim=-1
        )


def _task(path, languages="all", **extra):
    return make_task(
        {
            "name": "bitext",
            "kind": "bitext_retrieval",
            "languages": languages,
            "sentences": str(path),
            **extra,
        },
        Path("."),
        "test",
    )


def _tsv(path: Path, rows: list[str]) -> Path:
    path.write_text("id\tlanguage\tsentence\n" + "\n".join(rows) + "\n", "utf-8")
    return path


def test_metric_by_hand_with_ties_and_unmatched_ids(tmp_path):
    """English e1..e3 on three axes. German: d1 = e1, d2 = e3 (wrong), d3 between e2 and e3.
    Swahili s1 ties e1 and e2 exactly (the lower index, e1, wins: right); s9 has no English."""
    path = _tsv(
        tmp_path / "b.tsv",
        [
            "1\ten\te1",
            "2\ten\te2",
            "3\ten\te3",
            "1\tde\td1",
            "2\tde\td2",
            "3\tde\td3",
            "1\tsw\ts1",
            "9\tsw\ts9",
            "2\tsw\t",
            "2\tsw\ts2dup",
            "2\tsw\ts2again",
        ],
    )
    text = FakeText(
        {
            "e1": [1, 0, 0],
            "e2": [0, 1, 0],
            "e3": [0, 0, 1],
            "d1": [1, 0, 0],
            "d2": [0, 0, 1],
            "d3": [0, 0.6, 0.8],
            "s1": [1, 1, 0],
            "s9": [0, 0, 1],
            "s2dup": [0, 1, 0],
            "s2again": [1, 0, 0],
        }
    )
    result = run_bitext(_task(path), None, text, lambda m: None)
    assert set(result["languages"]) == {"de", "sw"}  # the pivot is not scored against itself
    de, sw = result["languages"]["de"], result["languages"]["sw"]
    # de -> en: d1 -> e1 (rank 0); d2 -> e2 scores 0: e3 (1) is above, e1 ties it at 0 with a
    # lower index -> rank 2; d3 -> e3 (rank 0)
    assert result["views"]["de"]["bitext_to_pivot"].ranks.tolist() == [0, 2, 0]
    # en -> de: e1 -> d1 (0); e2 -> d2 scores 0: d3 (0.6) above, d1 ties lower -> 2;
    # e3 -> d3 (0.8): d2 (1.0) wins -> 1
    assert result["views"]["de"]["bitext_from_pivot"].ranks.tolist() == [0, 2, 1]
    assert de["bitext_to_pivot_acc@1"] == pytest.approx(2 / 3)
    assert de["bitext_from_pivot_acc@1"] == pytest.approx(1 / 3)
    assert de["bitext_acc@1"] == pytest.approx(3 / 6)
    assert de["bitext_to_pivot_acc@5"] == 1.0
    assert de["n_pairs"] == 3 and de["n_sentences"] == 3 and de["n_pivot_sentences"] == 3
    # Swahili: empty sentence and duplicate id counted; s9 is a candidate but not a query
    assert sw["sentences_dropped"] == 2 and sw["n_pairs"] == 2 and sw["n_sentences"] == 3
    # s1 ties e1 and e2: e1 (lower index) wins; s2dup -> e2 (rank 0)
    assert result["views"]["sw"]["bitext_to_pivot"].ranks.tolist() == [0, 0]
    # e1 -> s1 (cos .71) beats s2dup (0) and s9 (0): 0; e2 -> s2dup (1.0): 0
    assert result["views"]["sw"]["bitext_from_pivot"].ranks.tolist() == [0, 0]
    # the pivot's sentences are encoded once, each language with its own code (its adapter)
    assert [lang for _, lang in text.calls] == ["en", "de", "sw"]
    # against another pivot the same German sentences are other samples (never paired)
    other = run_bitext(_task(path, pivot="sw", languages=["de"]), None, text, lambda m: None)
    assert (
        other["views"]["de"]["bitext_to_pivot"].ids != result["views"]["de"]["bitext_to_pivot"].ids
    )


def test_translation_ranks_match_a_plain_loop():
    torch.manual_seed(0)
    queries = F.normalize(torch.randn(50, 8), dim=-1)
    candidates = F.normalize(torch.randn(70, 8), dim=-1)
    candidates[5] = candidates[3]  # an exact tie
    targets = torch.randint(0, 70, (50,))
    targets[0] = 5
    queries[0] = candidates[5]
    import mclip.eval.bitext_retrieval as bitext

    old, bitext.QUERY_CHUNK = bitext.QUERY_CHUNK, 7  # several chunks
    try:
        ranks = translation_ranks(queries, candidates, targets)
    finally:
        bitext.QUERY_CHUNK = old
    scores = queries @ candidates.T
    expected = [
        sum(
            1
            for j in range(70)
            if scores[i, j] > scores[i, t] or (scores[i, j] == scores[i, t] and j < t)
        )
        for i, t in enumerate(targets.tolist())
    ]
    assert ranks.tolist() == expected
    assert ranks[0] == 1  # candidate 3 ties candidate 5 and comes first


def _sib(root: Path, code: str, rows: dict[str, list[tuple[str, str]]]) -> None:
    folder = root / "data" / "sib200" / code
    folder.mkdir(parents=True)
    for split, lines in rows.items():
        (folder / f"{split}.tsv").write_text(
            "index_id\tcategory\ttext\n" + "".join(f"{i}\tsports\t{t}\n" for i, t in lines), "utf-8"
        )


def test_flores_layout_matches_by_index_id_and_splits(tmp_path):
    _sib(
        tmp_path,
        "eng_Latn",
        {"train": [("1", "one"), ("2", "two")], "dev": [("3", "three")], "test": [("4", "four")]},
    )
    _sib(
        tmp_path,
        "deu_Latn",
        {
            "train": [("2", "zwei"), ("1", "eins"), ("", "ohne")],
            "dev": [("3", "")],
            "test": [("4", "vier")],
        },
    )
    data = open_bitext(tmp_path)
    assert isinstance(data, FloresBitext) and data.languages() == ["de", "en"]
    de, en = data.pair("de", "en")
    assert de.ids == ["2", "1", "4"] and de.texts == ["zwei", "eins", "vier"]
    assert dict(de.skipped) == {"bad_row": 1, "empty_sentence": 1} and len(en.ids) == 4
    test_only = open_bitext(tmp_path / "data", split="test")
    assert test_only.pair("de", "en")[0].ids == ["4"]
    with pytest.raises(ConfigError, match="unknown split"):
        open_bitext(tmp_path, split="validation")
    assert data.fingerprint() != test_only.fingerprint()


def test_tatoeba_layout_maps_iso_639_3_and_checks_alignment(tmp_path):
    (tmp_path / "tatoeba.deu-eng.deu").write_text("Hallo\nDanke\n", "utf-8")
    (tmp_path / "tatoeba.deu-eng.eng").write_text("Hello\nThanks\n", "utf-8")
    (tmp_path / "tatoeba.cmn-eng.cmn").write_text("你好\n", "utf-8")
    (tmp_path / "tatoeba.cmn-eng.eng").write_text("Hi\n", "utf-8")
    data = open_bitext(tmp_path)
    assert isinstance(data, TatoebaBitext) and data.languages() == ["de", "en", "zh"]
    de, en = data.pair("de", "en")
    assert de.texts == ["Hallo", "Danke"] and en.texts == ["Hello", "Thanks"]
    assert de.ids == en.ids == ["1", "2"]
    assert data.pair("zh", "en")[1].texts == ["Hi"]  # each pair has its own pivot sentences
    with pytest.raises(ConfigError, match="no pair of 'de' with the pivot 'fr'"):
        data.pair("de", "fr")
    (tmp_path / "tatoeba.deu-eng.eng").write_text("Hello\n", "utf-8")
    with pytest.raises(ConfigError, match="not line-aligned"):
        data.pair("de", "en")


def test_rows_and_languages_left_out_are_counted(tmp_path):
    path = _tsv(tmp_path / "b.tsv", ["1\ten\tone", "1\tde\teins", "7\tfr\tsept", "x\t\tnone"])
    text = FakeText({"one": [1, 0], "eins": [1, 0], "sept": [0, 1]})
    result = run_bitext(_task(path), None, text, lambda m: None)
    assert result["skipped"] == {"bad_row": 1} and result["not_scored"] == ["fr"]
    assert set(result["languages"]) == {"de"}


def test_tsv_layout_and_errors(tmp_path):
    path = _tsv(tmp_path / "b.tsv", ["a\teng\tHello", "a\tdeu\tHallo", "b\t\tnone", "x"])
    data = open_bitext(path)
    assert isinstance(data, TsvBitext) and data.languages() == ["de", "en"]
    assert data.skipped == {"bad_row": 2}
    with pytest.raises(ConfigError, match="'split' applies to the Flores"):
        open_bitext(path, split="test")
    with pytest.raises(ConfigError, match="do not exist"):
        open_bitext(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="fit no known layout"):
        open_bitext(tmp_path / "empty")
    with pytest.raises(ConfigError, match="the pivot 'fr' has no sentences"):
        run_bitext(_task(path, pivot="fr"), None, FakeText({}), lambda m: None)
    with pytest.raises(ConfigError, match="unknown key"):
        make_task(
            {
                "name": "b",
                "kind": "bitext_retrieval",
                "languages": "all",
                "sentences": "x",
                "images": "y",
            },
            Path("."),
            "test",
        )


def test_demo_suite_bitext_task_with_intervals_and_table(adapter, tmp_path):
    from mclip.data.demo import write_demo_dataset

    summary = write_demo_dataset(
        tmp_path / "demo",
        n_train=12,
        n_eval_per_class=1,
        image_size=32,
        shard_size=50,
        topic_images=2,
    )
    assert summary["bitext_sentences"] == 24 * 12
    suite = load_suite(ROOT / "eval_suites" / "demo.yaml", data_root=tmp_path / "demo")
    tasks = [t for t in suite.tasks if t.kind == "bitext_retrieval"]
    results = run_tasks(adapter, tasks, bootstrap=100)
    result = results[tasks[0].name]
    assert set(result["languages"]) == {
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
        assert metrics["n_pairs"] == 24 and metrics["pivot"] == "en"
        assert set(metrics["samples"]) == {"bitext", "bitext_to_pivot", "bitext_from_pivot"}
        low, high = metrics["ci"]["bitext_acc@1"]
        assert low <= metrics["bitext_acc@1"] <= high
    table = markdown_table(build_report("tiny", "demo", results))
    assert "bitext ->pivot" in table and "bitext pivot->" in table


def test_cli_task_flags(adapter, tmp_path, monkeypatch):
    import json

    from mclip.cli import main

    path = _tsv(
        tmp_path / "b.tsv", ["1\ten\tone", "1\tfr\tun", "2\ten\ttwo", "2\tfr\tdeux", "1\tde\teins"]
    )
    monkeypatch.setattr("mclip.models.adapters.load_model", lambda *a, **k: adapter)
    out = tmp_path / "out"
    assert (
        main(
            [
                "eval",
                "--model",
                "x",
                "--task",
                "bitext_retrieval",
                "--sentences",
                str(path),
                "--pivot",
                "fr",
                "--out",
                str(out),
                "--quiet",
                "--bootstrap",
                "0",
            ]
        )
        == 0
    )
    languages = json.loads((out / "results.json").read_text())["tasks"]["bitext_retrieval"][
        "languages"
    ]
    assert set(languages) == {"de", "en"} and languages["en"]["n_pairs"] == 2
    assert languages["de"]["pivot"] == "fr" and languages["de"]["n_pairs"] == 1


def test_where_the_gap_is_reads_image_and_bitext_scores_together():
    from mclip.eval.alignment import alignment_rows

    results = {
        "cls": {
            "kind": "zeroshot_classification",
            "languages": {
                "en": {"acc@1": 0.8},
                "de": {"acc@1": 0.4},
                "fr": {"acc@1": 0.78},
                "sw": {"acc@1": 0.3},
                "it": {"acc@1": 0.5},
            },
        },
        "bitext": {
            "kind": "bitext_retrieval",
            "languages": {
                "de": {"bitext_acc@1": 0.95, "pivot": "en"},
                "fr": {"bitext_acc@1": 0.6, "pivot": "en"},
                "sw": {"bitext_acc@1": 0.2, "pivot": "en"},
                "it": {"bitext_acc@1": 0.7, "pivot": "en"},
            },
        },
    }
    report = build_report("m", "s", results)
    readings = {r["language"]: r["reading"] for r in alignment_rows(report)}
    # de: aligned texts, weak images; fr: near the pivot; sw: texts not aligned; it: between
    assert readings == {
        "de": "image side",
        "fr": "on par",
        "sw": "text tower",
        "it": "partly aligned",
    }
    assert "| cls acc@1 | de | 40.0 | 50 | 95.0 | image side |" in markdown_table(report)
    del results["bitext"]
    assert alignment_rows(build_report("m", "s", results)) == []


def test_two_models_compare_paired_on_the_same_sentences(tmp_path):
    """Comparisons pair bitext samples when both files scored the same sentences against the
    same pivot: the difference gets a bootstrap test, not a 'not paired' mark."""
    from mclip.eval.compare import compare_reports
    from mclip.eval.runner import _attach_samples

    rows = [f"{i}\t{lang}\ts{lang}{i}" for i in range(30) for lang in ("en", "de")]
    path = _tsv(tmp_path / "b.tsv", rows)
    torch.manual_seed(0)
    base = torch.randn(30, 8)
    reports = []
    for noise in (0.1, 2.0):  # a well aligned and a badly aligned German
        vectors = {f"sen{i}": base[i].tolist() for i in range(30)}
        vectors |= {f"sde{i}": (base[i] + noise * torch.randn(8)).tolist() for i in range(30)}
        result = run_bitext(_task(path), None, FakeText(vectors), lambda m: None)
        _attach_samples("bitext", result, 200, 0)
        reports.append(build_report("m", "s", {"bitext": result}))
    comparison = compare_reports(reports, ["good", "bad"], n_resamples=200)
    row = next(
        r for r in comparison["results"] if r["model"] == "bad" and r["metric"] == "bitext_acc@1"
    )
    assert row["paired"] and row["difference"] < 0 and row["significant"]
