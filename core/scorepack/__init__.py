"""scorepack: turn a trained model into a fast GPU scoring service.

``import scorepack`` imports no ML framework; backends import theirs when a model loads.
"""

from .backend import Backend, BackendOption, BackendSpec, Requirements, import_framework, map_errors
from .batching import BatchingConfig
from .config import ScoringConfig
from .device import Device
from .hookspecs import hookimpl
from .loading import load, resolve_backend
from .postprocess import PostprocessConfig
from .preprocess import PreprocessConfig
from .scorer import Scorer, ScoreResult
from .signature import Signature, TensorSpec
from .version import __version__

__all__ = [
    "Backend",
    "BackendOption",
    "BackendSpec",
    "BatchingConfig",
    "Device",
    "PostprocessConfig",
    "PreprocessConfig",
    "Requirements",
    "ScoreResult",
    "Scorer",
    "ScoringConfig",
    "Signature",
    "TensorSpec",
    "__version__",
    "hookimpl",
    "import_framework",
    "load",
    "map_errors",
    "resolve_backend",
]
