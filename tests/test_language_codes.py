"""Language codes from training data and configs normalised to mclip's (issue 10)."""

from __future__ import annotations

import json

import pytest

from mclip.config import ConfigError
from mclip.data.language_codes import (
    FLORES_200,
    UNKNOWN_LANGUAGE,
    UNKNOWN_VALUES,
    normalise_language,
    validate_languages,
)
from mclip.data.shards import SkipCounter, caption_language, decode_captions
from mclip.eval.datasets import codes


@pytest.mark.parametrize(
    "code, expected",
    [
        # ISO 639-1, any case
        ("de", "de"),
        ("DE", "de"),
        (" fr ", "fr"),
        # region, script and variant subtags dropped; '_' or '-' between subtags
        ("zh-Hans", "zh"),
        ("zh_Hant_TW", "zh"),
        ("zh-TW", "zh"),
        ("pt-BR", "pt"),
        ("en-US", "en"),
        ("EN_us", "en"),
        ("es-419", "es"),
        ("sr-Latn", "sr"),
        ("ja-Latn", "ja"),
        ("de-CH-1996", "de"),
        ("en-x-private", "en"),
        ("en-USA", "en"),
        # three-letter codes: ISO 639-2/T and 639-2/B to ISO 639-1
        ("deu", "de"),
        ("ger", "de"),
        ("zho", "zh"),
        ("chi", "zh"),
        ("fra", "fr"),
        ("fre", "fr"),
        ("eng", "en"),
        ("ell", "el"),
        ("gre", "el"),
        ("bod", "bo"),
        ("tib", "bo"),
        ("nob", "nb"),
        ("jpn", "ja"),
        ("swa", "sw"),
        # no ISO 639-1 code: ISO 639-3, lowercase
        ("fil", "fil"),
        ("FIL", "fil"),
        ("yue", "yue"),
        ("ceb", "ceb"),
        ("yue-Hant", "yue"),
        # macrolanguage choices (as Flores-200's): the standard written form takes the 639-1 code
        ("arb", "ar"),
        ("cmn", "zh"),
        ("swh", "sw"),
        ("zsm", "ms"),
        ("pes", "fa"),
        ("ekk", "et"),
        ("lvs", "lv"),
        ("khk", "mn"),
        ("npi", "ne"),
        # ... other varieties keep their own code (unlike CLDR / langcodes' macro folding)
        ("arz", "arz"),
        ("prs", "prs"),
        ("quy", "quy"),
        ("ayr", "ayr"),
        ("nan", "nan"),
        # ISO 639 keeps Tagalog (tl) and Filipino (fil) apart; CLDR folds tl into fil
        ("tl", "tl"),
        ("tgl", "tl"),
        # withdrawn ISO 639-1 codes (CLD3, and so LAION-2B-multi, writes iw and jw)
        ("iw", "he"),
        ("in", "id"),
        ("ji", "yi"),
        ("jw", "jv"),
        ("mo", "ro"),
        # registered extlang / grandfathered forms
        ("zh-yue", "yue"),
        ("zh-cmn-Hans", "zh"),
        ("zh-min-nan", "nan"),
        # Flores-200 codes
        ("eng_Latn", "en"),
        ("zho_Hans", "zh"),
        ("zho_Hant", "zh"),
        ("arb_Arab", "ar"),
        ("deu_Latn", "de"),
        ("tgl_Latn", "tl"),
        ("ENG_LATN", "en"),
        ("ekk_Latn", "et"),
    ],
)
def test_normalise_language(code, expected):
    assert normalise_language(code) == expected


@pytest.mark.parametrize(
    "code",
    sorted(UNKNOWN_VALUES)
    + [
        "UND",
        "Unknown",
        "NULL",
        " ",
        "und-Latn",
        "zxx-Zyyy",
    ],
)
def test_values_meaning_unknown_give_none(code):
    assert normalise_language(code) is None


@pytest.mark.parametrize(
    "code",
    [
        "englsh",
        "english",
        "xyz",
        "xyz_Latn",
        "qaa",
        "qtz",
        "x-private",
        "123",
        "e n",
        "en--us",
        "cn",
        "jp",
        "toolonglanguage",
    ],
)
def test_not_a_language_gives_none(code):
    assert normalise_language(code) is None


def test_non_strings_give_none():
    assert normalise_language(None) is None  # type: ignore[arg-type]
    assert normalise_language(5) is None  # type: ignore[arg-type]


def test_flores_codes_agree_with_the_flores_table_without_scripts():
    """One source: every Flores-200 code normalises to the table's code, script dropped."""
    assert codes.FLORES_200 is FLORES_200
    wrong = {
        code: (mclip, normalise_language(code))
        for code, mclip in FLORES_200.items()
        if normalise_language(code) != mclip.split("-")[0]
    }
    assert wrong == {}


