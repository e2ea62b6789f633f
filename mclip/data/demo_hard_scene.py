"""The scenes and zero-shot classes of the hard demo level.

A hard-level image shows two objects, each with a size (small / large), a colour and a shape, in
a spatial relation: the first object left of, or above, the second. A caption mentions either
object first, so "X left of Y" is also written "Y right of X", and "X above Y" also "Y below X"
(:mod:`mclip.data.demo_hard_language` writes the captions).

Zero-shot classes are (shape A, relation, shape B) with A != B and relation "left" (A left of B)
or "above" (A above B): 24 classes in which "a circle left of a square" and "a square left of a
circle" differ.
"""

from __future__ import annotations

from typing import NamedTuple

from mclip.data.demo_language import SHAPES

SIZES: tuple[str, ...] = ("small", "large")
RELATIONS: tuple[str, ...] = ("left", "above")  # the first object is left of / above the second
DIRECTIONS: tuple[str, ...] = ("left", "right", "above", "below")
INVERSE: dict[str, str] = {"left": "right", "right": "left", "above": "below", "below": "above"}
HARD_CLASSES: tuple[tuple[str, str, str], ...] = tuple(
    (a, relation, b) for relation in RELATIONS for a in SHAPES for b in SHAPES if a != b
)


class Thing(NamedTuple):
    """One object: ``size`` in SIZES, ``colour`` in COLOURS, ``shape`` in SHAPES.

    ``size`` and ``colour`` are None in a bare description ("a circle")."""

    size: str | None
    colour: str | None
    shape: str


class Scene(NamedTuple):
    """Two objects: ``first`` is ``relation`` ("left" / "above") of ``second``."""

    first: Thing
    relation: str
    second: Thing

    def mentions(self) -> list[tuple[Thing, str, Thing]]:
        """Both orders of mention: (first, relation, second) and (second, inverse, first)."""
        return [
            (self.first, self.relation, self.second),
            (self.second, INVERSE[self.relation], self.first),
        ]

    def bare(self) -> "Scene":
        """The same scene with sizes and colours left out."""
        return Scene(
            Thing(None, None, self.first.shape), self.relation, Thing(None, None, self.second.shape)
        )


def scene_label(scene: Scene) -> int:
    """The zero-shot class index of ``scene`` in HARD_CLASSES (shapes must differ)."""
    return HARD_CLASSES.index((scene.first.shape, scene.relation, scene.second.shape))
