"""A model's fingerprint: a hash of what determines its embeddings.

The evaluation cache (:mod:`mclip.eval.cache`), the score files of ``mclip data score`` and the
teacher-embedding cache (:mod:`mclip.data.teacher_cache`) key their contents by it, so a changed
model never reads another model's embeddings.
"""

from __future__ import annotations

import hashlib
import json

import torch


def model_fingerprint(model, precision: str = "fp32") -> str:
    """sha256 (hex, 32 chars) of the adapter class, spec, versions, config and every tensor,
    and of the precision the towers run in when it is not fp32."""
    digest = hashlib.sha256()
    if precision != "fp32":
        digest.update(f"precision={precision}\n".encode())
    digest.update(type(model).__name__.encode())
    digest.update(str(getattr(model, "name", "")).encode())
    digest.update(json.dumps(getattr(model, "versions", {}), sort_keys=True).encode())
    config = getattr(model, "config", None)
    if config is not None:
        digest.update(repr(config).encode())
    if hasattr(model, "state_dict"):
        for name, tensor in model.state_dict().items():
            digest.update(name.encode())
            digest.update(str(tensor.dtype).encode())
            flat = tensor.detach().cpu().contiguous().reshape(-1)
            digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:32]
