"""``scorepack.load``: from a path to a ready :class:`~scorepack.scorer.Scorer`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .backend import BackendSpec
from .config import ScoringConfig
from .detect import detect_backend
from .device import Device
from .plugins import get_plugins
from .scorer import Scorer

__all__ = ["load", "resolve_backend"]


def resolve_backend(path: str | Path, backend: str | None = None) -> BackendSpec:
    """The backend named, or the one installed backend that recognises ``path``."""
    plugins = get_plugins()
    if backend:
        return plugins.backend(backend)
    return detect_backend(path, plugins.backends)


def load(
    path: str | Path,
    *,
    backend: str | None = None,
    device: Device | str = "auto",
    options: Mapping[str, Any] | None = None,
    config: ScoringConfig | None = None,
    wait: bool = True,
) -> Scorer:
    """Load a model for in-process scoring, with the server's preprocessing and batching.

    >>> scorer = scorepack.load("model/")            # doctest: +SKIP
    >>> scorer.score(open("cat.jpg", "rb").read())    # doctest: +SKIP
    {'predictions': [{'top_k': [{'index': 281, 'score': 0.53}, ...]}]}

    Close it with ``scorer.close()`` or use it as a context manager.
    """
    spec = resolve_backend(path, backend)
    instance = spec.create(path, device=device, options=options)
    name = Path(path).resolve().name
    return Scorer(instance, config, name=name).start(wait=wait)
