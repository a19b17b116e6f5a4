"""``scorepack serve PATH``: a model or a scoring package on the embedded server.

PATH is a model or a package made by ``scorepack build``; several models —
``NAME=PATH ...`` and/or ``--repository DIR`` — are served from one repository
(``serve_models.py``), and ``/score?model=NAME`` picks one. ``--help`` shows the options
by the mode they apply to (:mod:`.sections`). A package under Microsoft's azmlinfsrv, as
Azure ML runs it, is ``scorepack serve-azureml PKG`` (:mod:`.serve_azureml`): a command of
its own, so that the options it cannot take are not options there at all. The old
spelling, ``serve PKG --runtime azureml``, still works, with a deprecation note.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

from ..codecs import DEFAULT_MAX_BODY_BYTES
from ..errors import UnknownFormatError
from ..loading import open_package, resolve_backend
from ..manifest import is_package
from ..parsing import AZUREML_SERVE_FIELDS, SERVE_FIELDS, parse_keys
from ..repository import MODEL_CONTROL_MODES, ModelSource, Repository
from ..scorer import Scorer
from ..server import DEFAULT_HOST, DEFAULT_PORT, serve
from ..server.grpc_v2 import GrpcOptions
from ..server.limits import HttpLimits
from .options import (
    create_backend,
    decode_options,
    model_flags,
    read_timeout_option,
    scoring_options,
)
from .say import say
from .sections import SectionedCommand
from .serve_azureml import serve_package_azureml
from .serve_models import repository_from
from .settings_options import checked, load_settings, settings_file_option, with_settings

if TYPE_CHECKING:
    from ..settings import ServeSettings


def _keys(_ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    return parse_keys(value)


#: the options ``serve --runtime azureml`` took before ``serve-azureml`` existed: still
#: accepted (hidden from --help) so that old command lines keep working
_LEGACY_AZUREML = ("runtime", "isolated", "threads", "no_env_check", "metrics_port")


def _legacy_azureml_options(func: Any) -> Any:
    for decorator in reversed(
        (
            click.option(
                "--runtime",
                type=click.Choice(["embedded", "azureml"]),
                default="embedded",
                envvar="SCOREPACK_RUNTIME",
                hidden=True,
                help="Deprecated: --runtime azureml is `scorepack serve-azureml PKG`.",
            ),
            click.option("--isolated", is_flag=True, hidden=True, help="See serve-azureml."),
            click.option(
                "--threads", type=click.IntRange(min=1), hidden=True, help="See serve-azureml."
            ),
            click.option("--no-env-check", is_flag=True, hidden=True, help="See serve-azureml."),
            click.option(
                "--metrics-port",
                type=click.IntRange(min=0, max=65535),
                hidden=True,
                help="See serve-azureml.",
            ),
        )
    ):
        func = decorator(func)
    return func


@with_settings(SERVE_FIELDS)
@click.command("serve", cls=SectionedCommand)
@click.argument("models", nargs=-1, metavar="PATH | NAME=PATH...")
@model_flags
@click.option(
    "--repository",
    "repository_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A model repository folder: DIR/NAME/[VERSION/]model files, with an optional "
    "model-settings.yaml per model (see the README).",
)
@click.option(
    "--model-control",
    type=click.Choice(MODEL_CONTROL_MODES),
    default="none",
    show_default=True,
    help="explicit: load and unload models through POST /v2/repository/models/NAME/load|unload.",
)
@click.option(
    "--load-model",
    "load_models",
    multiple=True,
    metavar="NAME",
    help="With --model-control explicit, load only this model at start (repeatable; '*' "
    "loads all, the default), as Triton's --load-model; the others wait for a load request.",
)
@click.option(
    "--exit-on-error/--no-exit-on-error",
    "exit_on_error",
    default=None,
    help="Stop the server when a model fails to load at start, as Triton's --exit-on-error "
    "(default: stop when serving one model; with several the others serve on and the "
    "failed one is not ready). --no-exit-on-error keeps one model's server up, to load "
    "it again once fixed (explicit control).",
)
@scoring_options
@decode_options
@click.option(
    "--host",
    default=DEFAULT_HOST,
    show_default=True,
    help="Address to bind (0.0.0.0 in a container).",
)
@click.option(
    "--port",
    type=int,
    default=DEFAULT_PORT,
    show_default=True,
    help="0 picks a free port.",
)
@click.option(
    "--grpc-port",
    type=click.IntRange(min=0, max=65535),
    help="Also serve the Open Inference Protocol over gRPC on this port, over the same "
    "models (off by default; Triton's port is 8001, 0 picks a free one). Needs "
    "pip install 'scorepack[grpc]'.",
)
@click.option(
    "--auth-key-file",
    "auth_key_file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="SCOREPACK_AUTH_KEY_FILE",
    help="Require 'Authorization: Bearer KEY' with a key from this file (one per line: "
    "primary, secondary). Also SCOREPACK_AUTH_KEYS=KEY1,KEY2.",
)
@click.option(
    "--auth-key",
    "auth_keys",
    multiple=True,
    callback=_keys,
    help="A key on the command line, where every local user can read it in the process "
    "list: prefer --auth-key-file or SCOREPACK_AUTH_KEYS (comma-separated).",
)
@click.option(
    "--graceful-timeout",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds in-flight requests get to finish on SIGTERM.",
)
@click.option(
    "--drain-seconds",
    type=float,
    help="On SIGTERM, answer /health/ready with 503 for this long while still serving, "
    "so that a load balancer stops sending before the listener closes; a second signal "
    "stops at once (default 0).",
)
@read_timeout_option
@click.option(
    "--max-header-count",
    type=int,
    help="Header fields one request may have; more get 431 (default 100).",
)
@click.option(
    "--max-header-bytes",
    type=int,
    help="Bytes of all header names and values of one request; more get 431 (default 32768).",
)
@click.option(
    "--model-dir",
    # a str, as the settings field (SCOREPACK_MODEL_DIR) takes it: a Path was refused
    type=click.Path(file_okay=False),
    help="For a package: where its model files are, when not in its model/ folder (a "
    "container's mounted model, e.g. /mnt/models).",
)
@click.option(
    "--cors-origin",
    "cors_origins",
    multiple=True,
    callback=_keys,
    help="Let browsers on this origin call the server (CORS); give several, or '*' "
    "(the variable takes them comma-separated). Off by default.",
)
@click.option(
    "--otlp-endpoint",
    help="Trace every request with OpenTelemetry and export the spans over OTLP/HTTP to "
    "this URL (e.g. http://collector:4318/v1/traces), or 'console'. Off by default.",
)
@click.option(
    "--metrics/--no-metrics",
    default=True,
    show_default=True,
    help="Count requests, latencies and batches and serve them at GET /metrics "
    "(Prometheus). --no-metrics (as Triton's --allow-metrics=false): nothing is counted "
    "per request and /metrics answers 404.",
)
@click.option(
    "--access-log/--no-access-log",
    default=True,
    show_default=True,
    help="Log one line per answered request at INFO (request id, model, status, latency, "
    "batch size, queue wait). --no-access-log (as uvicorn's): none; other logs stay.",
)
@settings_file_option
@_legacy_azureml_options
@click.pass_context
def command(ctx: click.Context, **kw: Any) -> None:
    """Serve the model or scoring package at PATH on the embedded server: POST /score,
    the Open Inference Protocol (V2) under /v2, and V2 gRPC with --grpc-port.

    \b
    Three modes:
      scorepack serve MODEL                    a model
      scorepack serve PKG                      a package made by `scorepack build`
      scorepack serve A=MODEL B=PKG ...        several models (or --repository DIR);
                                               /score?model=A

    A package under azmlinfsrv, as Azure ML runs it, is `scorepack serve-azureml PKG`.
    The options below are grouped by the modes they apply to. Every option can also come
    from its SCOREPACK_* variable or a --settings file.
    """
    legacy = {name: kw.pop(name) for name in _LEGACY_AZUREML}
    models, repository_dir = kw.pop("models"), kw.pop("repository_dir")
    model_control = kw.pop("model_control")
    load_models = kw.pop("load_models")
    exit_on_error: bool | None = kw.pop("exit_on_error")
    if load_models and model_control != "explicit":
        raise click.UsageError("--load-model goes with --model-control explicit.")
    key_file = kw.pop("auth_key_file")
    settings: ServeSettings = load_settings(ctx, kw, _serve_settings_class(), SERVE_FIELDS)
    if legacy["runtime"] == "azureml":
        if model_control != "none":
            raise click.UsageError(
                "--model-control explicit serves models by name: NAME=PATH (a package too)."
            )
        _legacy_azureml(ctx, models, repository_dir, key_file, settings, legacy)
        return
    _refuse_legacy(ctx, legacy)
    # the key file's keys join the settings' own (--auth-key, SCOREPACK_AUTH_KEYS)
    settings = settings.model_copy(
        update={"auth_keys": _all_keys(ctx, settings.auth_keys, key_file)}
    )
    if len(models) == 1 and repository_dir is None and Path(models[0]).exists():
        path = models[0]
    elif not models and repository_dir is None:
        raise click.UsageError("Give a model: scorepack serve PATH (or NAME=PATH ...).")
    elif len(models) == 1 and repository_dir is None and "=" not in models[0]:
        raise click.UsageError(f"Path {models[0]!r} does not exist.")
    else:
        _serve_models(
            ctx, models, repository_dir, model_control, settings, load_models, exit_on_error
        )
        return
    args = _ServeArgs.of(path, settings)
    if model_control != "none" and is_package(args.path):
        raise click.UsageError(
            "--model-control explicit serves models by name: NAME=PATH (a package too)."
        )
    if is_package(args.path):
        _serve_package(args, settings, exit_on_error)
        return
    if args.model_dir is not None and ctx.get_parameter_source("model_dir") is (
        ParameterSource.COMMANDLINE
    ):
        raise click.UsageError("--model-dir goes with a package (PATH is a model itself).")
    config = checked(settings.scoring_config)
    try:
        spec = resolve_backend(args.path, args.backend)
    except UnknownFormatError as exc:
        if not Path(args.path).is_dir():
            raise
        # a folder of model folders is a repository: say how to serve one
        raise click.ClickException(
            f"{exc.message}\nA model repository folder (DIR/NAME/[VERSION/]model files) "
            f"is served with --repository {args.path}."
        ) from exc
    instance = create_backend(spec, args.path, args.device, args.backend_options)
    decode = settings.decode_settings()
    scorer = Scorer(instance, config, decode=decode)
    models_: Scorer | Repository = scorer
    if model_control == "explicit":
        # a repository of one that can unload the model and load a fresh one
        def create() -> Scorer:
            fresh = spec.create(args.path, device=args.device, options=args.backend_options)
            return Scorer(fresh, config, name=scorer.name, decode=decode)

        source = ModelSource(scorer.name, None, create)
        try:
            models_ = Repository(
                [source], model_control="explicit", load_at_start=load_models or None
            )
        except ValueError as exc:
            raise click.UsageError(str(exc)) from exc
    _serve_embedded(models_, f"{args.path} with {spec.name}", args, exit_on_error)


def _serve_settings_class() -> Any:
    from ..settings import ServeSettings

    return ServeSettings


def _refuse_legacy(ctx: click.Context, legacy: dict[str, Any]) -> None:
    """The old azmlinfsrv options without ``--runtime azureml``: a usage error."""
    given = [
        _flag(name)
        for name in _LEGACY_AZUREML
        if ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE
    ]
    if given:
        raise click.UsageError(
            f"{', '.join(given)}: a package under azmlinfsrv takes "
            f"{'this' if len(given) == 1 else 'these'}: scorepack serve-azureml PKG "
            f"{' '.join(given)} ..."
        )


def _legacy_azureml(
    ctx: click.Context,
    models: tuple[str, ...],
    repository_dir: Path | None,
    key_file: Path | None,
    settings: ServeSettings,
    legacy: dict[str, Any],
) -> None:
    """``serve PKG --runtime azureml``, the spelling before ``serve-azureml``: the same
    server, the same errors as before for the options that do not apply there."""
    from ..settings import AzureMLServeSettings

    say(
        "`serve PKG --runtime azureml` is deprecated; use "
        "`scorepack serve-azureml PKG` (it takes the same options, and only those that "
        "apply under azmlinfsrv).",
        warning=True,
    )
    if len(models) != 1 or repository_dir is not None or not Path(models[0]).exists():
        if not models and repository_dir is None:
            raise click.UsageError("Give a package: scorepack serve-azureml PKG.")
        if len(models) == 1 and repository_dir is None and "=" not in models[0]:
            raise click.UsageError(f"Path {models[0]!r} does not exist.")
        raise click.UsageError(
            "Several models are served by the embedded server only (no --runtime azureml, "
            "--isolated, --threads, --no-env-check or --model-dir)."
        )
    path = models[0]
    if not is_package(path):
        raise click.UsageError(
            "--runtime azureml (and --isolated, --threads) serve a scoring package; build one "
            f"first: scorepack build {path} -o PKG --device cpu"
        )
    fixed = settings.package_fixed()
    if fixed:
        raise click.UsageError(
            f"{', '.join(_flag(name) for name in fixed)}: a package fixes its preprocessing, "
            "labels and outputs; rebuild it with `scorepack build` to change them."
        )
    if ctx.get_parameter_source("model_dir") is ParameterSource.COMMANDLINE:
        raise click.UsageError(
            "--model-dir goes with the embedded runtime; under --runtime azureml the model "
            "is laid out where Azure ML puts it."
        )
    if settings.grpc_port is not None:
        raise click.UsageError(
            "--grpc-port does not apply to --runtime azureml: azmlinfsrv speaks HTTP only. "
            "Use the embedded runtime for V2 gRPC."
        )
    if settings.auth_keys or key_file is not None:
        raise click.UsageError(
            "--auth-key does not apply to --runtime azureml: azmlinfsrv checks no keys "
            "(Azure ML checks them at the endpoint). Use the embedded runtime to test keys."
        )
    if settings.backend_options:
        raise click.UsageError(
            "-O does not apply to --runtime azureml; rebuild the package with it."
        )
    embedded_only = sorted(
        name
        for name in settings.given()
        if name not in AZUREML_SERVE_FIELDS
        and ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE
    )
    if embedded_only:
        raise click.UsageError(
            f"{', '.join(_flag(name) for name in embedded_only)}: not options of a package "
            "under azmlinfsrv (scorepack serve-azureml PKG --help lists those)."
        )
    values = {k: v for k, v in settings.given().items() if k in AZUREML_SERVE_FIELDS}
    values.update({k: v for k, v in legacy.items() if k != "runtime" and v not in (None, False)})
    azureml = checked(lambda: AzureMLServeSettings.load(values))
    serve_package_azureml(ctx, path, azureml)


def _serve_models(
    ctx: click.Context,
    models: tuple[str, ...],
    repository_dir: Path | None,
    model_control: str,
    settings: ServeSettings,
    load_models: tuple[str, ...] = (),
    exit_on_error: bool | None = None,
) -> None:
    """Several models (NAME=PATH and/or --repository) from one embedded server."""
    args = _ServeArgs.of("", settings)
    if args.model_dir is not None:
        raise click.UsageError(
            "--model-dir goes with one package; with several models, each NAME=PATH names "
            "its own files."
        )
    repository = repository_from(
        models,
        repository_dir,
        defaults=checked(settings.scoring_config),
        backend=args.backend,
        # a package keeps its own device unless --device is given, as with one package
        device=args.device if "device" in settings.model_fields_set else None,
        backend_options=args.backend_options,
        model_control=model_control,
        decode=settings.decode_settings(),
        load_at_start=load_models or None,
    )
    names = ", ".join(repository.names)
    what = f"{len(repository.names)} models ({names})"
    if not repository.names:
        what = (
            f"an empty model repository ({repository_dir}; load models with "
            "POST /v2/repository/models/NAME/load)"
        )
    _serve_embedded(repository, what, args, exit_on_error)


def read_key_file(path: Path) -> tuple[str, ...]:
    """The keys in a key file: one per line; blank lines and ``#`` comments are skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise click.BadParameter(
            f"cannot read {path}: {exc.strerror}", param_hint="--auth-key-file"
        ) from exc
    keys = tuple(
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )
    if not keys:
        raise click.BadParameter(f"{path} holds no key", param_hint="--auth-key-file")
    if path.stat().st_mode & 0o077:
        say(f"{path} can be read by other users; chmod 600 it.", warning=True)
    return keys


