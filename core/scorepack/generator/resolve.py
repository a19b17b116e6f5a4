"""From a model path and the user's choices to a :class:`PackageSpec`.

This is the part of ``scorepack build`` that looks at the world: it detects the backend,
loads the model once (on the CPU) to read its signature, and reads the versions installed
here, so that the package pins what built and tested it.
"""

from __future__ import annotations

import importlib.metadata
import re
import sys
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Any

from ..backend import BackendSpec, Requirements
from ..config import ScoringConfig
from ..errors import ModelError, PackageError
from ..loading import resolve_backend
from ..plugins import get_plugins
from ..postprocess import plan_outputs
from ..preprocess import plan_image
from ..signature import Signature
from ..version import __version__
from .spec import DeploymentSettings, PackageSpec

__all__ = [
    "AZMLINFSRV_PINS",
    "DEVICES",
    "model_files",
    "normalize",
    "pins_for",
    "read_signature",
    "resolve_spec",
]

DEVICES = ("cpu", "cuda")

#: the serving stack, at the versions scorepack was tested with; the installed versions win
AZMLINFSRV_PINS: Mapping[str, str] = {
    "azureml-inference-server-http": "1.5.1",
    "azureml-contrib-services": "1.62.0",
    # gunicorn >= 23 is all azmlinfsrv asks for; its gthread worker is what batching relies on
    "gunicorn": "27.0.1",
    # scorepack's gunicorn worker (scorepack.azureml.worker) checks request framing with it
    "h11": "0.16.0",
}

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")
_REQ_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def normalize(name: str) -> str:
    """A project name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _installed(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def model_files(path: Path) -> tuple[tuple[str, ...], str]:
    """The model's files (relative, POSIX) and what to load inside ``model/``."""
    if path.is_file():
        return (path.name,), path.name
    files = sorted(
        PurePosixPath(*p.relative_to(path).parts).as_posix()
        for p in path.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    )
    if not files:
        raise ModelError(f"{path} holds no files.")
    return tuple(files), "."


def read_signature(spec: BackendSpec, path: Path, options: Mapping[str, Any]) -> Signature:
    """Load the model once, on the CPU (the build machine may have no GPU), for its signature."""
    return load_once(spec, path, options)[0]


def load_once(spec: BackendSpec, path: Path, options: Mapping[str, Any]) -> tuple[Signature, float]:
    """The model's signature and the seconds its load took, from one load on the CPU.

    The load time is recorded in the manifest: deployments size their startup probes by it.
    """
    instance = spec.create(path, device="cpu", options=options)
    start = time.monotonic()
    instance.load()
    seconds = time.monotonic() - start
    try:
        return instance.signature, seconds
    finally:
        instance.unload()


#: extras whose dependencies every package carries: its container image serves the
#: Open Inference Protocol over gRPC too (``SCOREPACK_GRPC_PORT``)
PACKAGE_EXTRAS: Mapping[str, tuple[str, ...]] = {"scorepack": ("grpc",)}
_EXTRA = re.compile(r"""extra\s*==\s*['"]([^'"]+)['"]""")


def pins_for(distributions: tuple[str, ...], skip: set[str]) -> tuple[str, ...]:
    """``name==version`` for the serving stack and the dependencies of ``distributions``.

    Markers are kept (``uvloop==0.23.0; sys_platform != 'win32'``); extras' dependencies
    are left out but for :data:`PACKAGE_EXTRAS` (when installed here), and so are names in
    ``skip`` (already pinned, or shipped as wheels).
    """
    pins: dict[str, str] = {}
    for name, default in AZMLINFSRV_PINS.items():
        pins[normalize(name)] = f"{name}=={_installed(name) or default}"
    for dist in distributions:
        for requirement in importlib.metadata.requires(dist) or ():
            text, _, marker = requirement.partition(";")
            extra = _EXTRA.search(marker)
            if extra is not None:
                if extra.group(1) not in PACKAGE_EXTRAS.get(dist, ()):
                    continue
                # the extra is chosen here; what else the marker says stays
                marker = re.sub(r"^\s*and\s+|\s+and\s*$", "", _EXTRA.sub("", marker).strip())
            elif "extra" in marker:
                continue
            match = _REQ_NAME.match(text)
            if not match:
                continue
            name = match.group(1)
            key = normalize(name)
            version = _installed(name)
            if key in pins or key in skip or version is None:
                continue
            pins[key] = f"{name}=={version}" + (f"; {marker.strip()}" if marker.strip() else "")
    return tuple(pins[k] for k in sorted(pins) if k not in skip)


