"""``scorepack serve`` with several models: ``NAME=PATH`` entries and ``--repository DIR``.

Each entry is a model or a scoring package; a repository folder is laid out as
:mod:`scorepack.model_repository` describes. The command line's scoring options are the
defaults of every model that is not a package; a model's ``model-settings.yaml`` changes
them for that model. ``--device``, when given, is every model's device but for a
repository model whose settings name one; when not given, a package keeps the device it
was built for (as ``scorepack serve PKG`` does) and a model gets ``auto``. Models are
served through one :class:`~scorepack.repository.Repository`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..config import ScoringConfig
from ..decoding import DecodeSettings
from ..errors import PackageError
from ..model_repository import ModelSettings, model_source, rescanner, scan_repository
from ..repository import ModelSource, Repository

__all__ = ["parse_entries", "repository_from"]


def parse_entries(entries: tuple[str, ...]) -> list[tuple[str, Path]]:
    """``NAME=PATH`` pairs, checked: a usage error says which entry is wrong."""
    pairs = []
    for entry in entries:
        name, sep, path = entry.partition("=")
        if not sep or not name or not path:
            raise click.UsageError(
                f"{entry!r}: with several models, name each one: NAME=PATH (e.g. resnet=model/)."
            )
        if "/" in name:
            raise click.UsageError(f"{entry!r}: a model name cannot hold '/'.")
        if not Path(path).exists():
            raise click.UsageError(f"{entry!r}: {path} does not exist.")
        pairs.append((name, Path(path)))
    return pairs


def repository_from(
    entries: tuple[str, ...],
    repository_dir: Path | None,
    *,
    defaults: ScoringConfig,
    backend: str | None,
    device: str | None,
    backend_options: dict[str, Any],
    model_control: str,
    decode: DecodeSettings | None = None,
    load_at_start: tuple[str, ...] | None = None,
) -> Repository:
    """The repository for ``serve``'s model entries and repository folder (``device``:
    ``--device`` when given, else None)."""
    settings = ModelSettings(backend=backend, device=device, options=backend_options)
    pairs = parse_entries(entries)
    sources: list[ModelSource] = [
        model_source(name, path, settings=settings, defaults=defaults, decode=decode)
        for name, path in pairs
    ]
    rescan = None
    if repository_dir is not None:
        try:
            sources += scan_repository(
                repository_dir,
                defaults=defaults,
                device=device,
                decode=decode,
                # explicit control may start empty: models added later load by name
                empty_ok=model_control == "explicit",
            )
        except PackageError as exc:
            raise click.UsageError(exc.message) from exc
        # explicit loads read a model's folder again, as Triton's explicit mode does
        rescan = rescanner(
            repository_dir,
            defaults=defaults,
            device=device,
            decode=decode,
            exclude={name for name, _ in pairs},
        )
    try:
        return Repository(
            sources, model_control=model_control, rescan=rescan, load_at_start=load_at_start
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
