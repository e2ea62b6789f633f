"""Noun phrases naming a demo class (colour, shape) in the demo's 12 languages: the grammar.

For every language this module knows what it takes to name such a pair correctly: article choice
(en "an orange"), gender agreement (de "ein roter Kreis" / "ein rotes Quadrat", fr "un cercle
vert" / "une étoile verte", ru "красный круг" / "красная звезда", ar "مربع أحمر" / "دائرة
حمراء"), case (de accusative "einen roten Kreis", ru accusative "красную звезду", hi oblique "हरे
तारे की"), adjective position (romance languages put the colour after the noun), and noun-class
agreement (sw "mraba mwekundu" / "duara nyekundu", "huu" / "hii"). Used through
:data:`PHRASES` by :mod:`mclip.data.demo_language`.
"""

from __future__ import annotations

from typing import Callable


def parse_table(rows: str) -> dict[str, tuple[str, ...]]:
    """Parse 'key: a | b | c' lines into {key: (a, b, c)}."""
    out = {}
    for line in rows.strip().splitlines():
        key, values = line.split(":", 1)
        out[key.strip()] = tuple(v.strip() for v in values.split("|"))
    return out


# --- English -------------------------------------------------------------------------------


def _en(colour: str, shape: str, form: str) -> str:
    article = "an" if colour[0] in "aeiou" else "a"
    return f"{article} {colour} {shape}"


# --- German: gender (m/n) and case (nominative / accusative) -------------------------------

DE_NOUN = {
    "circle": ("Kreis", "m"),
    "square": ("Quadrat", "n"),
    "triangle": ("Dreieck", "n"),
    "star": ("Stern", "m"),
}
DE_STEM = {
    "red": "rot",
    "green": "grün",
    "blue": "blau",
    "yellow": "gelb",
    "purple": "violett",
    "orange": "orangefarben",
}
# (article, adjective ending) for the indefinite article, by (gender, case).
_DE_INDEF = {
    ("m", "np"): ("ein", "er"),
    ("n", "np"): ("ein", "es"),
    ("f", "np"): ("eine", "e"),
    ("m", "acc"): ("einen", "en"),
    ("n", "acc"): ("ein", "es"),
    ("f", "acc"): ("eine", "e"),
}


def _de(colour: str, shape: str, form: str) -> str:
    noun, gender = DE_NOUN[shape]
    article, ending = _DE_INDEF[(gender, form)]
    return f"{article} {DE_STEM[colour]}{ending} {noun}"


# --- Romance languages: noun + agreeing adjective ------------------------------------------


def _romance(
    nouns: dict[str, tuple[str, str]],
    adjectives: dict[str, tuple[str, ...]],
    articles: tuple[str, str],
) -> Callable[[str, str, str], str]:
    def phrase(colour: str, shape: str, form: str) -> str:
        noun, gender = nouns[shape]
        masculine, feminine = adjectives[colour]
        adjective = feminine if gender == "f" else masculine
        article = articles[1] if gender == "f" else articles[0]
        return f"{article} {noun} {adjective}"

    return phrase


FR = _romance(
    {
        "circle": ("cercle", "m"),
        "square": ("carré", "m"),
        "triangle": ("triangle", "m"),
        "star": ("étoile", "f"),
    },
    parse_table("""red: rouge | rouge
                         green: vert | verte
                         blue: bleu | bleue
                         yellow: jaune | jaune
                         purple: violet | violette
                         orange: orange | orange"""),
    ("un", "une"),
)
ES = _romance(
    {
        "circle": ("círculo", "m"),
        "square": ("cuadrado", "m"),
        "triangle": ("triángulo", "m"),
        "star": ("estrella", "f"),
    },
    parse_table("""red: rojo | roja
                         green: verde | verde
                         blue: azul | azul
                         yellow: amarillo | amarilla
                         purple: morado | morada
                         orange: naranja | naranja"""),
    ("un", "una"),
)
IT = _romance(
    {
        "circle": ("cerchio", "m"),
        "square": ("quadrato", "m"),
        "triangle": ("triangolo", "m"),
        "star": ("stella", "f"),
    },
    parse_table("""red: rosso | rossa
                         green: verde | verde
                         blue: blu | blu
                         yellow: giallo | gialla
                         purple: viola | viola
                         orange: arancione | arancione"""),
    ("un", "una"),
)
PT = _romance(
    {
        "circle": ("círculo", "m"),
        "square": ("quadrado", "m"),
        "triangle": ("triângulo", "m"),
        "star": ("estrela", "f"),
    },
    parse_table("""red: vermelho | vermelha
                         green: verde | verde
                         blue: azul | azul
                         yellow: amarelo | amarela
                         purple: roxo | roxa
                         orange: laranja | laranja"""),
    ("um", "uma"),
)

# --- Russian: gender and case (inanimate accusative) ---------------------------------------

RU_NOUN = {
    "circle": ("круг", "круг", "m"),
    "square": ("квадрат", "квадрат", "m"),
    "triangle": ("треугольник", "треугольник", "m"),
    "star": ("звезда", "звезду", "f"),
}
# nominative m, nominative f, accusative f (inanimate masculine accusative = nominative)
RU_ADJ = parse_table("""red: красный | красная | красную
                    green: зелёный | зелёная | зелёную
                    blue: синий | синяя | синюю
                    yellow: жёлтый | жёлтая | жёлтую
                    purple: фиолетовый | фиолетовая | фиолетовую
                    orange: оранжевый | оранжевая | оранжевую""")