def _requirements(bspec: BackendSpec, device: str, cuda: int | None) -> Requirements:
    """The backend's pins for the device; a chosen CUDA major must be the one it pins."""
    requirements = bspec.requirements(device if cuda is None else f"cuda{cuda}")
    if cuda is not None and (requirements.cuda is None or requirements.cuda.major != cuda):
        got = f"CUDA {requirements.cuda.major}" if requirements.cuda else "no stated CUDA version"
        raise PackageError(
            f"The {bspec.name} backend was asked for CUDA {cuda} and answered with {got}; "
            "build without choosing a CUDA version."
        )
    return requirements


def _check_fits(signature: Signature, config: ScoringConfig) -> None:
    try:
        plan_image(signature, config.preprocess)
        plan_outputs(signature, config.postprocess)
    except ValueError as exc:
        raise ModelError(f"The scoring settings do not fit the model: {exc}") from exc


def resolve_spec(
    path: str | Path,
    *,
    backend: str | None = None,
    device: str = "cuda",
    cuda: int | None = None,
    name: str | None = None,
    options: Mapping[str, Any] | None = None,
    config: ScoringConfig | None = None,
    deployment: DeploymentSettings | None = None,
    tracing: bool = False,
) -> PackageSpec:
    """Everything about the package but its wheels and file hashes (``write`` adds those).

    ``cuda`` picks the CUDA major of a GPU package where the framework offers more than
    one (see :mod:`scorepack.cuda`); None takes the known-good default. ``tracing`` pins
    the OTLP exporter too (:mod:`.tracing`), or raises PackageError, before the model
    loads, for a framework that cannot run beside it.
    """
    model = Path(path)
    if device not in DEVICES:
        raise PackageError(f"A package is built for cpu or cuda, not {device!r}.")
    if cuda is not None and device != "cuda":
        raise PackageError("A CUDA version was chosen for a CPU package; drop it or use cuda.")
    resolved = model.resolve()
    package_name = name or (resolved.stem if resolved.is_file() else resolved.name) or "model"
    if not _NAME.match(package_name):
        raise PackageError(
            f"{package_name!r} cannot name a package (it names the Azure ML model): use letters, "
            "digits, '.', '_' and '-', starting with a letter or digit. Choose one with --name."
        )
    config = config or ScoringConfig()
    bspec = resolve_backend(model, backend)
    # parsed once against the backend's schema: the manifest records typed values
    parsed = bspec.parse_options(options or {})
    plugins = get_plugins()
    distribution = plugins.distribution(bspec.name)
    module = bspec.backend.__module__.split(".")[0]
    if distribution is None and module != "scorepack":
        raise PackageError(
            f"The {bspec.name} backend does not come from an installed distribution, so its "
            "code cannot be shipped in the package. Install its plugin with pip."
        )
    requirements = _requirements(bspec, device, cuda)
    if tracing:
        from .tracing import check_tracing

        check_tracing(requirements.pip, bspec.distributions, bspec.name)
    signature, load_seconds = load_once(bspec, model, parsed)
    _check_fits(signature, config)
    files, entry = model_files(model)
    dists = ("scorepack",) + ((distribution,) if distribution else ())
    pinned = {normalize(m.group(1)) for r in requirements.pip if (m := _REQ_NAME.match(r))}
    skip = pinned | {normalize(d) for d in dists}
    deployment = deployment or DeploymentSettings()
    if device == "cpu":
        deployment = replace(deployment, gpu_cores=0)
    # Azure's own timeout must not fire before the runtime's: the runtime answers 504 first
    deployment = replace(
        deployment,
        scoring_timeout_ms=max(
            deployment.scoring_timeout_ms, int(config.batching.timeout_ms) + 10_000
        ),
    )
    runtime = pins_for(dists, skip)
    if tracing:
        from .tracing import tracing_requirements

        runtime = tracing_requirements(runtime)
    return PackageSpec(
        name=package_name,
        backend=bspec.name,
        backend_distribution=distribution or "",
        model_files=files,
        model_entry=entry,
        signature=signature,
        config=config,
        device=device,
        requirements=requirements,
        framework=bspec.framework,
        framework_version=bspec.framework_version() or "",
        backend_options=parsed,
        scorepack_version=__version__,
        backend_version=(_installed(distribution) or "") if distribution else __version__,
        python_version=f"{sys.version_info.major}.{sys.version_info.minor}",
        deployment=deployment,
        backend_module=module,
        runtime_requirements=runtime,
        load_seconds=round(load_seconds, 2),
        tracing=tracing,
    )
