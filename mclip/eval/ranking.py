"""Deterministic ranking: ties go to the lower index, everywhere in mclip's evaluation.

Class-name lists contain duplicates (ImageNet's two "missile" classes, repeated Babel-ImageNet
labels), so exact score ties happen. ``torch.topk`` and ``argmax`` may break them differently,
which makes acc@1 and mean per-class recall disagree. mclip ranks by (score descending, index
ascending) and feeds metrics tie-free scores built from that order.
"""

from __future__ import annotations

import torch


def tie_free_scores(scores: torch.Tensor) -> torch.Tensor:
    """Replace each row of ``scores`` [N, C] by its rank order as distinct floats [N, C].

    The best entry gets C, the next C-1, ...; equal scores are ordered by ascending index. Any
    top-k or argmax on the result agrees with that rule.
    """
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    ranks = torch.arange(scores.shape[1], 0, -1, dtype=torch.float32, device=scores.device)
    return torch.empty_like(scores, dtype=torch.float32).scatter_(
        1, order, ranks.expand(scores.shape[0], -1).contiguous()
    )
