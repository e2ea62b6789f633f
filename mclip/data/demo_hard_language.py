"""Captions, class names and prompt templates of the hard demo level, in 12 languages.

Each language's :class:`HardLanguage` pairs its grammar (:mod:`mclip.data.demo_hard_grammar`)
with caption and prompt templates. A class name is the language's bare description
(``fragment`` filled with noun phrases that name only the shape; classes are defined in
:mod:`mclip.data.demo_hard_scene`). Training samples also carry these bare descriptions inside the
prompt templates, so that the zero-shot prompts are phrasings the demo text tower has seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from mclip.data.demo_hard_grammar import _ar, _de, _en, _hi, _ja, _romance, _ru, _sw_fields, _zh
from mclip.data.demo_hard_scene import HARD_CLASSES, Scene, Thing


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


@dataclass(frozen=True)
class HardLanguage:
    """Grammar of one language for the hard level.

    ``fields(x, direction, y)`` returns the named pieces of "x is ``direction`` of y" (noun
    phrases in the forms the templates need, the relation word, agreeing verbs). Templates are
    ``str.format`` patterns over those names; an upper-case name (``{X}``) is the piece with a
    capital first letter. ``fragment`` is the bare description used as class name;
    ``prompt_templates`` use ``{c}`` for it.
    """

    code: str
    name: str
    fields: Callable[[Thing, str, Thing], dict[str, str]]
    fragment: str
    caption_templates: tuple[str, ...]
    prompt_templates: tuple[str, ...]

    def describe(self, x: Thing, direction: str, y: Thing, template: str) -> str:
        """One sentence saying that ``x`` is ``direction`` of ``y``, following ``template``."""
        fields = self.fields(x, direction, y)
        fields.update({key.upper(): _capitalise(value) for key, value in list(fields.items())})
        return template.format(**fields)

    def captions(self, scene: Scene) -> list[str]:
        """Every full caption of ``scene``: each template, both orders of mention, no repeats."""
        found = [
            self.describe(x, d, y, t)
            for x, d, y in scene.mentions()
            for t in self.caption_templates
        ]
        return list(dict.fromkeys(found))

    def bare_captions(self, scene: Scene) -> list[str]:
        """The prompt templates filled with bare descriptions (shapes only), both orders."""
        found = [
            t.format(c=self.describe(x, d, y, self.fragment))
            for x, d, y in scene.bare().mentions()
            for t in self.prompt_templates
        ]
        return list(dict.fromkeys(found))

    def class_name(self, label: int) -> str:
        """The class name of HARD_CLASSES[label]: the bare description, canonical direction."""
        a, relation, b = HARD_CLASSES[label]
        return self.describe(Thing(None, None, a), relation, Thing(None, None, b), self.fragment)


HARD_LANGUAGES: dict[str, HardLanguage] = {
    lang.code: lang
    for lang in [
        HardLanguage(
            "en",
            "English",
            _en,
            "{x} {rel} {y}",
            (
                "{x} {short} {y}",
                "{x} {rel} {y}",
                "{X} is {rel} {y}.",
                "There is {x} {rel} {y}.",
                "a picture of {x} {rel} {y}",
            ),
            ("{c}", "There is {c}.", "a picture of {c}"),
        ),
        HardLanguage(
            "de",
            "German",
            _de,
            "{x} {rel} {y}",
            (
                "{x} {rel} {y}",
                "Auf dem Bild ist {x} {rel} {y}.",
                "{X} befindet sich {rel} {y}.",
                "{REL} {y} ist {x}.",
                "Das Bild zeigt {x_acc} {rel} {y}.",
            ),
            ("{c}", "Auf dem Bild ist {c}."),
        ),
        HardLanguage(
            "fr",
            "French",
            _romance("fr"),
            "{x} {ry}",
            (
                "{x} {ry}",
                "Il y a {x} {ry}.",
                "On voit {x} {ry}.",
                "{X} se trouve {ry}.",
                "L'image montre {x} {ry}.",
            ),
            ("{c}", "Il y a {c}.", "On voit {c}."),
        ),
        HardLanguage(
            "es",
            "Spanish",
            _romance("es"),
            "{x} {ry}",
            (
                "{x} {ry}",
                "Hay {x} {ry}.",
                "Se ve {x} {ry}.",
                "{X} está {ry}.",
                "La imagen muestra {x} {ry}.",
            ),
            ("{c}", "Hay {c}.", "Se ve {c}."),
        ),
        HardLanguage(
            "it",
            "Italian",
            _romance("it"),
            "{x} {ry}",
            (
                "{x} {ry}",
                "C'è {x} {ry}.",
                "Si vede {x} {ry}.",
                "{X} si trova {ry}.",
                "L'immagine mostra {x} {ry}.",
            ),
            ("{c}", "C'è {c}.", "Si vede {c}."),
        ),
        HardLanguage(
            "pt",
            "Portuguese",
            _romance("pt"),
            "{x} {ry}",
            (
                "{x} {ry}",
                "Há {x} {ry}.",
                "Vê-se {x} {ry}.",
                "{X} está {ry}.",
                "A imagem mostra {x} {ry}.",
            ),
            ("{c}", "Há {c}.", "Vê-se {c}."),
        ),
        HardLanguage(
            "ru",
            "Russian",
            _ru,
            "{x} {ry}",
            (
                "{x} {ry}",
                "На картинке {x} {ry}.",
                "{X} находится {ry}.",
                "{RY} находится {x}.",
                "Мы видим {x_acc} {ry}.",
            ),
            ("{c}", "На картинке {c}."),
        ),
        HardLanguage(
            "zh",
            "Chinese",
            _zh,
            "{x}在{y}的{rel}",
            (
                "{x}在{y}的{rel}",
                "图片中{x}在{y}的{rel}。",
                "{y}的{rel}有一个{x}。",
                "{x}位于{y}的{rel}。",
            ),
            ("{c}", "图片中{c}。"),
        ),
        HardLanguage(
            "ja",
            "Japanese",
            _ja,
            "{y}の{rel}にある{x}",
            (
                "{y}の{rel}にある{x}",
                "{y}の{rel}に{x}があります。",
                "{x}が{y}の{rel}にあります。",
                "{y}の{rel}に{x}が描かれています。",
            ),
            ("{c}", "{c}の画像。"),
        ),
        HardLanguage(
            "ar",
            "Arabic",
            _ar,
            "{x} {rel} {y}",
            (
                "{x} {rel} {y}",
                "في الصورة {x} {rel} {y}.",
                "{verb} {x} {rel} {y}.",
                "{rel} {y} {x}.",
                "صورة {x} {rel} {y}.",
            ),
            ("{c}", "في الصورة {c}."),
        ),
        HardLanguage(
            "hi",
            "Hindi",
            _hi,
            "{y} {rel} {x}",
            (
                "{y} {rel} {x}",
                "तस्वीर में {y} {rel} {x} है।",
                "{x} {y} {rel} है।",
                "{y} {rel} {x} बना है।",
            ),
            ("{c}", "तस्वीर में {c} है।"),
        ),
        HardLanguage(
            "sw",
            "Swahili",
            _sw_fields,
            "{x} {rel} {y}",
            (
                "{x} {rel} {y}",
                "{X} {loc} {rel} {y}.",
                "Kuna {x} {rel} {y}.",
                "Picha ya {x} {rel} {y}.",
            ),
            ("{c}", "Kuna {c}.", "Picha ya {c}."),
        ),
    ]
}


def hard_class_names(lang: str) -> list[str]:
    """Class names of the 24 hard-level classes in ``lang``, in ``HARD_CLASSES`` order."""
    return [HARD_LANGUAGES[lang].class_name(label) for label in range(len(HARD_CLASSES))]
