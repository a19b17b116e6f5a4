"""Packages of several models: one Azure ML deployment serving them all.

``scorepack build A=MODEL B=MODEL -o PKG`` (or ``--repository DIR``, laid out as for
``scorepack serve --repository``) resolves each model as ``scorepack build`` resolves one,
then joins them into one :class:`PackageSpec` whose :attr:`~PackageSpec.models` hold the
models' own specs. The package shares one environment (the union of the backends' pins),
one set of wheels and one deployment; each model keeps its backend, options, signature,
scoring settings and labels. Its files are laid out so both Azure ML SDKs can register
them as they expect::

    model/A/...            SDK v2 registers model/ once (one model folder holding all);
    model/B/...            SDK v1 registers model/A and model/B, one model each
    models/A/scorepack.yaml, labels.txt     A's own manifest (format 1)
    models/B/scorepack.yaml
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..backend import Requirements
from ..config import ScoringConfig
from ..errors import PackageError
from ..version import __version__
from .resolve import _NAME, _REQ_NAME, normalize, pins_for, resolve_spec
from .spec import DeploymentSettings, PackageSpec

__all__ = ["ModelEntry", "repository_entries", "resolve_models"]

#: the name of a package of several models when --name is not given
DEFAULT_NAME = "models"


@dataclass(frozen=True)
class ModelEntry:
    """One model of a package of several: its name, where it is, and its own settings
    (``model-settings.yaml`` keys: backend, options, labels, scoring)."""

    name: str
    path: Path
    backend: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    labels: tuple[str, ...] | None = None
    #: a partial scoring section, merged over the command line's settings
    scoring: Mapping[str, Any] = field(default_factory=dict)
    device: str | None = None


def repository_entries(root: str | Path) -> list[ModelEntry]:
    """The models of a repository folder (``repo/NAME/`` with an optional
    ``model-settings.yaml``), as ``scorepack serve --repository`` reads it. Version
    folders and scoring packages cannot be packaged: the error says what to do instead."""
    from ..manifest import is_package
    from ..model_repository import SETTINGS_FILE, ModelSettings, read_settings

    root = Path(root)
    if not root.is_dir():
        raise PackageError(f"The model repository {root} is not a folder.")
    entries = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        settings_file = folder / SETTINGS_FILE
        settings = read_settings(settings_file) if settings_file.is_file() else ModelSettings()
        if is_package(folder):
            raise PackageError(
                f"{folder} is a scoring package; a package of several models is built from "
                "the models themselves."
            )
        if any(p.is_dir() and p.name.isdigit() for p in folder.iterdir()):
            raise PackageError(
                f"{folder} holds version folders; a package serves one version of each "
                "model (Azure ML versions the registered models): give that version's folder "
                f"as {folder.name}=PATH."
            )
        entries.append(
            ModelEntry(
                folder.name,
                _model_path(folder),
                backend=settings.backend,
                options=dict(settings.options),
                labels=settings.labels,
                scoring=dict(settings.scoring),
                device=settings.device,
            )
        )
    if not entries:
        raise PackageError(f"The model repository {root} holds no model folders (repo/NAME/).")
    return entries


def _model_path(folder: Path) -> Path:
    """The folder, or its one model entry besides the settings and labels files."""
    from ..model_repository import _model_path as serve_path

    return serve_path(folder, None)


def resolve_models(
    entries: Sequence[ModelEntry],
    *,
    name: str | None = None,
    device: str = "cuda",
    cuda: int | None = None,
    backend: str | None = None,
    options: Mapping[str, Any] | None = None,
    config: ScoringConfig | None = None,
    deployment: DeploymentSettings | None = None,
    tracing: bool = False,
) -> PackageSpec:
    """One package of every model in ``entries`` (each loaded once, on the CPU).

    ``backend``, ``options`` and ``config`` are the defaults of every model; an entry's
    own settings win. All models run on one ``device``. ``tracing``: the one environment
    pins the OTLP exporter (each model's framework is checked against it).
    """
    from ..manifest import is_package

    if len(entries) < 2:
        raise PackageError("A package of several models needs at least two models.")
    seen: set[str] = set()
    for entry in entries:
        if not _NAME.match(entry.name):
            raise PackageError(
                f"{entry.name!r} cannot name a model (it names the Azure ML model): use "
                "letters, digits, '.', '_' and '-', starting with a letter or digit."
            )
        if entry.name in seen:
            raise PackageError(f"Two models are named {entry.name!r}.")
        if is_package(entry.path):
            raise PackageError(
                f"{entry.path} ({entry.name}) is a scoring package; a package of several "
                "models is built from the models themselves."
            )
        seen.add(entry.name)
        if entry.device and entry.device != device:
            raise PackageError(
                f"Model {entry.name!r} asks for device {entry.device}; every model of a "
                f"package runs on its device ({device})."
            )
    package_name = name or DEFAULT_NAME
    if not _NAME.match(package_name):
        raise PackageError(f"{package_name!r} cannot name a package: choose another --name.")
    if package_name in seen:
        # v2 registers model/ under the package's name; v1 registers each model by its own
        raise PackageError(f"The package and one of its models are both named {package_name!r}.")
    base = config or ScoringConfig()
    models = []
    for entry in entries:
        models.append(
            resolve_spec(
                entry.path,
                backend=entry.backend or backend,
                device=device,
                cuda=cuda,
                name=entry.name,
                options=entry.options or options,
                config=_config(entry, base),
                deployment=deployment,
                tracing=tracing,
            )
        )
    return join(models, package_name)


def _config(entry: ModelEntry, base: ScoringConfig) -> ScoringConfig:
    from ..model_repository import ModelSettings

    settings = ModelSettings(labels=entry.labels, scoring=dict(entry.scoring))
    return settings.config(base)


def join(models: Sequence[PackageSpec], name: str) -> PackageSpec:
    """The package of several models: what the models share, and the models."""
    first = models[0]
    dists: list[str] = ["scorepack"]
    for model in models:
        if model.backend_distribution and model.backend_distribution not in dists:
            dists.append(model.backend_distribution)
    requirements = _requirements(models)
    pinned = {normalize(m.group(1)) for r in requirements.pip if (m := _REQ_NAME.match(r))}
    skip = pinned | {normalize(d) for d in dists}
    frameworks = _unique(f"{m.framework} {m.framework_version}".strip() for m in models)
    backends = _unique(m.backend for m in models)
    load = [m.load_seconds for m in models if m.load_seconds is not None]
    # the models load one after the other at start: the probes wait for all of them
    deployment = replace(
        first.deployment,
        scoring_timeout_ms=max(m.deployment.scoring_timeout_ms for m in models),
    )
    return replace(
        first,
        name=name,
        backend=", ".join(backends),
        backend_distribution="",
        model_files=tuple(f"{m.name}/{f}" for m in models for f in m.model_files),
        model_entry=".",
        signature=_no_signature(),
        config=ScoringConfig(),
        requirements=requirements,
        framework=", ".join(frameworks),
        framework_version="",
        backend_options={},
        scorepack_version=__version__,
        backend_version="",
        deployment=deployment,
        backend_module="",
        runtime_requirements=_runtime(pins_for(tuple(dists), skip), models),
        load_seconds=round(sum(load), 2) if load else None,
        models=tuple(models),
        tracing=any(m.tracing for m in models),
    )


def _runtime(pins: tuple[str, ...], models: Sequence[PackageSpec]) -> tuple[str, ...]:
    # with tracing (each model's framework already checked), the exporter's set
    if not any(m.tracing for m in models):
        return pins
    from .tracing import tracing_requirements

    return tracing_requirements(pins)


def distributions(spec: PackageSpec) -> list[str]:
    """The distributions whose wheels the package carries: scorepack and each backend's."""
    dists = ["scorepack"]
    for model in spec.models or (spec,):
        dist = model.backend_distribution
        if dist and dist not in dists:
            dists.append(dist)
    return dists


def _no_signature() -> Any:
    from ..signature import Signature

    return Signature(inputs=(), outputs=())


def _unique(items: Iterable[str]) -> list[str]:
    out: list[str] = []
    for item in items:
        if item and item not in out:
            out.append(item)
    return out


def _requirements(models: Sequence[PackageSpec]) -> Requirements:
    """The union of the models' pins; two different pins of one project cannot share an
    environment, and neither can two CUDA versions."""
    pip: dict[str, str] = {}
    for model in models:
        for line in model.requirements.pip:
            match = _REQ_NAME.match(line)
            key = normalize(match.group(1)) if match else line
            if key in pip and pip[key] != line:
                raise PackageError(
                    f"The models need {pip[key]!r} and {line!r}: one environment cannot hold "
                    "both. Package them separately."
                )
            pip[key] = line
    cudas = {m.requirements.cuda.cuda: m for m in models if m.requirements.cuda is not None}
    if len(cudas) > 1:
        listing = ", ".join(f"{m.name}: CUDA {c}" for c, m in cudas.items())
        raise PackageError(
            f"The models need different CUDA versions ({listing}); choose one with --cuda, "
            "or package them separately."
        )
    images = _unique(m.requirements.base_image or "" for m in models)
    with_cuda = next((m for m in models if m.requirements.cuda is not None), None)
    base_image = with_cuda.requirements.base_image if with_cuda is not None else None
    if base_image is None and images:
        base_image = images[0]
    return Requirements(
        pip=tuple(pip.values()),
        conda=tuple(_unique(c for m in models for c in m.requirements.conda)),
        channels=tuple(_unique(c for m in models for c in m.requirements.channels)),
        base_image=base_image,
        cuda=with_cuda.requirements.cuda if with_cuda is not None else None,
    )
