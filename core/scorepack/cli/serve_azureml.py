"""``scorepack serve-azureml PKG``: a scoring package under azmlinfsrv, as Azure ML runs it.

Microsoft's azmlinfsrv runs the package's ``score.py`` with the package laid out as Azure
ML lays it out (:mod:`scorepack.azureml.host`). A command of its own rather than a mode of
``serve``: the embedded server's options (keys, gRPC, backend options, preprocessing…)
cannot apply here, so they are not options here, and this command's own (threads, an
isolated environment, the metrics port) are not options of ``serve``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..detect import package_archive_hint
from ..manifest import is_package
from ..parsing import AZUREML_SERVE_FIELDS, AZUREML_SERVE_SECTIONS, parse_keys
from ..server import DEFAULT_HOST, DEFAULT_PORT
from .options import decode_options, package_runtime_options, read_timeout_option
from .say import say
from .sections import SectionedCommand
from .settings_options import load_settings, settings_file_option, with_settings

if TYPE_CHECKING:
    from ..settings import AzureMLServeSettings

__all__ = ["command", "serve_package_azureml"]


def _keys(_ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    return parse_keys(value)


class _AzureMLCommand(SectionedCommand):
    """An unknown option is most likely one of the embedded server's: say where it goes."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.NoSuchOption as exc:
            hint = (
                " serve-azureml takes only what applies under azmlinfsrv; the embedded "
                "server's options (keys, gRPC, -O, preprocessing…) are `scorepack serve PKG`'s."
            )
            raise click.NoSuchOption(
                exc.option_name,
                message=exc.message + hint,
                possibilities=exc.possibilities,
                ctx=exc.ctx,
            ) from None


@with_settings(AZUREML_SERVE_FIELDS)
@click.command("serve-azureml", cls=_AzureMLCommand, sections=AZUREML_SERVE_SECTIONS)
@click.argument("package", type=click.Path(exists=True), metavar="PKG")
@click.option(
    "--host",
    default=DEFAULT_HOST,
    show_default=True,
    help="Address to bind (azmlinfsrv itself binds 0.0.0.0; scorepack's launcher does not).",
)
@click.option(
    "--port", type=int, default=DEFAULT_PORT, show_default=True, help="0 picks a free port."
)
@click.option("--device", help="auto, cpu, cuda or cuda:N (default: the package's device).")
@click.option(
    "--threads",
    type=int,
    help="scoring requests in flight at once, batched together; gunicorn gets one thread "
    "more, kept for the probes (default: the package's deployment setting).",
)
@click.option(
    "--isolated",
    is_flag=True,
    help="Run in a fresh virtual environment made from the package's requirements.txt and "
    "wheels (kept under SCOREPACK_CACHE_DIR, default ~/.cache/scorepack).",
)
@click.option(
    "--no-env-check",
    is_flag=True,
    help="Serve even when this environment's versions differ from the package's pins.",
)
@click.option(
    "--metrics-port",
    type=int,
    help="The port of the Prometheus metrics endpoint (default: a free one; deployments "
    "use 8002; 0: none): azmlinfsrv takes no routes from a package.",
)
@click.option(
    "--cors-origin",
    "cors_origins",
    multiple=True,
    callback=_keys,
    help="Let browsers on this origin call the server (azmlinfsrv's AML_CORS_ORIGINS); "
    "give several, or '*' (the variable takes them comma-separated). Off by default.",
)
@click.option(
    "--otlp-endpoint",
    help="Trace every request with OpenTelemetry and export the spans over OTLP/HTTP to "
    "this URL, or 'console'. Off by default.",
)
@click.option(
    "--access-log/--no-access-log",
    default=True,
    show_default=True,
    help="The package logs one line per answered request at INFO; --no-access-log: none "
    "(SCOREPACK_ACCESS_LOG=false in the package's environment).",
)
@settings_file_option
@package_runtime_options
@decode_options
@read_timeout_option
@click.option(
    "--upload-buffer-bytes",
    type=int,
    help="Bytes of requests still arriving that the worker holds at once; past it, new "
    "uploads get 503 with Retry-After (default 268435456, 256 MiB).",
)
@click.pass_context
def command(ctx: click.Context, **kw: Any) -> None:
    """Serve the scoring package PKG under azmlinfsrv (Microsoft's Azure ML inference
    server), as an Azure ML online endpoint runs it: the package's score.py, one worker
    with gunicorn threads, the model laid out where Azure ML mounts it.

    For the embedded server (V2, gRPC, keys, /metrics on the same port) use
    `scorepack serve PKG`. Every option can also come from its SCOREPACK_* variable or a
    --settings file; batching, limits and decoding left out are the package's own.
    """
    path = kw.pop("package")
    settings: AzureMLServeSettings = load_settings(ctx, kw, _settings_class(), AZUREML_SERVE_FIELDS)
    serve_package_azureml(ctx, path, settings)


def _settings_class() -> Any:
    from ..settings import AzureMLServeSettings

    return AzureMLServeSettings


def serve_package_azureml(ctx: click.Context, path: str, settings: AzureMLServeSettings) -> None:
    """Run the package at ``path`` under azmlinfsrv with ``settings`` until it stops."""
    if not is_package(path):
        archive = package_archive_hint(path)
        if archive:
            raise click.UsageError(archive)
        raise click.UsageError(
            f"{path} is a model, not a scoring package: azmlinfsrv serves a package's "
            f"score.py. Build one first: scorepack build {path} -o PKG --device cpu"
        )
    from ..azureml.host import AzureMLServe, free_port, serve_azureml

    environ = settings.package_environ()
    root = ctx.find_root().params
    environ["SCOREPACK_LOG_FORMAT"] = str(root.get("log_format", "text")).lower()
    environ["SCOREPACK_LOG_LEVEL"] = str(root.get("log_level", "info")).lower()
    host = settings.host if settings.host is not None else DEFAULT_HOST
    port = settings.port if settings.port is not None else DEFAULT_PORT
    options = AzureMLServe(
        package=Path(path),
        host=host,
        port=port or free_port(host),
        device=settings.device,
        threads=settings.threads,
        isolated=settings.isolated,
        check_env=not settings.no_env_check,
        metrics_port=settings.metrics_port,
        cors_origins=settings.cors_origins,
        environ=environ,
    )

    def started(url: str) -> None:
        say(
            f"serving {path} under azmlinfsrv (Azure ML's inference server) "
            f"at {url}/score (model loading…)"
        )

    code = serve_azureml(options, say=say, on_start=started)
    if code not in (0, -2, -15):
        raise click.ClickException(f"azmlinfsrv exited with status {code}; its log is above.")
