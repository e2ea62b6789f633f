"""Which caption language a training sample uses: a per-sample policy."""

from __future__ import annotations

import random
from functools import lru_cache


class LanguagePolicy:
    """Pick one caption language per sample among those the sample has.

    ``uniform``: every allowed language the sample has is equally likely. ``weighted``: the
    probability is proportional to ``weights[lang]`` (languages without a weight get 0).
    ``languages`` restricts the choice (empty: no restriction).

    ``keep_factors`` (from :func:`mclip.data.index.temperature_factors`) resample the data's
    language mix: a language's choice weight is multiplied by its factor, and :meth:`keep` keeps
    a sample with the factor of its chosen language (languages without a factor: 1).
    """

    def __init__(
        self,
        policy: str = "uniform",
        languages: list[str] | None = None,
        weights: dict[str, float] | None = None,
        keep_factors: dict[str, float] | None = None,
    ):
        self.policy = policy
        self.languages = set(languages or [])
        self.weights = dict(weights or {})
        self.keep_factors = dict(keep_factors or {})

    def keep(self, language: str, rng: random.Random) -> bool:
        """Whether a sample whose caption language is ``language`` stays in the stream."""
        factor = self.keep_factors.get(language, 1.0)
        return factor >= 1.0 or rng.random() < factor

    def candidates(self, available) -> list[str]:
        """The languages of ``available`` this policy may draw, sorted (for determinism)."""
        out = sorted(lang for lang in available if not self.languages or lang in self.languages)
        if self.policy == "weighted":
            out = [lang for lang in out if self.weights.get(lang, 0.0) > 0]
        return out

    def choose(self, available: list[str], rng: random.Random) -> str | None:
        """A language from ``available``, or None if none is allowed."""
        candidates = self.candidates(available)
        if not candidates:
            return None
        if self.policy == "uniform" and not self.keep_factors:
            return rng.choice(candidates)
        return rng.choices(candidates, weights=[self._draw_weight(c) for c in candidates])[0]

    def choose_several(self, available: list[str], k: int, rng: random.Random) -> list[str]:
        """Up to ``k`` distinct languages from ``available``, drawn one after another as
        :meth:`choose` draws one (without replacement); [] if none is allowed."""
        chosen: list[str] = []
        remaining = list(available)
        while len(chosen) < k:
            language = self.choose(remaining, rng)
            if language is None:
                break
            chosen.append(language)
            remaining.remove(language)
        return chosen

    def expected_mix(
        self, language_sets: dict[str, int], captions_per_image: int = 1
    ) -> dict[str, float]:
        """The share of each caption language among the captions training draws, in expectation
        (rounded to 4 places, most frequent first), from ``language_sets`` ({comma-joined sorted
        codes of a sample's caption languages: number of samples}, as ``mclip data index``
        counts them) and this policy: the restriction, the weights, the keep factors (a sample is
        kept with the factor of its first drawn language) and ``captions_per_image`` draws
        without replacement. A sample with fewer allowed languages than draws fills the rest
        from the languages it has (counted as equal shares of them: an approximation, since the
        stream then picks among its unused captions). Languages that are never drawn are absent.
        """
        totals: dict[str, float] = {}
        for key, count in language_sets.items():
            candidates = self.candidates(lang for lang in key.split(",") if lang)
            if not candidates:
                continue
            weights = tuple(self._draw_weight(lang) for lang in candidates)
            per_sample = _sample_mix(
                tuple(candidates),
                weights,
                tuple(self.keep_factors.get(lang, 1.0) for lang in candidates),
                captions_per_image,
            )
            for lang, value in per_sample.items():
                totals[lang] = totals.get(lang, 0.0) + count * value
        total = sum(totals.values()) or 1.0
        return {
            lang: round(value / total, 4)
            for lang, value in sorted(totals.items(), key=lambda kv: -kv[1])
        }

    def _draw_weight(self, language: str) -> float:
        """A candidate's weight in :meth:`choose` (policy weight times keep factor)."""
        return (
            self.weights[language] if self.policy == "weighted" else 1.0
        ) * self.keep_factors.get(language, 1.0)


@lru_cache(maxsize=4096)
def _sample_mix(
    candidates: tuple[str, ...], weights: tuple[float, ...], keep: tuple[float, ...], k: int
) -> dict[str, float]:
    """Expected captions per language of one sample whose allowed languages are ``candidates``:
    the first language drawn by ``weights`` decides (with its ``keep`` factor) whether the sample
    stays; k - 1 more are drawn without replacement; missing draws fill evenly."""
    out: dict[str, float] = {}
    total = sum(weights)
    fill = max(k - len(candidates), 0) / len(candidates)
    for i, first in enumerate(candidates):
        kept = weights[i] / total * min(keep[i], 1.0)
        rest = _draws(
            tuple(c for c in candidates if c != first),
            tuple(w for j, w in enumerate(weights) if j != i),
            k - 1,
        )
        out[first] = out.get(first, 0.0) + kept
        for lang, value in rest.items():
            out[lang] = out.get(lang, 0.0) + kept * value
        if fill:
            for lang in candidates:
                out[lang] = out.get(lang, 0.0) + kept * fill
    return out


@lru_cache(maxsize=65536)
def _draws(candidates: tuple[str, ...], weights: tuple[float, ...], k: int) -> dict[str, float]:
    """Expected count of each language in ``k`` weighted draws without replacement."""
    if k <= 0 or not candidates:
        return {}
    out: dict[str, float] = {}
    total = sum(weights)
    for i, lang in enumerate(candidates):
        p = weights[i] / total
        out[lang] = out.get(lang, 0.0) + p
        rest = _draws(candidates[:i] + candidates[i + 1 :], weights[:i] + weights[i + 1 :], k - 1)
        for other, value in rest.items():
            out[other] = out.get(other, 0.0) + p * value
    return out