def _all_keys(ctx: click.Context, given: tuple[str, ...], path: Path | None) -> tuple[str, ...]:
    """Keys from --auth-key-file (or SCOREPACK_AUTH_KEY_FILE) and the settings' keys
    (--auth-key, SCOREPACK_AUTH_KEYS); a key typed on the command line earns a warning."""
    if given and ctx.get_parameter_source("auth_keys") == ParameterSource.COMMANDLINE:
        say(
            "--auth-key puts the key in the process list, where every "
            "local user can read it; use --auth-key-file or SCOREPACK_AUTH_KEYS instead.",
            warning=True,
        )
    return (read_key_file(path) if path is not None else ()) + given


@dataclass(frozen=True)
class _ServeArgs:
    """The options of ``serve`` beyond the scoring settings, in one place."""

    path: str
    backend: str | None
    device: str
    backend_options: dict[str, Any]
    host: str
    port: int
    grpc_port: int | None
    #: --max-body-bytes as given (None: the default), for the gRPC message limit
    max_body_bytes: int | None
    auth_keys: tuple[str, ...]
    graceful_timeout: float
    model_dir: Path | None
    cors_origins: tuple[str, ...]
    otlp_endpoint: str | None
    metrics: bool
    access_log: bool
    #: header limits, the read deadline and the drain period
    limits: HttpLimits

    @classmethod
    def of(cls, path: str, settings: ServeSettings) -> _ServeArgs:
        """The server's arguments from the settings, with the server's defaults."""
        return cls(
            path=path,
            backend=settings.backend,
            device=settings.device,
            backend_options=dict(settings.backend_options),
            host=settings.host if settings.host is not None else DEFAULT_HOST,
            port=settings.port if settings.port is not None else DEFAULT_PORT,
            grpc_port=settings.grpc_port,
            max_body_bytes=settings.max_body_bytes,
            auth_keys=settings.auth_keys,
            graceful_timeout=(
                settings.graceful_timeout if settings.graceful_timeout is not None else 30.0
            ),
            model_dir=Path(settings.model_dir) if settings.model_dir is not None else None,
            cors_origins=settings.cors_origins,
            otlp_endpoint=settings.otlp_endpoint,
            metrics=settings.metrics,
            access_log=settings.access_log,
            limits=checked(lambda: HttpLimits.from_settings(settings)),
        )


