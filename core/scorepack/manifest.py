"""The package manifest, ``scorepack.yaml``: a scoring package's :class:`PackageSpec` on disk.

``scorepack build`` writes it; ``scorepack serve PKG``, ``scorepack.load(PKG)``, the
generated ``score.py`` and the deploy targets read it back. It records the sha256 of every
model file and wheel; :func:`verify_model` refuses a model file that does not match with
:class:`~scorepack.errors.IntegrityError` before any framework sees it.

Layout of a package (paths relative to the package directory)::

    scorepack.yaml   this manifest
    score.py         the Azure ML entry script
    labels.txt       class labels, one a line (when the package has labels)
    model/           the model files (registered as the Azure ML model)
    wheels/          scorepack and the backend plugin, so the image needs nothing else

A package of several models (format 2) keeps each model's files in ``model/NAME/`` and
each model's own manifest (format 1: backend, signature, scoring, labels) in
``models/NAME/``; its top manifest lists them under ``models`` and carries what they
share (environment, wheels, deployment), with every file of ``model/`` and its sha256.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

import yaml

from .backend import Requirements
from .config import ScoringConfig
from .cuda import CudaEnvironment
from .errors import IntegrityError, PackageError
from .generator.spec import DeploymentSettings, PackageSpec
from .signature import Signature

__all__ = [
    "FORMAT_VERSION",
    "LABELS_FILE",
    "MANIFEST_FILE",
    "MODELS_DIR",
    "MODEL_DIR",
    "dump_manifest",
    "is_package",
    "labels_text",
    "load_manifest",
    "manifest_data",
    "sha256_file",
    "spec_from_data",
    "verify_model",
    "verify_wheels",
]

MANIFEST_FILE = "scorepack.yaml"
LABELS_FILE = "labels.txt"
#: the model's folder inside the package, and the folder name Azure ML registers it under
MODEL_DIR = "model"
#: bumped when a reader of an older version could not understand a newer manifest:
#: 2 is a package of several models (a package of one is still written as 1)
FORMAT_VERSION = 2
#: where a package of several models keeps each model's own manifest: models/NAME/
MODELS_DIR = "models"

_HEADER = (
    "# scorepack package manifest, written by `scorepack build`. The generated score.py and\n"
    "# `scorepack serve` read it; model files are checked against the sha256 recorded here.\n"
    "# Rebuild the package rather than editing this file.\n"
)


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, read in chunks (models can be gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def labels_text(labels: tuple[str, ...]) -> str:
    """The contents of ``labels.txt``: one label a line."""
    return "".join(f"{label}\n" for label in labels)


def is_package(path: str | Path) -> bool:
    """True when ``path`` is a scoring package directory (it holds ``scorepack.yaml``)."""
    return (Path(path) / MANIFEST_FILE).is_file()


# --- writing -----------------------------------------------------------------------------


def manifest_data(spec: PackageSpec) -> dict[str, Any]:
    """The manifest as plain data (lists and dicts only, in a stable order)."""
    labels = spec.config.postprocess.labels
    model_prefix = f"{MODEL_DIR}/"
    data = _plain(
        {
            "format": 2 if spec.models else 1,
            "name": spec.name,
            "device": spec.device,
            "python": spec.python_version,
            "scorepack": {"version": spec.scorepack_version},
            "backend": {
                "name": spec.backend,
                "distribution": spec.backend_distribution,
                "version": spec.backend_version,
                "module": spec.backend_module,
                "options": dict(spec.backend_options),
            },
            "framework": {"name": spec.framework, "version": spec.framework_version},
            "model": {
                "dir": MODEL_DIR,
                "entry": spec.model_entry,
                "files": [
                    {"path": name, "sha256": spec.file_hashes.get(model_prefix + name, "")}
                    for name in spec.model_files
                ],
                # measured by `scorepack build` (on its CPU); sizes startup probes
                "load_seconds": spec.load_seconds,
            },
            "signature": spec.signature.to_dict(),
            "scoring": spec.config.to_dict(),
            "labels": (
                {
                    "path": LABELS_FILE,
                    "count": len(labels),
                    "sha256": hashlib.sha256(labels_text(labels).encode()).hexdigest(),
                }
                if labels is not None
                else None
            ),
            "requirements": {
                "pip": list(spec.requirements.pip),
                "conda": list(spec.requirements.conda),
                "channels": list(spec.requirements.channels),
                "base_image": spec.requirements.base_image,
                "runtime": list(spec.runtime_requirements),
                # GPU packages: CUDA, the NVIDIA driver floor, the architectures served natively
                "cuda": spec.requirements.cuda.to_dict() if spec.requirements.cuda else None,
            },
            "wheels": [{"path": w, "sha256": spec.file_hashes.get(w, "")} for w in spec.wheels],
            # built with --tracing: the runtime pins carry the OTLP exporter
            **({"tracing": True} if spec.tracing else {}),
            "deployment": asdict(spec.deployment),
        }
    )
    if spec.models:
        # each model's signature, scoring settings and labels are in its own manifest
        for key in ("signature", "scoring", "labels"):
            del data[key]
        data["models"] = [
            {
                "name": m.name,
                "package": f"{MODELS_DIR}/{m.name}",
                "model_dir": f"{MODEL_DIR}/{m.name}",
            }
            for m in spec.models
        ]
    return data


def dump_manifest(spec: PackageSpec) -> str:
    """The text of ``scorepack.yaml`` for a package."""
    body = yaml.safe_dump(
        manifest_data(spec),
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=100,
    )
    return _HEADER + body


def _plain(value: Any) -> Any:
    # safe_dump cannot represent tuples; manifests hold lists
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


# --- reading -----------------------------------------------------------------------------


def load_manifest(package: str | Path) -> PackageSpec:
    """Read a package's manifest (and its labels) into a :class:`PackageSpec`.

    Raises :class:`~scorepack.errors.PackageError` when ``package`` is not a package or
    its manifest cannot be understood. Model files are not checked here: see
    :func:`verify_model`.
    """
    root = Path(package)
    path = root / MANIFEST_FILE
    if not path.is_file():
        what = "does not exist" if not root.exists() else f"has no {MANIFEST_FILE}"
        raise PackageError(
            f"{str(root)!r} is not a scorepack package: it {what}. "
            "Build one with `scorepack build MODEL -o DIR`."
        )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise PackageError(f"{path} cannot be read: {exc}") from exc
    labels = _read_labels(root, data)
    try:
        spec = spec_from_data(data, labels=labels)
        if isinstance(data, dict) and data.get("models"):
            spec = replace(spec, models=tuple(_sub_spec(root, e) for e in data["models"]))
        return spec
    except PackageError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise PackageError(
            f"{path} is malformed ({type(exc).__name__}: {exc}); rebuild the package."
        ) from exc


def _sub_spec(root: Path, entry: Mapping[str, Any]) -> PackageSpec:
    """One model of a package of several: its own manifest in ``models/NAME/``."""
    name = str(entry["name"])
    sub = load_manifest(root / str(entry.get("package", f"{MODELS_DIR}/{name}")))
    if sub.name != name or sub.models:
        raise PackageError(f"{root / MODELS_DIR / name} does not hold model {name!r}'s manifest.")
    return sub


def _read_labels(root: Path, data: Any) -> tuple[str, ...] | None:
    entry = data.get("labels") if isinstance(data, dict) else None
    if not entry:
        return None
    path = root / str(entry.get("path", LABELS_FILE))
    if not path.is_file():
        raise PackageError(f"{path} is missing: the manifest says the package has labels.")
    expected = str(entry.get("sha256", ""))
    actual = sha256_file(path)
    if expected and actual != expected:
        raise IntegrityError(str(path), expected, actual)
    return tuple(path.read_text(encoding="utf-8").splitlines())


def spec_from_data(data: Any, *, labels: tuple[str, ...] | None = None) -> PackageSpec:
    """The inverse of :func:`manifest_data` (``labels`` come from ``labels.txt``)."""
    if not isinstance(data, dict):
        raise PackageError(f"{MANIFEST_FILE} does not hold a mapping; rebuild the package.")
    version = data.get("format")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise PackageError(
            f"{MANIFEST_FILE} has format {version!r}; this scorepack reads format "
            f"{FORMAT_VERSION} and older. Upgrade scorepack or rebuild the package."
        )
    backend = data["backend"]
    model = data["model"]
    requirements = data.get("requirements") or {}
    hashes: dict[str, str] = {}
    model_files = []
    for item in model["files"]:
        model_files.append(str(item["path"]))
        hashes[f"{MODEL_DIR}/{item['path']}"] = str(item["sha256"])
    wheels = []
    for item in data.get("wheels") or ():
        wheels.append(str(item["path"]))
        hashes[str(item["path"])] = str(item["sha256"])
    known = {f.name for f in fields(DeploymentSettings)}
    # settings a newer scorepack added are dropped: they only tune deployment
    deployment = {k: v for k, v in (data.get("deployment") or {}).items() if k in known}
    return PackageSpec(
        name=str(data["name"]),
        backend=str(backend["name"]),
        backend_distribution=str(backend.get("distribution", "")),
        model_files=tuple(model_files),
        model_entry=str(model.get("entry", ".")),
        # a package of several models has none of its own (each model's manifest has one)
        signature=Signature.from_dict(data.get("signature") or {}),
        config=ScoringConfig.from_dict(data.get("scoring") or {}, labels=labels),
        device=str(data.get("device", "cpu")),
        requirements=Requirements(
            pip=tuple(requirements.get("pip") or ()),
            conda=tuple(requirements.get("conda") or ()),
            channels=tuple(requirements.get("channels") or ("conda-forge",)),
            base_image=requirements.get("base_image"),
            cuda=_cuda_from_data(data, requirements),
        ),
        framework=str(data["framework"]["name"]),
        framework_version=str(data["framework"].get("version", "")),
        backend_options=dict(backend.get("options") or {}),
        scorepack_version=str((data.get("scorepack") or {}).get("version", "")),
        backend_version=str(backend.get("version", "")),
        python_version=str(data.get("python", "")),
        wheels=tuple(wheels),
        deployment=DeploymentSettings(**deployment),
        file_hashes=hashes,
        backend_module=str(backend.get("module", "")),
        runtime_requirements=tuple(requirements.get("runtime") or ()),
        load_seconds=_seconds(model.get("load_seconds")),
        tracing=bool(data.get("tracing", False)),
    )


def _seconds(value: Any) -> float | None:
    # absent in manifests written before it was measured
    return None if value is None else float(value)


def _cuda_from_data(data: dict[str, Any], requirements: dict[str, Any]) -> CudaEnvironment | None:
    entry = requirements.get("cuda")
    if not entry:
        return None
    framework = data.get("framework") or {}
    return CudaEnvironment(
        framework=str(framework.get("name", "")),
        built_with=str(framework.get("version", "")),
        cuda=str(entry["cuda"]),
        pip=tuple(requirements.get("pip") or ()),
        driver_min=int(entry["driver_min"]),
        native_archs=tuple(entry.get("native_archs") or ()),
        ptx_archs=tuple(entry.get("ptx_archs") or ()),
        base_image=str(requirements.get("base_image") or ""),
        environment={str(k): str(v) for k, v in (entry.get("environment") or {}).items()},
        notes=str(entry.get("notes", "")),
    )


# --- checking ----------------------------------------------------------------------------


def verify_model(spec: PackageSpec, model_dir: str | Path) -> None:
    """Check every model file in ``model_dir`` against the manifest's sha256.

    Raises :class:`~scorepack.errors.IntegrityError` for a file that differs and
    :class:`~scorepack.errors.PackageError` for one that is missing.
    """
    root = Path(model_dir)
    for name in spec.model_files:
        _check(root / name, spec.file_hashes.get(f"{MODEL_DIR}/{name}", ""), "model file")


def verify_wheels(spec: PackageSpec, package: str | Path) -> None:
    """Check the package's wheels against the manifest (before installing them)."""
    for wheel in spec.wheels:
        _check(Path(package) / wheel, spec.file_hashes.get(wheel, ""), "wheel")


def _check(path: Path, expected: str, what: str) -> None:
    if not path.is_file():
        raise PackageError(f"The {what} {path} is missing; the package is incomplete. Rebuild it.")
    if not expected:
        raise PackageError(f"The manifest records no sha256 for {path}; rebuild the package.")
    actual = sha256_file(path)
    if actual != expected:
        raise IntegrityError(str(path), expected, actual)
