"""An ONNX model file checked whole, with ONNX's own reader, before a session is made.

ONNX Runtime refuses most broken files, but with messages that do not say what is wrong
with the file (``INVALID_PROTOBUF``), and a file cut exactly between two of the model's
top-level fields parses. ``onnx.load`` reads the whole model, external data included
(a weights file shorter than the model says fails there), and ``onnx.checker`` checks
its structure. Both are used when the ``onnx`` package is installed; without it, ONNX
Runtime's own checks are all there is.
"""

from __future__ import annotations

import logging
from pathlib import Path

from scorepack.errors import ModelLoadError

__all__ = ["check_model_file"]

logger = logging.getLogger("scorepack.onnx")


def check_model_file(path: Path) -> None:
    """Raise :class:`~scorepack.errors.ModelLoadError` for a file ONNX cannot read whole."""
    try:
        import onnx
    except ImportError:
        logger.debug("the onnx package is not installed: %s is checked by ONNX Runtime only", path)
        return
    try:
        onnx.checker.check_model(str(path))
        onnx.load(str(path), load_external_data=True)
    except Exception as exc:  # onnx raises ValidationError, DecodeError, ValueError, OSError…
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(
            f"{path} is not a complete, valid ONNX model (onnx says: {first}). A truncated "
            "or damaged file fails here: copy it again, or export the model again."
        ) from exc
