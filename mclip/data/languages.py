"""Which caption language a training sample uses: a per-sample policy."""

from __future__ import annotations

import random


class LanguagePolicy:
    """Pick one caption language per sample among those the sample has.

    ``uniform``: every allowed language the sample has is equally likely. ``weighted``: the
    probability is proportional to ``weights[lang]`` (languages without a weight get 0).
    ``languages`` restricts the choice (empty: no restriction).
    """

    def __init__(self, policy: str = "uniform", languages: list[str] | None = None,
                 weights: dict[str, float] | None = None):
        self.policy = policy
        self.languages = set(languages or [])
        self.weights = dict(weights or {})

    def choose(self, available: list[str], rng: random.Random) -> str | None:
        """A language from ``available`` (sorted for determinism), or None if none is allowed."""
        candidates = sorted(lang for lang in available
                            if not self.languages or lang in self.languages)
        if self.policy == "weighted":
            candidates = [lang for lang in candidates if self.weights.get(lang, 0.0) > 0]
            if not candidates:
                return None
            return rng.choices(candidates, weights=[self.weights[lang] for lang in candidates])[0]
        return rng.choice(candidates) if candidates else None
