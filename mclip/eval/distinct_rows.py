"""Exact duplicate rows of an embedding matrix, found by hashing the bits of each row.

Retrieval must give equal embeddings bit-identical scores (:mod:`mclip.eval.retrieval`), so it
scores each pair of *distinct* rows once; this module finds which rows are equal. The hash is
exact integer arithmetic on the float bits, and only rows whose hashes collide are compared.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

_HASH_COLUMNS = 64  # the leading coordinates that are hashed; equal rows still get compared fully
_HASH_ROWS = 65536  # rows hashed at a time


class DistinctRows(NamedTuple):
    """Rows of an embedding matrix [n, d] grouped by exact equality.

    rep [K]: the original index of each distinct row, ascending (its first occurrence);
    slot [n]: the distinct row of each original row. Without duplicates K = n and both are the
    identity.
    """

    rep: torch.Tensor
    slot: torch.Tensor

    @property
    def all_distinct(self) -> bool:
        return self.rep.shape[0] == self.slot.shape[0]


def _row_keys(emb: torch.Tensor) -> torch.Tensor:
    """An int64 hash [n] of the bits of each row's first coordinates; equal rows get equal keys.

    -0.0 is folded into +0.0 first (they are equal). Integer arithmetic without overflow
    (|bits| < 2^31, coefficients < 2^22, at most 64 terms), so no rounding can split equal rows.
    """
    n_cols = min(_HASH_COLUMNS, emb.shape[1])
    g = torch.Generator().manual_seed(20240613)
    coefficients = torch.randint(1, 2**22, (n_cols,), generator=g, dtype=torch.long)
    coefficients = coefficients.to(emb.device)
    keys = torch.empty(emb.shape[0], dtype=torch.long, device=emb.device)
    for start in range(0, emb.shape[0], _HASH_ROWS):
        bits = (emb[start : start + _HASH_ROWS, :n_cols] + 0.0).view(torch.int32)
        keys[start : start + _HASH_ROWS] = (bits.long() * coefficients).sum(1)
    return keys


def _rows_equal(emb: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    """Whether rows i [p] and j [p] of ``emb`` are equal, element by element -> bool [p]."""
    out = torch.empty(i.shape[0], dtype=torch.bool, device=emb.device)
    for start in range(0, i.shape[0], _HASH_ROWS):
        out[start : start + _HASH_ROWS] = (
            emb[i[start : start + _HASH_ROWS]] == emb[j[start : start + _HASH_ROWS]]
        ).all(1)
    return out


def distinct_rows(emb: torch.Tensor) -> DistinctRows:
    """Group the rows of ``emb`` [n, d] by exact equality (see :class:`DistinctRows`)."""
    n, device = emb.shape[0], emb.device
    keys, order = torch.sort(_row_keys(emb), stable=True)  # equal keys: ascending index
    new_run = torch.ones(n, dtype=torch.bool, device=device)
    new_run[1:] = keys[1:] != keys[:-1]
    identity = torch.arange(n, device=device)
    if bool(new_run.all()):
        return DistinctRows(identity, identity)
    run = torch.cumsum(new_run, 0) - 1
    run_first = order[new_run][run]  # per sorted position: the lowest index with the same key
    later = ~new_run
    candidates, firsts = order[later], run_first[later]
    same = _rows_equal(emb, candidates, firsts)
    leader = identity.clone()
    leader[candidates[same]] = firsts[same]
    for r in torch.unique(run[later][~same]).tolist():  # hash collisions: rare, exact fallback
        members = order[run == r]
        _, group = torch.unique(emb[members], dim=0, return_inverse=True)
        lowest = torch.full((int(group.max()) + 1,), n, dtype=torch.long, device=device)
        lowest.scatter_reduce_(0, group, members, reduce="amin")
        leader[members] = lowest[group]
    is_rep = leader == identity
    slot_of_rep = torch.cumsum(is_rep, 0) - 1
    return DistinctRows(identity[is_rep], slot_of_rep[leader])
