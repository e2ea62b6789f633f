"""Exports of mclip models to the formats other tools read, one module per format.

- :mod:`mclip.export.open_clip`: an open_clip model directory (``local-dir:`` / ``hf-hub:``);
- :mod:`mclip.export.onnx`: ONNX image and text encoders for onnxruntime, optionally int8;
- :mod:`mclip.export.model_card`: the Hugging Face model card every export carries.

Each export is checked by loading it with that format's own library and comparing its
embeddings with mclip's before the command reports success (:class:`ExportError` otherwise).
"""

import contextlib
import io
import logging
import warnings

from mclip.errors import ConfigError


class ExportError(ConfigError):
    """A model that cannot be exported as asked (a setting the target format has no equivalent
    for, or an export whose embeddings differ from the original's); the message names it."""


@contextlib.contextmanager
def quiet_libraries():
    """Inside: what the exporting libraries print (torch.onnx's progress lines on stdout,
    open_clip's root-logger warnings about the empty model it builds to fill, their
    UserWarnings) is swallowed; the library itself never prints."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)
