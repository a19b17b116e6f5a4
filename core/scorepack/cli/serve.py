"""``scorepack serve PATH``: the embedded scoring server."""

from __future__ import annotations

from typing import Any

import click

from ..loading import resolve_backend
from ..scorer import Scorer
from ..server import DEFAULT_HOST, DEFAULT_PORT, serve
from .options import model_options, scoring_config, scoring_options


def _keys(_ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    keys = tuple(k for item in value for k in item.split(",") if k.strip())
    return tuple(k.strip() for k in keys)


@click.command("serve")
@model_options
@scoring_options
@click.option("--host", default=DEFAULT_HOST, show_default=True, envvar="SCOREPACK_HOST")
@click.option("--port", type=int, default=DEFAULT_PORT, show_default=True, envvar="SCOREPACK_PORT",
              help="0 picks a free port.")
@click.option(
    "--auth-key",
    "auth_keys",
    multiple=True,
    callback=_keys,
    envvar="SCOREPACK_AUTH_KEYS",
    help="Require 'Authorization: Bearer KEY'. Give twice (primary, secondary) to rotate.",
)
@click.option("--graceful-timeout", type=float, default=30.0, show_default=True,
              help="Seconds in-flight requests get to finish on SIGTERM.")
def command(
    path: str,
    backend: str | None,
    device: str,
    backend_options: dict[str, Any],
    host: str,
    port: int,
    auth_keys: tuple[str, ...],
    graceful_timeout: float,
    **kw: Any,
) -> None:
    """Serve the model at PATH over HTTP (POST /score)."""
    config = scoring_config(kw)
    spec = resolve_backend(path, backend)
    instance = spec.create(path, device=device, options=backend_options)
    scorer = Scorer(instance, config)

    def listening(url: str) -> None:
        click.echo(f"scorepack: serving {path} with {spec.name} at {url}/score (model loading…)", err=True)
        if auth_keys:
            click.echo("scorepack: keys required (Authorization: Bearer KEY)", err=True)

    serve(scorer, host=host, port=port, auth_keys=auth_keys,
          graceful_timeout=graceful_timeout, on_listening=listening)
