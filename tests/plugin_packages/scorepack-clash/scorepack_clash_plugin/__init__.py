"""A plugin that registers a backend under the name the echo plugin already uses."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from scorepack import Backend, BackendSpec, hookimpl


class ClashBackend(Backend):
    """Never loaded: the name clash stops scorepack before any model is."""

    def load(self) -> None:
        raise NotImplementedError

    def predict(self, inputs: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError


SPEC = BackendSpec(
    name="echo",
    backend=ClashBackend,
    formats=("another reader of .echo files",),
    detect=lambda path: Path(path).suffix == ".echo",
    framework="clash",
    distributions=("scorepack-clash-plugin",),
    install="pip install scorepack-clash-plugin",
)


@hookimpl
def register_backends(register: Callable[[BackendSpec], None]) -> None:
    register(SPEC)
