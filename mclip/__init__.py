"""mclip: train multilingual CLIP-style dual encoders and evaluate any dual encoder.

``mclip.load_model(spec, pretrained=None, device="cpu")`` loads any dual encoder (an mclip run
or checkpoint directory, ``open_clip:ARCH``, ``hf:NAME_OR_DIR``) behind one interface; it is
imported on first use so that ``import mclip`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mclip.models.adapters.registry import load_model

__all__ = ["load_model"]


def __getattr__(name: str) -> Any:
    if name == "load_model":
        from mclip.models.adapters.registry import load_model

        return load_model
    raise AttributeError(f"module 'mclip' has no attribute {name!r}")
