"""Per-language grammar of the hard demo level: the noun phrases, relation words and agreeing
verbs of "x is (left of | right of | above | below) y", as the fields the caption templates of
:mod:`mclip.data.demo_hard_language` fill in.

The colour and shape vocabulary and its agreement data (genders, noun classes, oblique forms)
come from :mod:`mclip.data.demo_language`; this module adds the size adjectives, the case or
form a preposition (postposition) governs, and the word order of a located object.

Grammar points handled, by language:

Grammar points handled, by language:

- en: "a small red circle (to the) left of a large blue square", "There is ... .".
- de: mixed declension after the indefinite article in nominative, accusative ("Das Bild zeigt
  einen kleinen roten Kreis") and dative, governed by "links von", "rechts von", "über", "unter"
  ("ein kleiner roter Kreis links von einem großen blauen Quadrat"); fronted locative with
  verb-second ("Links von einem großen blauen Quadrat ist ein kleiner roter Kreis.").
- fr: size before and colour after the noun, both agreeing ("une petite étoile verte");
  "de" elided before the indefinite article ("à gauche d'un", "au-dessus d'une").
- es: size before the noun with the apocope "gran" ("un gran cuadrado azul", "una gran
  estrella"), "a la izquierda de", "encima de", "debajo de".
- it, pt: agreeing prenominal size ("una piccola stella", "uma pequena estrela"), "a sinistra
  di un", "sopra", "sotto"; "à esquerda de um", "acima de", "abaixo de".
- ru: no articles; genitive after "слева от" / "справа от" ("слева от большого синего
  квадрата"), instrumental after "над" / "под" ("над большой синей звездой"), accusative of
  feminine phrases after "Мы видим"; gender agreement of both adjectives.
- zh: "X在Y的左边", existential "Y的左边有一个X"; modifiers before the noun ("红色的小圆形").
- ja: "Yの左にX", the relative clause "Yの左にある X" as the bare description; attributive
  "小さな" / "大きな" before the colour ("小さな赤い円").
- ar: noun, then colour, then size, all agreeing in gender ("دائرة حمراء صغيرة", "مربع أحمر
  صغير"); the verb "يوجد" / "توجد" agrees with the located object; "على يسار", "فوق".
- hi: SOV with compound postpositions "के बाईं ओर", "के ऊपर"; the landmark noun phrase takes the
  oblique case ("बड़े नीले वर्ग के बाईं ओर एक छोटा लाल वृत्त", "बड़े पीले तारे के ऊपर").
- sw: size adjectives take the noun-class prefix (class 3 "mraba mdogo mwekundu", class 9
  "duara ndogo nyekundu"), and so does the locative copula ("uko" / "iko"); "upande wa kushoto
  wa", "juu ya", "chini ya".
"""

from __future__ import annotations

from typing import Callable

from mclip.data.demo_hard_scene import Thing
from mclip.data.demo_language import COLOURS
from mclip.data.demo_phrases import (
    AR_ADJ,
    AR_NOUN,
    DE_NOUN,
    DE_STEM,
    ES,
    FR,
    HI_ADJ,
    HI_NOUN,
    IT,
    JA_COLOUR,
    JA_SHAPE,
    PT,
    RU_ADJ,
    RU_NOUN,
    ZH_COLOUR,
    ZH_SHAPE,
    sw_phrase,
    parse_table,
)


# --- English --------------------------------------------------------------------------------

_EN_SHORT = {"left": "left of", "right": "right of", "above": "above", "below": "below"}
_EN_LONG = {
    "left": "to the left of",
    "right": "to the right of",
    "above": "above",
    "below": "below",
}


def _en_np(t: Thing) -> str:
    words = [w for w in (t.size, t.colour, t.shape) if w]
    return ("an " if words[0][0] in "aeiou" else "a ") + " ".join(words)


def _en(x: Thing, d: str, y: Thing) -> dict[str, str]:
    return {"x": _en_np(x), "y": _en_np(y), "short": _EN_SHORT[d], "rel": _EN_LONG[d]}


# --- German: indefinite article + mixed adjective declension; the relations govern the dative -

_DE_SIZE = {"small": "klein", "large": "groß"}
_DE_INDEF = {
    ("m", "nom"): ("ein", "er"),
    ("n", "nom"): ("ein", "es"),
    ("m", "acc"): ("einen", "en"),
    ("n", "acc"): ("ein", "es"),
    ("m", "dat"): ("einem", "en"),
    ("n", "dat"): ("einem", "en"),
}
_DE_REL = {"left": "links von", "right": "rechts von", "above": "über", "below": "unter"}


def _de_np(t: Thing, case: str) -> str:
    noun, gender = DE_NOUN[t.shape]
    article, ending = _DE_INDEF[(gender, case)]
    stems = [_DE_SIZE[t.size]] if t.size else []
    stems += [DE_STEM[t.colour]] if t.colour else []
    return " ".join([article] + [stem + ending for stem in stems] + [noun])