def _serve_embedded(
    scorer: Scorer | Repository,
    what: str,
    args: _ServeArgs,
    exit_on_error: bool | None = None,
) -> None:
    def listening(url: str) -> None:
        say(f"serving {what} at {url}/score (model loading…)")
        if args.auth_keys:
            say("keys required (Authorization: Bearer KEY)")

    if args.otlp_endpoint:
        from ..telemetry import tracing

        tracing.configure(args.otlp_endpoint, service_name=getattr(scorer, "name", "scorepack"))

    def grpc_listening(address: str) -> None:
        say(f"serving V2 gRPC at grpc://{address}")

    grpc = None
    if args.grpc_port is not None:
        # one limit for the transport: the model's, or with several the largest default
        # (a model's own settings may raise it; each model still checks its own)
        if isinstance(scorer, Scorer):
            limit = scorer.config.max_body_bytes
        else:
            limit = max(DEFAULT_MAX_BODY_BYTES, args.max_body_bytes or 0)
        grpc = GrpcOptions(args.grpc_port, max_message_bytes=limit)
    serve(
        scorer,
        host=args.host,
        port=args.port,
        auth_keys=args.auth_keys,
        graceful_timeout=args.graceful_timeout,
        cors_origins=args.cors_origins,
        on_listening=listening,
        grpc=grpc,
        on_grpc_listening=grpc_listening,
        limits=args.limits,
        metrics=args.metrics,
        access_log=args.access_log,
        exit_on_error=exit_on_error,
    )


