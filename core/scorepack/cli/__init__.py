"""The ``scorepack`` command. Each command lives in its own module; plugins add more
through the ``register_commands`` hook."""

from __future__ import annotations

import logging
from typing import Any

import click

from ..errors import ScorepackError
from ..version import __version__

__all__ = ["cli", "main"]


class _Group(click.Group):
    """Turns scorepack errors into one-line exit messages: the CLI's half of the contract."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ScorepackError as exc:
            raise click.ClickException(exc.message) from exc


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="scorepack")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="info",
    show_default=True,
    envvar="SCOREPACK_LOG_LEVEL",
)
def cli(log_level: str) -> None:
    """Turn a trained model into a fast (GPU) scoring service."""
    logging.basicConfig(
        level=getattr(logging, log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _add_builtin_commands() -> None:
    from . import backends, inspect, score, serve

    for module in (backends, inspect, serve, score):
        cli.add_command(module.command)


def main() -> None:
    """Console-script entry point."""
    from ..plugins import get_plugin_manager

    _add_builtin_commands()
    get_plugin_manager().hook.register_commands(cli=cli)
    cli(prog_name="scorepack")
