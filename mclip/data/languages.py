"""Which caption language a training sample uses: a per-sample policy."""

from __future__ import annotations

import random


class LanguagePolicy:
    """Pick one caption language per sample among those the sample has.

    ``uniform``: every allowed language the sample has is equally likely. ``weighted``: the
    probability is proportional to ``weights[lang]`` (languages without a weight get 0).
    ``languages`` restricts the choice (empty: no restriction).

    ``keep_factors`` (from :func:`mclip.data.index.temperature_factors`) resample the data's
    language mix: a language's choice weight is multiplied by its factor, and :meth:`keep` keeps
    a sample with the factor of its chosen language (languages without a factor: 1).
    """

    def __init__(self, policy: str = "uniform", languages: list[str] | None = None,
                 weights: dict[str, float] | None = None,
                 keep_factors: dict[str, float] | None = None):
        self.policy = policy
        self.languages = set(languages or [])
        self.weights = dict(weights or {})
        self.keep_factors = dict(keep_factors or {})

    def keep(self, language: str, rng: random.Random) -> bool:
        """Whether a sample whose caption language is ``language`` stays in the stream."""
        factor = self.keep_factors.get(language, 1.0)
        return factor >= 1.0 or rng.random() < factor

    def choose(self, available: list[str], rng: random.Random) -> str | None:
        """A language from ``available`` (sorted for determinism), or None if none is allowed."""
        candidates = sorted(lang for lang in available
                            if not self.languages or lang in self.languages)
        if self.policy == "weighted":
            candidates = [lang for lang in candidates if self.weights.get(lang, 0.0) > 0]
        if not candidates:
            return None
        if self.policy == "uniform" and not self.keep_factors:
            return rng.choice(candidates)
        weights = [(self.weights[lang] if self.policy == "weighted" else 1.0)
                   * self.keep_factors.get(lang, 1.0) for lang in candidates]
        return rng.choices(candidates, weights=weights)[0]

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