def test_validate_languages_normalises_in_order():
    assert validate_languages(["en", "deu", "zh-Hans", "fil"], "data.languages") == [
        "en",
        "de",
        "zh",
        "fil",
    ]
    assert validate_languages("pt-BR", "data.languages") == ["pt"]
    assert validate_languages([], "data.languages") == []
    # a value meaning "unknown" selects the captions whose language is unknown
    assert validate_languages(["en", "xx"], "data.language_weights") == ["en", UNKNOWN_LANGUAGE]


def test_misspelt_code_is_one_clear_config_error():
    with pytest.raises(ConfigError) as err:
        validate_languages(["de", "englsh"], "data.languages")
    assert str(err.value) == (
        "config key 'data.languages': 'englsh' is not a language code; "
        "did you mean 'en'? Use ISO 639-1 (de) or 639-3 (fil) codes"
    )
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "code, suggestion",
    [
        ("germn", "'de'"),
        ("chinese", "'zh'"),
        ("jp", "'ja'"),
        ("cn", "'zh'"),
        ("deutsch", "'de'"),
    ],
)
def test_config_error_suggests_close_codes(code, suggestion):
    with pytest.raises(ConfigError, match=f"did you mean {suggestion}\\?"):
        validate_languages([code], "data.language_weights")


def test_config_error_without_a_close_code():
    with pytest.raises(ConfigError) as err:
        validate_languages(["zz"], "data.languages")
    assert str(err.value) == (
        "config key 'data.languages': 'zz' is not a language code. "
        "Use ISO 639-1 (de) or 639-3 (fil) codes"
    )


def test_config_errors_for_duplicates_booleans_and_empty_codes():
    with pytest.raises(ConfigError, match="'de' and 'deu' are one language \\('de'\\)"):
        validate_languages(["de", "deu"], "data.languages")
    with pytest.raises(ConfigError, match="data.languages.*False.*quote it: 'no'"):
        validate_languages(["en", False], "data.languages")  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="data.languages.*'' is not a language code"):
        validate_languages([""], "data.languages")


# --- captions read from training shards ----------------------------------------------------------


def _sample(caption: str | None = None, meta: object = None) -> dict:
    sample: dict = {"__key__": "k"}
    if caption is not None:
        sample["txt"] = caption.encode()
    if meta is not None:
        sample["json"] = json.dumps(meta).encode()
    return sample


def test_txt_caption_language_is_normalised():
    counter = SkipCounter()
    raw = {"__key__": "k", "txt": b"hallo", "json": b'{"LANGUAGE": "deu"}'}
    assert decode_captions(raw, counter) == {"de": ["hallo"]}
    assert decode_captions(_sample("ni hao", {"LANGUAGE": "zh-Hans"}), counter) == {
        "zh": ["ni hao"]
    }
    assert decode_captions(_sample("ola", {"language": "pt_BR"}), counter) == {"pt": ["ola"]}
    assert decode_captions(_sample("hi", {"lang": "eng_Latn"}), counter, language_key="lang") == {
        "en": ["hi"]
    }
    assert counter == {}


def test_no_language_named_uses_the_default_language():
    counter = SkipCounter()
    assert decode_captions(_sample("hello", {"url": "x"}), counter) == {"en": ["hello"]}
    assert decode_captions(_sample("hujambo"), counter, default_language="sw") == {
        "sw": ["hujambo"]
    }
    assert decode_captions(_sample("hello", {"LANGUAGE": ""}), counter) == {"en": ["hello"]}
    assert decode_captions(_sample("hello", {"LANGUAGE": None}), counter) == {"en": ["hello"]}
    assert counter == {}


@pytest.mark.parametrize("named", ["xx", "und", "UNKNOWN", "englsh"])
def test_unknown_language_is_kept_as_und_and_counted(named):
    counter = SkipCounter()
    assert decode_captions(
        _sample("a red circle", {"LANGUAGE": named}), counter, default_language="de"
    ) == {"und": ["a red circle"]}
    assert counter == {"unknown_language": 1}
    assert caption_language({"LANGUAGE": named}, "de") == UNKNOWN_LANGUAGE


def test_json_caption_keys_are_normalised_and_merged():
    counter = SkipCounter()
    meta = {
        "captions": {
            "de": ["ein Kreis"],
            "deu": "ein roter Kreis",
            "DE-at": ["a Kreis"],
            "zh-Hant": ["圓"],
            "en": [""],
        }
    }
    assert decode_captions(_sample(None, meta), counter) == {
        "de": ["ein Kreis", "ein roter Kreis", "a Kreis"],
        "zh": ["圓"],
    }
    assert counter == {}


def test_unknown_json_caption_keys_count_once_per_sample():
    counter = SkipCounter()
    meta = {"captions": {"xx": ["one"], "unk": ["two"], "fr": ["trois"]}}
    assert decode_captions(_sample(None, meta), counter) == {"und": ["one", "two"], "fr": ["trois"]}
    assert counter == {"unknown_language": 1}
    # an unknown-language caption that is empty is dropped, and nothing is counted for it
    assert decode_captions(_sample(None, {"captions": {"xx": [" "], "fr": ["un"]}}), counter) == {
        "fr": ["un"]
    }
    assert counter == {"unknown_language": 1}