def _de(x: Thing, d: str, y: Thing) -> dict[str, str]:
    return {
        "x": _de_np(x, "nom"),
        "x_acc": _de_np(x, "acc"),
        "y": _de_np(y, "dat"),
        "rel": _DE_REL[d],
    }


# --- Romance: article + agreeing size adjective + noun + agreeing colour ----------------------
# The article, noun and colour come from demo_language's phrase ("un cercle rouge").

_ROMANCE_SIZE = {  # (masculine, feminine) prenominal size adjectives; es "grande" -> "gran"
    "fr": parse_table("""small: petit | petite
                    large: grand | grande"""),
    "es": parse_table("""small: pequeño | pequeña
                    large: gran | gran"""),
    "it": parse_table("""small: piccolo | piccola
                    large: grande | grande"""),
    "pt": parse_table("""small: pequeno | pequena
                    large: grande | grande"""),
}
_ROMANCE_PHRASE = {"fr": FR, "es": ES, "it": IT, "pt": PT}
_ROMANCE_FEMININE_ARTICLES = ("une", "una", "uma")
_ROMANCE_REL = {
    "fr": {
        "left": "à gauche de",
        "right": "à droite de",
        "above": "au-dessus de",
        "below": "en dessous de",
    },
    "es": {
        "left": "a la izquierda de",
        "right": "a la derecha de",
        "above": "encima de",
        "below": "debajo de",
    },
    "it": {"left": "a sinistra di", "right": "a destra di", "above": "sopra", "below": "sotto"},
    "pt": {
        "left": "à esquerda de",
        "right": "à direita de",
        "above": "acima de",
        "below": "abaixo de",
    },
}


def _romance_np(lang: str, t: Thing) -> str:
    article, noun, colour = _ROMANCE_PHRASE[lang](t.colour or COLOURS[0], t.shape, "np").split(" ")
    words = [article]
    if t.size:
        masculine, feminine = _ROMANCE_SIZE[lang][t.size]
        words.append(feminine if article in _ROMANCE_FEMININE_ARTICLES else masculine)
    words.append(noun)
    if t.colour:
        words.append(colour)
    return " ".join(words)


def _romance(lang: str) -> Callable[[Thing, str, Thing], dict[str, str]]:
    def fields(x: Thing, d: str, y: Thing) -> dict[str, str]:
        relation, landmark = _ROMANCE_REL[lang][d], _romance_np(lang, y)
        if lang == "fr" and relation.endswith(" de"):  # de + un(e) -> d'un(e)
            rel_y = f"{relation[:-2]}d'{landmark}"
        else:
            rel_y = f"{relation} {landmark}"
        return {"x": _romance_np(lang, x), "ry": rel_y}

    return fields


# --- Russian: genitive after "слева от" / "справа от", instrumental after "над" / "под" ------

# (genitive, instrumental); nominative and accusative are demo_language's RU_NOUN
_RU_NOUN_CASES = {
    "circle": ("круга", "кругом"),
    "square": ("квадрата", "квадратом"),
    "triangle": ("треугольника", "треугольником"),
    "star": ("звезды", "звездой"),
}
# masculine genitive, masculine instrumental, feminine genitive = instrumental; the nominative
# and feminine accusative are demo_language's RU_ADJ
_RU_COLOUR_CASES = parse_table("""red: красного | красным | красной
                             green: зелёного | зелёным | зелёной
                             blue: синего | синим | синей
                             yellow: жёлтого | жёлтым | жёлтой
                             purple: фиолетового | фиолетовым | фиолетовой
                             orange: оранжевого | оранжевым | оранжевой""")
# nominative m, nominative f, accusative f, genitive m, instrumental m, genitive / instrumental f
_RU_SIZE = parse_table("""
                       small: маленький | маленькая | маленькую | маленького | маленьким | маленькой
                     large: большой | большая | большую | большого | большим | большой""")
_RU_REL = {
    "left": ("слева от", "gen"),
    "right": ("справа от", "gen"),
    "above": ("над", "ins"),
    "below": ("под", "ins"),
}


def _ru_adjective(forms: tuple[str, ...], gender: str, case: str) -> str:
    """``forms``: nom m, nom f, acc f, gen m, ins m, gen/ins f."""
    if gender == "m":
        return {"nom": forms[0], "acc": forms[0], "gen": forms[3], "ins": forms[4]}[case]
    return {"nom": forms[1], "acc": forms[2], "gen": forms[5], "ins": forms[5]}[case]


def _ru_np(t: Thing, case: str) -> str:
    nominative, accusative, gender = RU_NOUN[t.shape]
    noun = {
        "nom": nominative,
        "acc": accusative,
        "gen": _RU_NOUN_CASES[t.shape][0],
        "ins": _RU_NOUN_CASES[t.shape][1],
    }[case]
    words = [_ru_adjective(_RU_SIZE[t.size], gender, case)] if t.size else []
    if t.colour:
        words.append(_ru_adjective(RU_ADJ[t.colour] + _RU_COLOUR_CASES[t.colour], gender, case))
    return " ".join(words + [noun])


