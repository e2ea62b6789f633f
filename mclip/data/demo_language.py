"""Captions, class names and prompt templates for the embedded demo dataset, in 12 languages.

Each class is a (colour, shape) pair, named with the grammar of each language
(:mod:`mclip.data.demo_phrases`: articles, gender and case agreement, adjective position).

The class name in every language is the indefinite noun phrase in the nominative (or direct)
case, so zero-shot templates place it with ``{c}`` where that case is required. The prompt
templates are caption phrasings of the training data (as CLIP's prompts imitate its captions);
the byte-level demo text tower is case-sensitive and has never seen any other wording.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from mclip.data.demo_phrases import PHRASES

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


LANGUAGES: dict[str, DemoLanguage] = {
    lang.code: lang
    for lang in [
        DemoLanguage(
            "en",
            "English",
            PHRASES["en"],
            (
                "{NP}.",
                "a picture of {np}",
                "{NP} on a plain background.",
                "There is {np} in the image.",
                "an image showing {np}",
                "a drawing of {np}",
            ),
            (
                "a picture of {c}",
                "There is {c} in the image.",
                "an image showing {c}",
                "a drawing of {c}",
            ),
        ),
        DemoLanguage(
            "de",
            "German",
            PHRASES["de"],
            (
                "{NP}.",
                "Auf dem Bild ist {np}.",
                "Zu sehen ist {np}.",
                "{NP} auf einfarbigem Hintergrund.",
                "Das Bild zeigt {acc}.",
                "Man sieht {acc}.",
            ),
            ("Auf dem Bild ist {c}.", "Zu sehen ist {c}."),
        ),
        DemoLanguage(
            "fr",
            "French",
            PHRASES["fr"],
            (
                "{NP}.",
                "Il y a {np} sur l'image.",
                "On voit {np}.",
                "L'image montre {np}.",
                "{NP} sur un fond uni.",
                "Une image d'{np}.",
            ),
            ("Il y a {c} sur l'image.", "On voit {c}.", "L'image montre {c}.", "Une image d'{c}."),
        ),
        DemoLanguage(
            "es",
            "Spanish",
            PHRASES["es"],
            (
                "{NP}.",
                "Hay {np} en la imagen.",
                "Se ve {np}.",
                "La imagen muestra {np}.",
                "{NP} sobre un fondo liso.",
                "Un dibujo de {np}.",
            ),
            ("Hay {c} en la imagen.", "Se ve {c}.", "La imagen muestra {c}.", "Un dibujo de {c}."),
        ),
        DemoLanguage(
            "it",
            "Italian",
            PHRASES["it"],
            (
                "{NP}.",
                "C'è {np} nell'immagine.",
                "Si vede {np}.",
                "L'immagine mostra {np}.",
                "{NP} su uno sfondo uniforme.",
                "Un disegno di {np}.",
            ),
            (
                "C'è {c} nell'immagine.",
                "Si vede {c}.",
                "L'immagine mostra {c}.",
                "Un disegno di {c}.",
            ),
        ),
        DemoLanguage(
            "pt",
            "Portuguese",
            PHRASES["pt"],
            (
                "{NP}.",
                "Há {np} na imagem.",
                "Vê-se {np}.",
                "A imagem mostra {np}.",
                "{NP} sobre um fundo liso.",
                "Um desenho de {np}.",
            ),
            ("Há {c} na imagem.", "Vê-se {c}.", "A imagem mostra {c}.", "Um desenho de {c}."),
        ),
        DemoLanguage(
            "ru",
            "Russian",
            PHRASES["ru"],
            (
                "{NP}.",
                "На картинке {np}.",
                "На изображении {np}.",
                "{NP} на однотонном фоне.",
                "Мы видим {acc}.",
                "Изображение: {np}.",
            ),
            ("На картинке {c}.", "На изображении {c}.", "Изображение: {c}."),
        ),
        DemoLanguage(
            "zh",
            "Chinese",
            PHRASES["zh"],
            (
                "一个{de}。",
                "图片中有一个{de}。",
                "这是一个{np}。",
                "纯色背景上的{np}。",
                "画面里是一个{de}。",
                "一张{np}的图片。",
            ),
            ("这是一个{c}。", "一张{c}的图片。", "纯色背景上的{c}。"),
        ),
        DemoLanguage(
            "ja",
            "Japanese",
            PHRASES["ja"],
            (
                "{np}。",
                "{np}の画像。",
                "{np}が描かれています。",
                "無地の背景の上の{np}。",
                "{np}があります。",
                "{np}の絵。",
            ),
            ("{c}。", "{c}の画像。", "{c}があります。", "{c}の絵。"),
        ),
        DemoLanguage(
            "ar",
            "Arabic",
            PHRASES["ar"],
            (
                "{np}",
                "صورة {np}.",
                "في الصورة {np}.",
                "هذه صورة {np}.",
                "{np} على خلفية سادة.",
                "{verb} في الصورة {np}.",
            ),
            ("{c}", "صورة {c}.", "في الصورة {c}.", "هذه صورة {c}."),
        ),
        DemoLanguage(
            "hi",
            "Hindi",
            PHRASES["hi"],
            (
                "{np}",
                "तस्वीर में {np} है।",
                "यह {np} है।",
                "{obl} की तस्वीर",
                "सादी पृष्ठभूमि पर {np}",
                "{obl} का चित्र",
            ),
            ("{c}", "तस्वीर में {c} है।", "यह {c} है।", "सादी पृष्ठभूमि पर {c}"),
        ),
        DemoLanguage(
            "sw",
            "Swahili",
            PHRASES["sw"],
            (
                "{NP}.",
                "Picha ya {np}.",
                "Kuna {np} kwenye picha.",
                "{DEM} ni {np}.",
                "{NP} kwenye mandharinyuma ya rangi moja.",
                "Mchoro wa {np}.",
            ),
            ("Picha ya {c}.", "Kuna {c} kwenye picha.", "Mchoro wa {c}."),
        ),
    ]
}


def class_names(lang: str) -> list[str]:
    """Class names of the 24 demo classes in ``lang``, in ``CLASSES`` order."""
    return [LANGUAGES[lang].class_name(c, s) for c, s in CLASSES]
