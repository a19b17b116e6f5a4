"""What the serving commands tell the person or the collector reading their stderr."""

from __future__ import annotations

import logging

import click

from ..telemetry.logs import cli_log_format

__all__ = ["say"]

logger = logging.getLogger("scorepack.cli")


def say(message: str, *, warning: bool = False) -> None:
    """``scorepack: MESSAGE`` on stderr (``scorepack: warning: ...``); with ``--log-format
    json``, a record of the ``scorepack.cli`` logger instead, so that every line a log
    collector reads from the server is one JSON object, these included."""
    if cli_log_format() == "json":
        logger.log(logging.WARNING if warning else logging.INFO, message)
    else:
        click.echo(f"scorepack: {'warning: ' if warning else ''}{message}", err=True)
