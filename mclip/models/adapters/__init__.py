"""Any dual encoder behind one interface: mclip checkpoints, open_clip and transformers models.

    from mclip.models.adapters import load_model
    model = load_model("open_clip:ViT-B-32", pretrained="laion2b_s34b_b79k", device="cuda")

The adapter classes live in one module per library (``native``, ``open_clip``, ``hf``); those
modules import their library, so they are loaded only when a spec needs them.
"""

from mclip.models.adapters.base import ModelAdapter
from mclip.models.adapters.registry import ACCEPTED_FORMS, load_model

__all__ = ["ACCEPTED_FORMS", "ModelAdapter", "load_model"]
