"""Captions, class names and prompt templates for the embedded demo dataset, in 12 languages.

Each class is a (colour, shape) pair. For every language this module knows the grammar needed
to name such a pair correctly: article choice (en "an orange"), gender agreement (de "ein roter
Kreis" / "ein rotes Quadrat", fr "un cercle vert" / "une étoile verte", ru "красный круг" /
"красная звезда", ar "مربع أحمر" / "دائرة حمراء"), case (de accusative "einen roten Kreis",
ru accusative "красную звезду", hi oblique "हरे तारे की"), adjective position (romance
languages put the colour after the noun), and noun-class agreement (sw "mraba mwekundu" /
"duara nyekundu", "huu" / "hii").

The class name in every language is the indefinite noun phrase in the nominative (or direct)
case, so zero-shot templates place it with ``{c}`` where that case is required. The prompt
templates are caption phrasings of the training data (as CLIP's prompts imitate its captions);
the byte-level demo text tower is case-sensitive and has never seen any other wording.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "orange")
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")
CLASSES: tuple[tuple[str, str], ...] = tuple((c, s) for c in COLOURS for s in SHAPES)


@dataclass(frozen=True)
class DemoLanguage:
    """Grammar of one language for the demo: noun phrases, caption and prompt templates.

    ``phrase(colour, shape, form)`` returns a noun phrase; ``form`` is one of the keys used in
    ``caption_templates`` (``np`` nominative indefinite, plus language-specific forms such as
    ``acc``). Templates are ``str.format`` patterns; ``{NP}`` is ``{np}`` with a capital first
    letter. ``prompt_templates`` use ``{c}`` for the class name (the ``np`` form).
    """

    code: str
    name: str
    phrase: Callable[[str, str, str], str]
    caption_templates: tuple[str, ...]
    prompt_templates: tuple[str, ...]

    def class_name(self, colour: str, shape: str) -> str:
        """The class name: the indefinite noun phrase, nominative / direct case."""
        return self.phrase(colour, shape, "np")

    def caption(self, colour: str, shape: str, template: str) -> str:
        """One caption: ``template`` filled with the noun-phrase forms it names."""
        fields = {}
        for key in ("np", "acc", "obl", "dem", "verb", "de"):
            if "{" + key + "}" in template or "{" + key.upper() + "}" in template:
                value = self.phrase(colour, shape, key)
                fields[key] = value
                fields[key.upper()] = value[:1].upper() + value[1:]
        return template.format(**fields)

    def captions(self, colour: str, shape: str) -> list[str]:
        """Every caption phrasing of this language for one class."""
        return [self.caption(colour, shape, t) for t in self.caption_templates]


def _table(rows: str) -> dict[str, tuple[str, ...]]:
    """Parse 'key: a | b | c' lines into {key: (a, b, c)}."""
    out = {}
    for line in rows.strip().splitlines():
        key, values = line.split(":", 1)
        out[key.strip()] = tuple(v.strip() for v in values.split("|"))
    return out


# --- English -------------------------------------------------------------------------------

_EN_COLOUR = {c: c for c in COLOURS}


def _en(colour: str, shape: str, form: str) -> str:
    adjective = _EN_COLOUR[colour]
    article = "an" if adjective[0] in "aeiou" else "a"
    return f"{article} {adjective} {shape}"


# --- German: gender (m/n) and case (nominative / accusative) -------------------------------

_DE_NOUN = {"circle": ("Kreis", "m"), "square": ("Quadrat", "n"), "triangle": ("Dreieck", "n"),
            "star": ("Stern", "m")}
_DE_STEM = {"red": "rot", "green": "grün", "blue": "blau", "yellow": "gelb", "purple": "violett",
            "orange": "orangefarben"}
# (article, adjective ending) for the indefinite article, by (gender, case).
_DE_INDEF = {("m", "np"): ("ein", "er"), ("n", "np"): ("ein", "es"), ("f", "np"): ("eine", "e"),
             ("m", "acc"): ("einen", "en"), ("n", "acc"): ("ein", "es"),
             ("f", "acc"): ("eine", "e")}


def _de(colour: str, shape: str, form: str) -> str:
    noun, gender = _DE_NOUN[shape]
    article, ending = _DE_INDEF[(gender, form)]
    return f"{article} {_DE_STEM[colour]}{ending} {noun}"


# --- Romance languages: noun + agreeing adjective ------------------------------------------

def _romance(nouns: dict[str, tuple[str, str]], adjectives: dict[str, tuple[str, ...]],
             articles: tuple[str, str]) -> Callable[[str, str, str], str]:
    def phrase(colour: str, shape: str, form: str) -> str:
        noun, gender = nouns[shape]
        masculine, feminine = adjectives[colour]
        adjective = feminine if gender == "f" else masculine
        article = articles[1] if gender == "f" else articles[0]
        return f"{article} {noun} {adjective}"
    return phrase


_FR = _romance({"circle": ("cercle", "m"), "square": ("carré", "m"),
                "triangle": ("triangle", "m"), "star": ("étoile", "f")},
               _table("""red: rouge | rouge
                         green: vert | verte
                         blue: bleu | bleue
                         yellow: jaune | jaune
                         purple: violet | violette
                         orange: orange | orange"""), ("un", "une"))
_ES = _romance({"circle": ("círculo", "m"), "square": ("cuadrado", "m"),
                "triangle": ("triángulo", "m"), "star": ("estrella", "f")},
               _table("""red: rojo | roja
                         green: verde | verde
                         blue: azul | azul
                         yellow: amarillo | amarilla
                         purple: morado | morada
                         orange: naranja | naranja"""), ("un", "una"))
_IT = _romance({"circle": ("cerchio", "m"), "square": ("quadrato", "m"),
                "triangle": ("triangolo", "m"), "star": ("stella", "f")},
               _table("""red: rosso | rossa
                         green: verde | verde
                         blue: blu | blu
                         yellow: giallo | gialla
                         purple: viola | viola
                         orange: arancione | arancione"""), ("un", "una"))
_PT = _romance({"circle": ("círculo", "m"), "square": ("quadrado", "m"),
                "triangle": ("triângulo", "m"), "star": ("estrela", "f")},
               _table("""red: vermelho | vermelha
                         green: verde | verde
                         blue: azul | azul
                         yellow: amarelo | amarela
                         purple: roxo | roxa
                         orange: laranja | laranja"""), ("um", "uma"))

# --- Russian: gender and case (inanimate accusative) ---------------------------------------

_RU_NOUN = {"circle": ("круг", "круг", "m"), "square": ("квадрат", "квадрат", "m"),
            "triangle": ("треугольник", "треугольник", "m"), "star": ("звезда", "звезду", "f")}
# nominative m, nominative f, accusative f (inanimate masculine accusative = nominative)
_RU_ADJ = _table("""red: красный | красная | красную
                    green: зелёный | зелёная | зелёную
                    blue: синий | синяя | синюю
                    yellow: жёлтый | жёлтая | жёлтую
                    purple: фиолетовый | фиолетовая | фиолетовую
                    orange: оранжевый | оранжевая | оранжевую""")


def _ru(colour: str, shape: str, form: str) -> str:
    nominative, accusative, gender = _RU_NOUN[shape]
    m_nom, f_nom, f_acc = _RU_ADJ[colour]
    if gender == "m":
        return f"{m_nom} {nominative}"
    return f"{f_acc} {accusative}" if form == "acc" else f"{f_nom} {nominative}"


# --- Chinese and Japanese: modifier before the noun, no agreement ---------------------------

_ZH_COLOUR = {"red": "红色", "green": "绿色", "blue": "蓝色", "yellow": "黄色", "purple": "紫色",
              "orange": "橙色"}
_ZH_SHAPE = {"circle": "圆形", "square": "正方形", "triangle": "三角形", "star": "星形"}


def _zh(colour: str, shape: str, form: str) -> str:
    if form == "de":  # with the attributive particle 的
        return f"{_ZH_COLOUR[colour]}的{_ZH_SHAPE[shape]}"
    return f"{_ZH_COLOUR[colour]}{_ZH_SHAPE[shape]}"


# i-adjectives attach directly (赤い); nominal colours take の (緑の).
_JA_COLOUR = {"red": "赤い", "green": "緑の", "blue": "青い", "yellow": "黄色い", "purple": "紫の",
              "orange": "オレンジ色の"}
_JA_SHAPE = {"circle": "円", "square": "正方形", "triangle": "三角形", "star": "星"}


def _ja(colour: str, shape: str, form: str) -> str:
    return f"{_JA_COLOUR[colour]}{_JA_SHAPE[shape]}"


# --- Arabic: noun then agreeing adjective; verb agrees in gender ----------------------------

_AR_NOUN = {"circle": ("دائرة", "f"), "square": ("مربع", "m"), "triangle": ("مثلث", "m"),
            "star": ("نجمة", "f")}
_AR_ADJ = _table("""red: أحمر | حمراء
                    green: أخضر | خضراء
                    blue: أزرق | زرقاء
                    yellow: أصفر | صفراء
                    purple: بنفسجي | بنفسجية
                    orange: برتقالي | برتقالية""")


def _ar(colour: str, shape: str, form: str) -> str:
    noun, gender = _AR_NOUN[shape]
    if form == "verb":  # "appears": masculine يظهر, feminine تظهر
        return "تظهر" if gender == "f" else "يظهر"
    masculine, feminine = _AR_ADJ[colour]
    return f"{noun} {feminine if gender == 'f' else masculine}"


# --- Hindi: adjectives in -आ inflect; masculine -आ nouns take the oblique -ए ----------------

_HI_NOUN = {"circle": ("वृत्त", "वृत्त"), "square": ("वर्ग", "वर्ग"),
            "triangle": ("त्रिभुज", "त्रिभुज"), "star": ("तारा", "तारे")}  # (direct, oblique)
_HI_ADJ = _table("""red: लाल | लाल
                    green: हरा | हरे
                    blue: नीला | नीले
                    yellow: पीला | पीले
                    purple: बैंगनी | बैंगनी
                    orange: नारंगी | नारंगी""")  # (masculine direct, masculine oblique)


def _hi(colour: str, shape: str, form: str) -> str:
    direct_noun, oblique_noun = _HI_NOUN[shape]  # all four shape nouns are masculine
    direct_adj, oblique_adj = _HI_ADJ[colour]
    if form == "obl":
        return f"एक {oblique_adj} {oblique_noun}"
    return f"एक {direct_adj} {direct_noun}"


# --- Swahili: noun classes 9 (duara, pembetatu, nyota) and 3 (mraba) -----------------------

_SW_NOUN = {"circle": ("duara", 9), "square": ("mraba", 3), "triangle": ("pembetatu", 9),
            "star": ("nyota", 9)}
_SW_COLOUR = {"green": "kijani", "blue": "buluu", "yellow": "manjano", "purple": "zambarau",
              "orange": "machungwa"}


def _sw(colour: str, shape: str, form: str) -> str:
    noun, noun_class = _SW_NOUN[shape]
    if form == "dem":  # "this"
        return "huu" if noun_class == 3 else "hii"
    if colour == "red":  # the adjective stem -ekundu takes the class prefix
        return f"{noun} {'mwekundu' if noun_class == 3 else 'nyekundu'}"
    # other colours are nouns joined by the associative -a, which agrees with the noun class
    return f"{noun} {'wa' if noun_class == 3 else 'ya'} {_SW_COLOUR[colour]}"


LANGUAGES: dict[str, DemoLanguage] = {lang.code: lang for lang in [
    DemoLanguage("en", "English", _en,
                 ("{NP}.", "a picture of {np}", "{NP} on a plain background.",
                  "There is {np} in the image.", "an image showing {np}", "a drawing of {np}"),
                 ("a picture of {c}", "There is {c} in the image.", "an image showing {c}",
                  "a drawing of {c}")),
    DemoLanguage("de", "German", _de,
                 ("{NP}.", "Auf dem Bild ist {np}.", "Zu sehen ist {np}.",
                  "{NP} auf einfarbigem Hintergrund.", "Das Bild zeigt {acc}.", "Man sieht {acc}."),
                 ("Auf dem Bild ist {c}.", "Zu sehen ist {c}.")),
    DemoLanguage("fr", "French", _FR,
                 ("{NP}.", "Il y a {np} sur l'image.", "On voit {np}.", "L'image montre {np}.",
                  "{NP} sur un fond uni.", "Une image d'{np}."),
                 ("Il y a {c} sur l'image.", "On voit {c}.", "L'image montre {c}.",
                  "Une image d'{c}.")),
    DemoLanguage("es", "Spanish", _ES,
                 ("{NP}.", "Hay {np} en la imagen.", "Se ve {np}.", "La imagen muestra {np}.",
                  "{NP} sobre un fondo liso.", "Un dibujo de {np}."),
                 ("Hay {c} en la imagen.", "Se ve {c}.", "La imagen muestra {c}.",
                  "Un dibujo de {c}.")),
    DemoLanguage("it", "Italian", _IT,
                 ("{NP}.", "C'è {np} nell'immagine.", "Si vede {np}.", "L'immagine mostra {np}.",
                  "{NP} su uno sfondo uniforme.", "Un disegno di {np}."),
                 ("C'è {c} nell'immagine.", "Si vede {c}.", "L'immagine mostra {c}.",
                  "Un disegno di {c}.")),
    DemoLanguage("pt", "Portuguese", _PT,
                 ("{NP}.", "Há {np} na imagem.", "Vê-se {np}.", "A imagem mostra {np}.",
                  "{NP} sobre um fundo liso.", "Um desenho de {np}."),
                 ("Há {c} na imagem.", "Vê-se {c}.", "A imagem mostra {c}.", "Um desenho de {c}.")),
    DemoLanguage("ru", "Russian", _ru,
                 ("{NP}.", "На картинке {np}.", "На изображении {np}.", "{NP} на однотонном фоне.",
                  "Мы видим {acc}.", "Изображение: {np}."),
                 ("На картинке {c}.", "На изображении {c}.", "Изображение: {c}.")),
    DemoLanguage("zh", "Chinese", _zh,
                 ("一个{de}。", "图片中有一个{de}。", "这是一个{np}。", "纯色背景上的{np}。",
                  "画面里是一个{de}。", "一张{np}的图片。"),
                 ("这是一个{c}。", "一张{c}的图片。", "纯色背景上的{c}。")),
    DemoLanguage("ja", "Japanese", _ja,
                 ("{np}。", "{np}の画像。", "{np}が描かれています。", "無地の背景の上の{np}。",
                  "{np}があります。", "{np}の絵。"),
                 ("{c}。", "{c}の画像。", "{c}があります。", "{c}の絵。")),
    DemoLanguage("ar", "Arabic", _ar,
                 ("{np}", "صورة {np}.", "في الصورة {np}.", "هذه صورة {np}.",
                  "{np} على خلفية سادة.", "{verb} في الصورة {np}."),
                 ("{c}", "صورة {c}.", "في الصورة {c}.", "هذه صورة {c}.")),
    DemoLanguage("hi", "Hindi", _hi,
                 ("{np}", "तस्वीर में {np} है।", "यह {np} है।", "{obl} की तस्वीर",
                  "सादी पृष्ठभूमि पर {np}", "{obl} का चित्र"),
                 ("{c}", "तस्वीर में {c} है।", "यह {c} है।", "सादी पृष्ठभूमि पर {c}")),
    DemoLanguage("sw", "Swahili", _sw,
                 ("{NP}.", "Picha ya {np}.", "Kuna {np} kwenye picha.", "{DEM} ni {np}.",
                  "{NP} kwenye mandharinyuma ya rangi moja.", "Mchoro wa {np}."),
                 ("Picha ya {c}.", "Kuna {c} kwenye picha.", "Mchoro wa {c}.")),
]}


def class_names(lang: str) -> list[str]:
    """Class names of the 24 demo classes in ``lang``, in ``CLASSES`` order."""
    return [LANGUAGES[lang].class_name(c, s) for c, s in CLASSES]