def _ru(x: Thing, d: str, y: Thing) -> dict[str, str]:
    preposition, case = _RU_REL[d]
    return {
        "x": _ru_np(x, "nom"),
        "x_acc": _ru_np(x, "acc"),
        "ry": f"{preposition} {_ru_np(y, case)}",
    }


# --- Chinese: "X在Y的左边"; colour with 的 before the size-marked noun ------------------------

_ZH_SIZE = {"small": "小", "large": "大"}
_ZH_REL = {"left": "左边", "right": "右边", "above": "上方", "below": "下方"}


def _zh_np(t: Thing) -> str:
    colour = f"{ZH_COLOUR[t.colour]}的" if t.colour else ""
    return colour + (_ZH_SIZE[t.size] if t.size else "") + ZH_SHAPE[t.shape]


def _zh(x: Thing, d: str, y: Thing) -> dict[str, str]:
    return {"x": _zh_np(x), "y": _zh_np(y), "rel": _ZH_REL[d]}


# --- Japanese: "Yの左にX"; attributive size, then colour, then noun -----------------------------

_JA_SIZE = {"small": "小さな", "large": "大きな"}
_JA_REL = {"left": "左", "right": "右", "above": "上", "below": "下"}


def _ja_np(t: Thing) -> str:
    return (
        (_JA_SIZE[t.size] if t.size else "")
        + (JA_COLOUR[t.colour] if t.colour else "")
        + JA_SHAPE[t.shape]
    )


def _ja(x: Thing, d: str, y: Thing) -> dict[str, str]:
    return {"x": _ja_np(x), "y": _ja_np(y), "rel": _JA_REL[d]}


# --- Arabic: noun, colour, size, agreeing in gender; the verb agrees with the subject ---------

_AR_SIZE = parse_table("""small: صغير | صغيرة
                     large: كبير | كبيرة""")
_AR_REL = {"left": "على يسار", "right": "على يمين", "above": "فوق", "below": "تحت"}


def _ar_np(t: Thing) -> str:
    noun, gender = AR_NOUN[t.shape]
    pick = 1 if gender == "f" else 0
    words = [noun]
    if t.colour:
        words.append(AR_ADJ[t.colour][pick])
    if t.size:
        words.append(_AR_SIZE[t.size][pick])
    return " ".join(words)


def _ar(x: Thing, d: str, y: Thing) -> dict[str, str]:
    verb = "توجد" if AR_NOUN[x.shape][1] == "f" else "يوجد"  # "there is", agreeing with x
    return {"x": _ar_np(x), "y": _ar_np(y), "rel": _AR_REL[d], "verb": verb}


# --- Hindi: the landmark before the compound postposition is oblique ---------------------------

_HI_SIZE = parse_table("""small: छोटा | छोटे
                     large: बड़ा | बड़े""")  # (masculine direct, masculine oblique)
_HI_REL = {"left": "के बाईं ओर", "right": "के दाईं ओर", "above": "के ऊपर", "below": "के नीचे"}


def _hi_np(t: Thing, oblique: bool) -> str:
    """Direct case with "एक" (the located object), or oblique without it (the landmark);
    all four shape nouns are masculine."""
    pick = 1 if oblique else 0
    words = [] if oblique else ["एक"]
    words += [_HI_SIZE[t.size][pick]] if t.size else []
    words += [HI_ADJ[t.colour][pick]] if t.colour else []
    return " ".join(words + [HI_NOUN[t.shape][pick]])


def _hi(x: Thing, d: str, y: Thing) -> dict[str, str]:
    return {"x": _hi_np(x, False), "y": _hi_np(y, True), "rel": _HI_REL[d]}


# --- Swahili: size adjectives and the locative copula agree with the noun class ---------------

_SW_SIZE = {"small": {3: "mdogo", 9: "ndogo"}, "large": {3: "mkubwa", 9: "kubwa"}}
_SW_LOCATIVE = {3: "uko", 9: "iko"}  # "is (located)"
_SW_NOUN_CLASS = {"circle": 9, "square": 3, "triangle": 9, "star": 9}
_SW_REL = {
    "left": "upande wa kushoto wa",
    "right": "upande wa kulia wa",
    "above": "juu ya",
    "below": "chini ya",
}


def _sw_np(t: Thing) -> str:
    noun, colour = sw_phrase(t.colour or COLOURS[0], t.shape, "np").split(" ", 1)
    words = [noun]
    if t.size:
        words.append(_SW_SIZE[t.size][_SW_NOUN_CLASS[t.shape]])
    if t.colour:
        words.append(colour)
    return " ".join(words)


def _sw_fields(x: Thing, d: str, y: Thing) -> dict[str, str]:
    return {
        "x": _sw_np(x),
        "y": _sw_np(y),
        "rel": _SW_REL[d],
        "loc": _SW_LOCATIVE[_SW_NOUN_CLASS[x.shape]],
    }
