"""Model repositories on disk, and ``NAME=PATH`` entries, as :class:`ModelSource` objects.

A repository folder holds one folder per model, and either the model itself or one
folder per version (a whole number)::

    repo/
      resnet/                     a model without versions
        model.onnx                (the model: a file or folder a backend recognises,
        model-settings.yaml        or the folder itself, e.g. a SavedModel)
      classifier/
        model-settings.yaml       settings for every version
        1/  saved_model.pb ...
        2/  saved_model.pb ...
      packaged/                   a scoring package (``scorepack build``) is an entry too
        scorepack.yaml ...

``model-settings.yaml`` (optional) uses the package manifest's keys where they fit::

    backend: onnx                 # the manifest's backend.name (default: detected)
    device: cpu                   # the manifest's device (default: serve's --device when
                                  #   given, else a package's own device, else auto)
    options: {threads: 2}         # the manifest's backend.options (-O)
    labels: labels.txt            # class labels, one a line, relative to this folder
    scoring:                      # the manifest's scoring section; keys given here
      batching:                   #   replace the server's (command line) defaults
        max_batch_size: 8
        preferred_batch_size: auto  # or off, or N (batch_sizing.py)
        max_delay_ms: 2
      postprocess: {top_k: 3}
      preprocess: {preset: imagenet}

Backends are resolved when a model loads, so a model that cannot be served (a device the
machine lacks among the reasons) leaves the others serving and is reported not ready,
with the reason. A settings file that cannot be read, or whose ``device`` is not a device
name, stops the server at start, naming the file.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from .config import ScoringConfig
from .decoding import DecodeSettings
from .device import Device
from .errors import PackageError, ScorepackError
from .loading import open_package, resolve_backend
from .manifest import LABELS_FILE, is_package
from .postprocess import read_labels
from .repository import ModelSource
from .scorer import Scorer

__all__ = [
    "SETTINGS_FILE",
    "ModelSettings",
    "model_source",
    "read_settings",
    "rescanner",
    "scan_model",
    "scan_repository",
]

SETTINGS_FILE = "model-settings.yaml"
_KEYS = {"backend", "device", "options", "labels", "scoring"}
_IGNORED = {SETTINGS_FILE, LABELS_FILE}


@dataclass(frozen=True)
class ModelSettings:
    """One model's settings: backend, device, backend options and scoring overrides."""

    backend: str | None = None
    device: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    labels: tuple[str, ...] | None = None
    #: a partial scoring section (the manifest's keys), merged over the server's defaults
    scoring: Mapping[str, Any] = field(default_factory=dict)

    def config(self, defaults: ScoringConfig) -> ScoringConfig:
        """The server's defaults with this model's scoring settings and labels over them."""
        merged = _merge(defaults.to_dict(), dict(self.scoring))
        labels = self.labels if self.labels is not None else defaults.postprocess.labels
        try:
            return ScoringConfig.from_dict(merged, labels=labels)
        except (TypeError, ValueError) as exc:
            raise PackageError(f"Bad scoring settings: {exc}") from exc


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def read_settings(path: Path) -> ModelSettings:
    """Read a ``model-settings.yaml``; unknown keys and bad values are a PackageError."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise PackageError(f"Cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise PackageError(f"{path} must hold a mapping of settings.")
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise PackageError(
            f"{path}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(_KEYS))}."
        )
    for key in ("options", "scoring"):
        if not isinstance(data.get(key, {}), dict):
            raise PackageError(f"{path}: {key} must be a mapping.")
    device = data.get("device")
    if device is not None:
        try:
            Device.parse(str(device))
        except ValueError as exc:
            raise PackageError(f"{path}: the device of model {path.parent.name!r}: {exc}.") from exc
    labels = data.get("labels")
    return ModelSettings(
        backend=data.get("backend"),
        device=str(device) if device is not None else None,
        options=dict(data.get("options") or {}),
        labels=read_labels(path.parent / str(labels)) if labels else None,
        scoring=dict(data.get("scoring") or {}),
    )


def model_source(
    name: str,
    path: str | Path,
    version: str | None = None,
    *,
    settings: ModelSettings | None = None,
    defaults: ScoringConfig | None = None,
    decode: DecodeSettings | None = None,
) -> ModelSource:
    """A source that makes a scorer for the model or package at ``path``."""
    path = Path(path)
    settings = settings or ModelSettings()
    base = defaults or ScoringConfig()

    def create() -> Scorer:
        if is_package(path):
            return open_package(
                path,
                backend=settings.backend,
                device=settings.device,
                options=settings.options,
                # the package's own scoring settings, with this entry's changes over them
                config=(
                    settings.config(_package_defaults(path))
                    if settings.scoring or settings.labels is not None
                    else None
                ),
                name=name,
                version=version,
                decode=decode,
            )
        entry = _model_path(path, settings.backend)
        spec = resolve_backend(entry, settings.backend)
        backend = spec.create(entry, device=settings.device or "auto", options=settings.options)
        return Scorer(backend, settings.config(base), name=name, version=version, decode=decode)

    return ModelSource(name, version, create, origin=str(path))


def _package_defaults(path: Path) -> ScoringConfig:
    from .manifest import load_manifest

    return load_manifest(path).config


def _model_path(folder: Path, backend: str | None) -> Path:
    """The folder itself when a backend recognises it, else its one model entry."""
    if not folder.is_dir():
        return folder
    try:
        resolve_backend(folder, backend)
        return folder
    except ScorepackError:
        pass
    entries = [p for p in folder.iterdir() if not p.name.startswith(".") and p.name not in _IGNORED]
    if len(entries) == 1:
        return entries[0]
    # let detection say what it could not recognise
    return folder


def scan_repository(
    root: str | Path,
    *,
    defaults: ScoringConfig | None = None,
    device: str | None = None,
    decode: DecodeSettings | None = None,
    empty_ok: bool = False,
) -> list[ModelSource]:
    """Every model (and version) in a repository folder, by name then version.

    ``device`` (serve's ``--device`` when given) is the device of every model whose
    settings name none; ``decode``: how their scorers decode (default:
    :meth:`DecodeSettings.from_env`). A folder with no model is a PackageError unless
    ``empty_ok`` (explicit model control, which loads models added later).
    """
    root = Path(root)
    if not root.is_dir():
        raise PackageError(f"The model repository {root} is not a folder.")
    sources = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        sources += scan_model(folder, defaults=defaults, device=device, decode=decode)
    if not sources and not empty_ok:
        raise PackageError(
            f"The model repository {root} holds no model folders (repo/NAME/[VERSION/]files); "
            "to start without models and load them later, serve it with "
            "--model-control explicit."
        )
    return sources


def scan_model(
    folder: Path,
    *,
    defaults: ScoringConfig | None = None,
    device: str | None = None,
    decode: DecodeSettings | None = None,
) -> list[ModelSource]:
    """One model folder of a repository: a source per version folder, else one for the
    model (or package) the folder holds; its ``model-settings.yaml`` read now."""
    settings_file = folder / SETTINGS_FILE
    settings = read_settings(settings_file) if settings_file.is_file() else ModelSettings()
    if settings.device is None and device is not None:
        settings = replace(settings, device=device)
    versions = sorted(
        (p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()),
        key=lambda p: int(p.name),
    )
    if versions and not is_package(folder):
        return [
            model_source(
                folder.name,
                version,
                version.name,
                settings=settings,
                defaults=defaults,
                decode=decode,
            )
            for version in versions
        ]
    return [model_source(folder.name, folder, settings=settings, defaults=defaults, decode=decode)]


def rescanner(
    root: str | Path,
    *,
    defaults: ScoringConfig | None = None,
    device: str | None = None,
    decode: DecodeSettings | None = None,
    exclude: Collection[str] = (),
) -> Callable[[str], list[ModelSource] | None]:
    """What :class:`~scorepack.repository.Repository` calls on each explicit load to read a
    model's folder again: its sources now, or None when ``root/NAME`` is no model folder
    (or NAME is in ``exclude``: models given as NAME=PATH, never read from ``root``)."""
    root = Path(root)

    def rescan(name: str) -> list[ModelSource] | None:
        folder = root / name
        if name in exclude or name.startswith(".") or "/" in name or name in ("", ".."):
            return None
        if not folder.is_dir():
            return None
        return scan_model(folder, defaults=defaults, device=device, decode=decode)

    return rescan
