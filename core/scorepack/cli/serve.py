"""``scorepack serve PATH``: a model or a scoring package over HTTP.

PATH is a model (served by the embedded server) or a package made by ``scorepack build``,
served by the embedded server (``--runtime embedded``, the default) or by Microsoft's
azmlinfsrv running the package's ``score.py`` as Azure ML does (``--runtime azureml``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from ..config import ScoringConfig
from ..loading import open_package, resolve_backend
from ..manifest import is_package
from ..scorer import Scorer
from ..server import DEFAULT_HOST, DEFAULT_PORT, serve
from .options import create_backend, model_options, scoring_config, scoring_options

#: scoring options a package's settings can take at serve time: name → SCOREPACK_* variable
_RUNTIME_OPTIONS = {
    "top_k": "SCOREPACK_TOP_K",
    "max_batch_size": "SCOREPACK_MAX_BATCH_SIZE",
    "max_delay_ms": "SCOREPACK_MAX_DELAY_MS",
    "max_queue_size": "SCOREPACK_MAX_QUEUE_SIZE",
    "timeout_ms": "SCOREPACK_TIMEOUT_MS",
    "max_body_bytes": "SCOREPACK_MAX_BODY_BYTES",
    "max_image_pixels": "SCOREPACK_MAX_IMAGE_PIXELS",
}


def _keys(_ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    keys = tuple(k for item in value for k in item.split(",") if k.strip())
    return tuple(k.strip() for k in keys)


def _given(ctx: click.Context, name: str) -> bool:
    return ctx.get_parameter_source(name) in (
        ParameterSource.COMMANDLINE,
        ParameterSource.ENVIRONMENT,
    )


@click.command("serve")
@model_options
@scoring_options
@click.option("--host", default=DEFAULT_HOST, show_default=True, envvar="SCOREPACK_HOST")
@click.option(
    "--port",
    type=int,
    default=DEFAULT_PORT,
    show_default=True,
    envvar="SCOREPACK_PORT",
    help="0 picks a free port.",
)
@click.option(
    "--auth-key",
    "auth_keys",
    multiple=True,
    callback=_keys,
    envvar="SCOREPACK_AUTH_KEYS",
    help="Require 'Authorization: Bearer KEY'. Give twice (primary, secondary) to rotate.",
)
@click.option(
    "--graceful-timeout",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds in-flight requests get to finish on SIGTERM.",
)
@click.option(
    "--model-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="SCOREPACK_MODEL_DIR",
    help="For a package: where its model files are, when not in its model/ folder (a "
    "container's mounted model, e.g. /mnt/models).",
)
@click.option(
    "--runtime",
    type=click.Choice(["embedded", "azureml"]),
    default="embedded",
    show_default=True,
    help="For a package: the embedded server, or azmlinfsrv running its score.py as Azure ML does.",
)
@click.option(
    "--isolated",
    is_flag=True,
    help="With --runtime azureml: run in a fresh virtual environment made from the "
    "package's requirements.txt and wheels.",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    help="With --runtime azureml: gunicorn threads (default: the package's setting).",
)
@click.option(
    "--no-env-check",
    is_flag=True,
    help="With --runtime azureml: serve even when this environment's versions differ "
    "from the package's pins.",
)
@click.pass_context
def command(ctx: click.Context, **kw: Any) -> None:
    """Serve the model or scoring package at PATH over HTTP (POST /score)."""
    args = _ServeArgs(**{name: kw.pop(name) for name in _ServeArgs.__dataclass_fields__})
    if is_package(args.path):
        _serve_package(ctx, args, kw)
        return
    if args.model_dir is not None and ctx.get_parameter_source("model_dir") is (
        ParameterSource.COMMANDLINE
    ):
        raise click.UsageError("--model-dir goes with a package (PATH is a model itself).")
    if args.runtime == "azureml" or args.isolated or args.threads is not None:
        raise click.UsageError(
            "--runtime azureml (and --isolated, --threads) serve a scoring package; build one "
            f"first: scorepack build {args.path} -o PKG --device cpu"
        )
    config = scoring_config(kw)
    spec = resolve_backend(args.path, args.backend)
    instance = create_backend(spec, args.path, args.device, args.backend_options)
    _serve_embedded(Scorer(instance, config), f"{args.path} with {spec.name}", args)


@dataclass(frozen=True)
class _ServeArgs:
    """The options of ``serve`` beyond the scoring settings, in one place."""

    path: str
    backend: str | None
    device: str
    backend_options: dict[str, Any]
    host: str
    port: int
    auth_keys: tuple[str, ...]
    graceful_timeout: float
    runtime: str
    isolated: bool
    threads: int | None
    no_env_check: bool
    model_dir: Path | None


def _serve_embedded(scorer: Scorer, what: str, args: _ServeArgs) -> None:
    def listening(url: str) -> None:
        click.echo(f"scorepack: serving {what} at {url}/score (model loading…)", err=True)
        if args.auth_keys:
            click.echo("scorepack: keys required (Authorization: Bearer KEY)", err=True)

    serve(
        scorer,
        host=args.host,
        port=args.port,
        auth_keys=args.auth_keys,
        graceful_timeout=args.graceful_timeout,
        on_listening=listening,
    )


def _package_overrides(ctx: click.Context, kw: dict[str, Any]) -> dict[str, Any]:
    """The runtime settings given on the command line; a package fixes everything else."""
    flags = {p.name: p.opts[0] for p in ctx.command.params}
    fixed = sorted(
        flags.get(name, name) for name in kw if name not in _RUNTIME_OPTIONS and _given(ctx, name)
    )
    if fixed:
        raise click.UsageError(
            f"{', '.join(fixed)}: a package fixes its preprocessing, labels and outputs; "
            "rebuild it with `scorepack build` to change them."
        )
    return {name: kw[name] for name in _RUNTIME_OPTIONS if _given(ctx, name)}


def _apply(config: ScoringConfig, overrides: dict[str, Any]) -> ScoringConfig:
    batching = {k: v for k, v in overrides.items() if hasattr(config.batching, k)}
    top = {k: v for k, v in overrides.items() if k in ("max_body_bytes", "max_image_pixels")}
    post = {"top_k": overrides["top_k"]} if "top_k" in overrides else {}
    try:
        return replace(
            config,
            batching=replace(config.batching, **batching),
            postprocess=replace(config.postprocess, **post),
            **top,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc


def _serve_package(ctx: click.Context, args: _ServeArgs, kw: dict[str, Any]) -> None:
    overrides = _package_overrides(ctx, kw)
    chosen_device = args.device if _given(ctx, "device") else None
    if args.runtime == "embedded":
        if args.isolated or args.threads is not None or args.no_env_check:
            raise click.UsageError(
                "--isolated, --threads and --no-env-check go with --runtime azureml."
            )
        from ..manifest import load_manifest

        spec = load_manifest(args.path)
        scorer = open_package(
            args.path,
            model_dir=args.model_dir,
            backend=args.backend,
            device=chosen_device,
            options=args.backend_options,
            config=_apply(spec.config, overrides),
        )
        _serve_embedded(scorer, f"the package {spec.name} ({spec.backend})", args)
        return
    if ctx.get_parameter_source("model_dir") is ParameterSource.COMMANDLINE:
        raise click.UsageError(
            "--model-dir goes with the embedded runtime; under --runtime azureml the model "
            "is laid out where Azure ML puts it."
        )
    if args.auth_keys:
        raise click.UsageError(
            "--auth-key does not apply to --runtime azureml: azmlinfsrv checks no keys "
            "(Azure ML checks them at the endpoint). Use the embedded runtime to test keys."
        )
    if args.backend_options:
        raise click.UsageError(
            "-O does not apply to --runtime azureml; rebuild the package with it."
        )
    from ..azureml.host import AzureMLServe, free_port, serve_azureml

    options = AzureMLServe(
        package=Path(args.path),
        host=args.host,
        port=args.port or free_port(args.host),
        device=chosen_device,
        threads=args.threads,
        isolated=args.isolated,
        check_env=not args.no_env_check,
        environ={_RUNTIME_OPTIONS[k]: str(v) for k, v in overrides.items()},
    )

    def started(url: str) -> None:
        click.echo(
            f"scorepack: serving {args.path} under azmlinfsrv (Azure ML's inference server) "
            f"at {url}/score (model loading…)",
            err=True,
        )

    code = serve_azureml(
        options, say=lambda line: click.echo(f"scorepack: {line}", err=True), on_start=started
    )
    if code not in (0, -2, -15):
        raise click.ClickException(f"azmlinfsrv exited with status {code}; its log is above.")
