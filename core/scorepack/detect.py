"""Which backend serves a path: asked of the installed plugins, never of the frameworks.

Each installed backend's ``detect`` looks at the path. When none claims it, the known
formats below tell a "backend not installed" (with the pip command) apart from a path
that nobody could serve. Built-in backends reuse these sniffers, so the two agree.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .backend import BackendSpec
from .errors import (
    AmbiguousFormatError,
    BackendNotInstalledError,
    ModelError,
    UnknownFormatError,
)

__all__ = ["KNOWN_FORMATS", "KnownFormat", "detect_backend", "is_saved_model"]

logger = logging.getLogger("scorepack.detect")


def is_saved_model(path: Path) -> bool:
    """A TensorFlow SavedModel directory (``saved_model.pb`` or ``.pbtxt`` inside)."""
    return path.is_dir() and (
        (path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file()
    )


@dataclass(frozen=True)
class KnownFormat:
    """A model format scorepack knows the backend package for."""

    name: str
    backend: str
    package: str
    sniff: Callable[[Path], bool]


KNOWN_FORMATS: tuple[KnownFormat, ...] = (
    KnownFormat("TensorFlow SavedModel", "tensorflow", "scorepack-tensorflow", is_saved_model),
)


def detect_backend(path: str | Path, backends: Mapping[str, BackendSpec]) -> BackendSpec:
    """The one installed backend that recognises ``path``.

    Raises :class:`~scorepack.errors.AmbiguousFormatError` when several claim it,
    :class:`~scorepack.errors.BackendNotInstalledError` when it is a known format whose
    backend is missing, and :class:`~scorepack.errors.UnknownFormatError` (listing the
    formats each installed backend accepts) otherwise.
    """
    p = Path(path)
    if not p.exists():
        raise ModelError(f"{str(path)!r} does not exist.")
    matches = [spec for spec in backends.values() if _claims(spec, p)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise AmbiguousFormatError(str(path), [m.name for m in matches])
    for fmt in KNOWN_FORMATS:
        if fmt.backend not in backends and _safe(fmt.sniff, p, fmt.name):
            raise BackendNotInstalledError(str(path), fmt.name, fmt.package)
    raise UnknownFormatError(str(path), {name: spec.formats for name, spec in backends.items()})


def _claims(spec: BackendSpec, path: Path) -> bool:
    return _safe(spec.detect, path, f"backend {spec.name!r}")


def _safe(check: Callable[[Path], bool], path: Path, who: str) -> bool:
    # a detector that crashes on an odd file must not hide the other backends
    try:
        return bool(check(path))
    except Exception as exc:
        logger.warning("format detection by %s failed on %s: %s", who, path, exc)
        return False
