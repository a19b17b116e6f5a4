"""Scoring packages: resolve a model into a PackageSpec, render it to files, write it.

    model path ─► resolve_spec() ─► PackageSpec ─► render() ─► write_package()

``build_package`` does all three for ``scorepack build``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .spec import DeploymentSettings, PackageSpec

if TYPE_CHECKING:
    from .rendering import render, render_targets
    from .resolve import resolve_spec
    from .write import BuiltPackage, write_package

# the manifest (imported by ``import scorepack``) needs only the spec; the rest loads on use
_LAZY = {
    "render": ".rendering",
    "render_targets": ".rendering",
    "resolve_spec": ".resolve",
    "BuiltPackage": ".write",
    "write_package": ".write",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BuiltPackage",
    "DeploymentSettings",
    "PackageSpec",
    "build_package",
    "registered_targets",
    "render",
    "render_targets",
    "resolve_spec",
    "write_package",
]


def registered_targets() -> dict[str, Any]:
    """The deploy targets the plugins registered (Azure ML SDK v1, v2, …), by name."""
    from ..plugins import get_plugins

    return dict(get_plugins().deploy_targets)


def build_package(
    model: str | Path | Sequence[Any],
    output: str | Path,
    *,
    as_zip: bool = False,
    force: bool = False,
    targets: Mapping[str, Any] | None = None,
    **options: Any,
) -> BuiltPackage:
    """Build the scoring package for ``model`` in ``output`` (see :func:`resolve_spec` for
    ``options``); every registered deploy target's files are included by default.

    ``model`` is a path, or a list of :class:`~.several.ModelEntry` (or ``(name, path)``
    pairs) for a package of several models (see :func:`~.several.resolve_models`).
    """
    from .resolve import resolve_spec
    from .write import write_package

    if not isinstance(model, str | Path):
        from .several import ModelEntry, resolve_models

        entries = [e if isinstance(e, ModelEntry) else ModelEntry(e[0], Path(e[1])) for e in model]
        spec = resolve_models(entries, **options)
        chosen = registered_targets() if targets is None else targets
        sources = {e.name: e.path for e in entries}
        return write_package(spec, sources, output, targets=chosen, as_zip=as_zip, force=force)
    spec = resolve_spec(model, **options)
    chosen = registered_targets() if targets is None else targets
    return write_package(spec, model, output, targets=chosen, as_zip=as_zip, force=force)
