"""A good plugin: an ``echo`` backend and an ``echo-hello`` command.

An ``.echo`` file holds ``{"width": N}``; the model takes ``x`` [batch, N] float32 and
returns it unchanged as ``y``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from scorepack import Backend, BackendSpec, Signature, TensorSpec, hookimpl


class EchoBackend(Backend):
    """Returns its input: one row out per row in."""

    def load(self) -> None:
        width = int(json.loads(self.path.read_text())["width"])
        self.device = self.resolve_device()
        self.signature = Signature(
            inputs=(TensorSpec("x", "float32", (None, width)),),
            outputs=(TensorSpec("y", "float32", (None, width)),),
            name="echo",
        )

    def predict(self, inputs: dict[str, Any]) -> dict[str, Any]:
        return {"y": inputs["x"]}


def is_echo_file(path: Path) -> bool:
    """Files named ``*.echo``."""
    return path.is_file() and path.suffix == ".echo"


SPEC = BackendSpec(
    name="echo",
    backend=EchoBackend,
    formats=("echo file (*.echo)",),
    detect=is_echo_file,
    framework="echo",
    distributions=("scorepack-echo-plugin",),
    install="pip install scorepack-echo-plugin",
)


@hookimpl
def register_backends(register: Callable[[BackendSpec], None]) -> None:
    register(SPEC)


@hookimpl
def register_commands(cli: click.Group) -> None:
    @cli.command("echo-hello")
    @click.argument("name", default="world")
    def echo_hello(name: str) -> None:
        """Say hello (a command added by a plugin)."""
        click.echo(f"hello {name}, from the echo plugin")