def _serve_package(
    args: _ServeArgs, settings: ServeSettings, exit_on_error: bool | None = None
) -> None:
    fixed = settings.package_fixed()
    if fixed:
        raise click.UsageError(
            f"{', '.join(_flag(name) for name in fixed)}: a package fixes its preprocessing, "
            "labels and outputs; rebuild it with `scorepack build` to change them."
        )
    chosen_device = args.device if "device" in settings.model_fields_set else None
    from ..manifest import load_manifest

    spec = load_manifest(args.path)
    if spec.models:
        _serve_several(spec, args, settings, chosen_device, exit_on_error)
        return
    scorer = open_package(
        args.path,
        model_dir=args.model_dir,
        backend=args.backend,
        device=chosen_device,
        options=args.backend_options,
        config=checked(lambda: settings.apply(spec.config)),
        decode=settings.decode_settings(),
    )
    _serve_embedded(scorer, f"the package {spec.name} ({spec.backend})", args, exit_on_error)


def _serve_several(
    spec: Any,
    args: _ServeArgs,
    settings: ServeSettings,
    device: str | None,
    exit_on_error: bool | None = None,
) -> None:
    """A package of several models on the embedded server: one repository entry each."""
    from ..manifest import MODEL_DIR, MODELS_DIR

    if args.backend or args.backend_options:
        raise click.UsageError(
            "--backend and -O do not apply to a package of several models: each model keeps "
            "its own; rebuild the package to change them."
        )
    package = Path(args.path)
    files = Path(args.model_dir) if args.model_dir is not None else package / MODEL_DIR

    def source(model: Any) -> ModelSource:
        config = checked(lambda: settings.apply(model.config))

        def create() -> Scorer:
            return open_package(
                package / MODELS_DIR / model.name,
                model_dir=files / model.name,
                device=device,
                config=config,
                name=model.name,
                decode=settings.decode_settings(),
            )

        return ModelSource(model.name, None, create, origin=str(files / model.name))

    repository = Repository([source(m) for m in spec.models])
    names = ", ".join(repository.names)
    _serve_embedded(repository, f"the package {spec.name} ({names})", args, exit_on_error)


def _flag(name: str) -> str:
    """The command-line flag of a settings field, for messages."""
    flags = {p.name: p.opts[0] for p in command.params if p.name}
    return flags.get(name, name)
