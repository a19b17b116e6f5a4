"""``write``: a PackageSpec and its model onto disk, as a directory or a zip archive.

The package is assembled in a staging directory next to the destination and moved into
place at the end, so an interrupted build never leaves a half-written package behind.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..errors import PackageError
from ..manifest import MODEL_DIR, sha256_file
from .rendering import render
from .several import distributions
from .spec import PackageSpec
from .wheels import build_wheel

__all__ = ["BuiltPackage", "write_package"]

logger = logging.getLogger("scorepack.generator")

WHEELS_DIR = "wheels"


@dataclass(frozen=True)
class BuiltPackage:
    """What ``write_package`` made: where, and the final spec (wheels and hashes filled in)."""

    path: Path
    spec: PackageSpec
    files: tuple[str, ...]


def write_package(
    spec: PackageSpec,
    model: str | Path | Mapping[str, str | Path],
    output: str | Path,
    *,
    targets: Mapping[str, Any] | None = None,
    as_zip: bool = False,
    force: bool = False,
) -> BuiltPackage:
    """Copy the model, build the wheels, render and write every file.

    ``output`` is the package directory, or with ``as_zip`` the archive (``.zip`` is added
    when missing). An existing non-empty destination is an error unless ``force``. For a
    package of several models (``spec.models``), ``model`` maps each model's name to its
    path.
    """
    destination = Path(output)
    if as_zip and destination.suffix != ".zip":
        destination = destination.with_name(destination.name + ".zip")
    _check_destination(destination, force)
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    try:
        if spec.models:
            if not isinstance(model, Mapping):
                raise PackageError("A package of several models needs each model's path.")
            hashes = _copy_models(spec, model, staging / MODEL_DIR)
        else:
            if isinstance(model, Mapping):
                raise PackageError("A package of one model is built from one path.")
            hashes = _copy_model(Path(model), spec.model_files, staging / MODEL_DIR)
        wheels = []
        wheel_hashes = {}
        for dist in distributions(spec):
            wheel = build_wheel(dist, staging / WHEELS_DIR)
            relative = f"{WHEELS_DIR}/{wheel.name}"
            wheels.append(relative)
            wheel_hashes[relative] = sha256_file(wheel)
        hashes.update(wheel_hashes)
        final = replace(
            spec,
            wheels=tuple(wheels),
            file_hashes=hashes,
            # each model's own manifest: its files' hashes relative to its own model folder
            models=tuple(
                replace(
                    m,
                    wheels=tuple(wheels),
                    file_hashes={
                        f"{MODEL_DIR}/{f}": hashes[f"{MODEL_DIR}/{m.name}/{f}"]
                        for f in m.model_files
                    }
                    | wheel_hashes,
                )
                for m in spec.models
            ),
        )
        files = render(final, targets)
        for relative, text in files.items():
            path = staging / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        listing = tuple(sorted([*files, *hashes]))
        _move_into_place(staging, destination, as_zip, force)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("wrote %s (%d files)", destination, len(listing))
    return BuiltPackage(destination, final, listing)


def _check_destination(destination: Path, force: bool) -> None:
    if not destination.exists() or force:
        return
    if destination.is_dir() and not any(destination.iterdir()):
        return
    raise PackageError(f"{destination} already exists; choose another output or pass --force.")


def _copy_models(
    spec: PackageSpec, sources: Mapping[str, str | Path], target: Path
) -> dict[str, str]:
    """Each model's files into ``model/NAME/``; the sha256 of each copy, by package path."""
    hashes = {}
    for model in spec.models:
        if model.name not in sources:
            raise PackageError(f"No path was given for model {model.name!r}.")
        copied = _copy_model(Path(sources[model.name]), model.model_files, target / model.name)
        for path, digest in copied.items():
            hashes[f"{MODEL_DIR}/{model.name}/{path.split('/', 1)[1]}"] = digest
    return hashes


def _copy_model(source: Path, names: tuple[str, ...], target: Path) -> dict[str, str]:
    """Copy the model's files into ``target``; the sha256 of each copy, by package path."""
    hashes = {}
    for name in names:
        origin = source if source.is_file() else source / name
        if not origin.is_file():
            raise PackageError(f"{origin} disappeared while the package was being built.")
        copy = target / name
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(origin, copy)
        hashes[f"{MODEL_DIR}/{name}"] = sha256_file(copy)
    return hashes


def _move_into_place(staging: Path, destination: Path, as_zip: bool, force: bool) -> None:
    if as_zip:
        archive = staging.with_name(staging.name + ".zip")
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(staging.rglob("*")):
                if path.is_file():
                    zf.write(path, path.relative_to(staging).as_posix())
        shutil.rmtree(staging)
        os.replace(archive, destination)
        return
    if destination.exists():
        if force and destination.is_dir():
            shutil.rmtree(destination)
        elif force:
            destination.unlink()
        else:
            destination.rmdir()  # empty, checked before
    os.replace(staging, destination)
    os.chmod(destination, 0o755)  # mkdtemp makes it 0700