def _ru(colour: str, shape: str, form: str) -> str:
    nominative, accusative, gender = RU_NOUN[shape]
    m_nom, f_nom, f_acc = RU_ADJ[colour]
    if gender == "m":
        return f"{m_nom} {nominative}"
    return f"{f_acc} {accusative}" if form == "acc" else f"{f_nom} {nominative}"


# --- Chinese and Japanese: modifier before the noun, no agreement ---------------------------

ZH_COLOUR = {
    "red": "红色",
    "green": "绿色",
    "blue": "蓝色",
    "yellow": "黄色",
    "purple": "紫色",
    "orange": "橙色",
}
ZH_SHAPE = {"circle": "圆形", "square": "正方形", "triangle": "三角形", "star": "星形"}


def _zh(colour: str, shape: str, form: str) -> str:
    if form == "de":  # with the attributive particle 的
        return f"{ZH_COLOUR[colour]}的{ZH_SHAPE[shape]}"
    return f"{ZH_COLOUR[colour]}{ZH_SHAPE[shape]}"


# i-adjectives attach directly (赤い); nominal colours take の (緑の).
JA_COLOUR = {
    "red": "赤い",
    "green": "緑の",
    "blue": "青い",
    "yellow": "黄色い",
    "purple": "紫の",
    "orange": "オレンジ色の",
}
JA_SHAPE = {"circle": "円", "square": "正方形", "triangle": "三角形", "star": "星"}


def _ja(colour: str, shape: str, form: str) -> str:
    return f"{JA_COLOUR[colour]}{JA_SHAPE[shape]}"


# --- Arabic: noun then agreeing adjective; verb agrees in gender ----------------------------

AR_NOUN = {
    "circle": ("دائرة", "f"),
    "square": ("مربع", "m"),
    "triangle": ("مثلث", "m"),
    "star": ("نجمة", "f"),
}
AR_ADJ = parse_table("""red: أحمر | حمراء
                    green: أخضر | خضراء
                    blue: أزرق | زرقاء
                    yellow: أصفر | صفراء
                    purple: بنفسجي | بنفسجية
                    orange: برتقالي | برتقالية""")


def _ar(colour: str, shape: str, form: str) -> str:
    noun, gender = AR_NOUN[shape]
    if form == "verb":  # "appears": masculine يظهر, feminine تظهر
        return "تظهر" if gender == "f" else "يظهر"
    masculine, feminine = AR_ADJ[colour]
    return f"{noun} {feminine if gender == 'f' else masculine}"


# --- Hindi: adjectives in -आ inflect; masculine -आ nouns take the oblique -ए ----------------

HI_NOUN = {
    "circle": ("वृत्त", "वृत्त"),
    "square": ("वर्ग", "वर्ग"),
    "triangle": ("त्रिभुज", "त्रिभुज"),
    "star": ("तारा", "तारे"),
}  # (direct, oblique)
HI_ADJ = parse_table("""red: लाल | लाल
                    green: हरा | हरे
                    blue: नीला | नीले
                    yellow: पीला | पीले
                    purple: बैंगनी | बैंगनी
                    orange: नारंगी | नारंगी""")  # (masculine direct, masculine oblique)


def _hi(colour: str, shape: str, form: str) -> str:
    direct_noun, oblique_noun = HI_NOUN[shape]  # all four shape nouns are masculine
    direct_adj, oblique_adj = HI_ADJ[colour]
    if form == "obl":
        return f"एक {oblique_adj} {oblique_noun}"
    return f"एक {direct_adj} {direct_noun}"


# --- Swahili: noun classes 9 (duara, pembetatu, nyota) and 3 (mraba) -----------------------

_SW_NOUN = {
    "circle": ("duara", 9),
    "square": ("mraba", 3),
    "triangle": ("pembetatu", 9),
    "star": ("nyota", 9),
}
_SW_COLOUR = {
    "green": "kijani",
    "blue": "buluu",
    "yellow": "manjano",
    "purple": "zambarau",
    "orange": "machungwa",
}


def sw_phrase(colour: str, shape: str, form: str) -> str:
    noun, noun_class = _SW_NOUN[shape]
    if form == "dem":  # "this"
        return "huu" if noun_class == 3 else "hii"
    if colour == "red":  # the adjective stem -ekundu takes the class prefix
        return f"{noun} {'mwekundu' if noun_class == 3 else 'nyekundu'}"
    # other colours are nouns joined by the associative -a, which agrees with the noun class
    return f"{noun} {'wa' if noun_class == 3 else 'ya'} {_SW_COLOUR[colour]}"


# One function per language: (colour, shape, form) -> noun phrase; form as in the captions.
PHRASES: dict[str, Callable[[str, str, str], str]] = {
    "en": _en,
    "de": _de,
    "fr": FR,
    "es": ES,
    "it": IT,
    "pt": PT,
    "ru": _ru,
    "zh": _zh,
    "ja": _ja,
    "ar": _ar,
    "hi": _hi,
    "sw": sw_phrase,
}
