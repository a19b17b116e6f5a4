"""A minimal third-party scorepack backend: small NumPy MLP classifiers stored as ``.npz``.

scorepack finds this module through the ``scorepack`` entry point in this package's
pyproject.toml and calls :func:`register_backends`. Importing it is cheap: the framework
(NumPy here) is imported only when a model loads.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable

from scorepack import BackendSpec, Requirements, hookimpl

from .backend import INSTALL, NumpyBackend
from .model_format import FORMAT, is_npz_model

__all__ = ["SPEC", "NumpyBackend", "register_backends", "requirements"]


def requirements(kind: str) -> Requirements:
    """What a scoring package installs: NumPy, pinned to the version here.

    NumPy has no GPU build, so ``"cuda"`` packages get the same pin as ``"cpu"`` ones.
    """
    try:
        version = importlib.metadata.version("numpy")
    except importlib.metadata.PackageNotFoundError:
        return Requirements(pip=("numpy",), conda=("numpy",))
    return Requirements(pip=(f"numpy=={version}",), conda=(f"numpy={version}",))


SPEC = BackendSpec(
    name="numpy",
    backend=NumpyBackend,
    formats=(FORMAT,),
    detect=is_npz_model,
    framework="numpy",
    distributions=("numpy",),
    install=INSTALL,
    requirements=requirements,
)


@hookimpl
def register_backends(register: Callable[[BackendSpec], None]) -> None:
    """Tell scorepack about the backend."""
    register(SPEC)
