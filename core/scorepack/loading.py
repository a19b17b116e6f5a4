"""``scorepack.load``: from a model or a scoring package to a ready
:class:`~scorepack.scorer.Scorer`."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .backend import BackendSpec
from .config import ScoringConfig
from .decoding import DecodeSettings
from .detect import detect_backend
from .device import Device
from .errors import PackageError
from .generator.spec import PackageSpec
from .manifest import MODEL_DIR, is_package, load_manifest, verify_model
from .plugins import get_plugins
from .scorer import Scorer

__all__ = ["load", "open_package", "resolve_backend"]

logger = logging.getLogger("scorepack.loading")


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
    device: Device | str | None = None,
    options: Mapping[str, Any] | None = None,
    config: ScoringConfig | None = None,
    wait: bool = True,
) -> Scorer:
    """Load a model, or a scoring package, for in-process scoring with the server's
    preprocessing and batching.

    >>> scorer = scorepack.load("model/")            # doctest: +SKIP
    >>> scorer.score(open("cat.jpg", "rb").read())    # doctest: +SKIP
    {'predictions': [{'top_k': [{'index': 281, 'score': 0.53}, ...]}]}

    A package directory (one with ``scorepack.yaml``) brings its own backend, device,
    options and scoring settings; arguments given here override them. Its model files are
    checked against the manifest first. Close the scorer with ``scorer.close()`` or use it
    as a context manager.
    """
    if is_package(path):
        scorer = open_package(path, backend=backend, device=device, options=options, config=config)
    else:
        spec = resolve_backend(path, backend)
        instance = spec.create(path, device=device or "auto", options=options)
        scorer = Scorer(instance, config, name=Path(path).resolve().name)
    return scorer.start(wait=wait)


def open_package(
    package: str | Path,
    *,
    model_dir: str | Path | None = None,
    backend: str | None = None,
    device: Device | str | None = None,
    options: Mapping[str, Any] | None = None,
    config: ScoringConfig | None = None,
    name: str | None = None,
    version: str | None = None,
    decode: DecodeSettings | None = None,
) -> Scorer:
    """A scorer (not started) for a scoring package, its model files verified.

    ``model_dir`` is where the model files are (default: the package's ``model/``; KServe,
    Kubernetes and Azure ML mount them elsewhere): the files themselves, or a ``model/``
    folder holding them. ``name`` and ``version`` name it in a repository (default:
    the package's name, no version). Raises :class:`~scorepack.errors.IntegrityError` when a file
    does not match the manifest and :class:`~scorepack.errors.PackageError` when the
    package's backend is not installed.
    """
    spec = load_manifest(package)
    if spec.models:
        names = ", ".join(m.name for m in spec.models)
        raise PackageError(
            f"The package {spec.name!r} holds several models ({names}): serve them all with "
            f"`scorepack serve {package}`, or open one with "
            f"open_package('{package}/models/NAME', model_dir='{package}/model/NAME')."
        )
    if backend and backend != spec.backend:
        raise PackageError(
            f"The package {spec.name!r} is built for the {spec.backend} backend, not {backend}."
        )
    root = Path(package) / MODEL_DIR if model_dir is None else _model_root(spec, Path(model_dir))
    verify_model(spec, root)
    backend_spec = _package_backend(spec.backend, spec.backend_distribution, spec.wheels)
    _check_versions(spec.framework, spec.framework_version, backend_spec)
    entry = root if spec.model_entry == "." else root / spec.model_entry
    instance = backend_spec.create(
        entry,
        device=device or spec.device,
        options={**spec.backend_options, **(options or {})},
    )
    return Scorer(
        instance, config or spec.config, name=name or spec.name, version=version, decode=decode
    )


def _model_root(spec: PackageSpec, given: Path) -> Path:
    """``given``, or its ``model/`` folder when the files are there: a mounted copy of the
    package's ``model/`` folder may hold the files or the folder itself (Azure ML mounts the
    registered folder inside its mount path)."""
    nested = given / MODEL_DIR
    if not (given / spec.model_files[0]).is_file() and (nested / spec.model_files[0]).is_file():
        return nested
    return given


def _package_backend(name: str, distribution: str, wheels: tuple[str, ...]) -> BackendSpec:
    backends = get_plugins().backends
    if name in backends:
        return backends[name]
    wheel = next(
        (w for w in wheels if w.split("/")[-1].startswith(distribution.replace("-", "_"))), None
    )
    hint = (
        f"pip install {wheel} (from the package directory)"
        if wheel
        else f"pip install {distribution}"
    )
    raise PackageError(
        f"This package needs the {name} backend ({distribution or 'its plugin'}), which is not "
        f"installed: {hint}. Installed backends: {', '.join(sorted(backends)) or 'none'}."
    )


def _check_versions(framework: str, version: str, backend: BackendSpec) -> None:
    installed = backend.framework_version()
    if version and installed and installed != version:
        # the model may well load; a different framework can still change its scores
        logger.warning(
            "this package was built with %s %s; %s is installed here", framework, version, installed
        )
