"""``scorepack serve PATH``: a model or a scoring package over HTTP.

PATH is a model (served by the embedded server) or a package made by ``scorepack build``,
served by the embedded server (``--runtime embedded``, the default) or by Microsoft's
azmlinfsrv running the package's ``score.py`` as Azure ML does (``--runtime azureml``).
``--help`` shows the options by the mode they apply to (:mod:`.sections`).
Several models — ``NAME=PATH ...`` and/or ``--repository DIR`` — are served by the embedded
server from one repository (``serve_models.py``); ``/score?model=NAME`` picks one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

from ..codecs import DEFAULT_MAX_BODY_BYTES
from ..loading import open_package, resolve_backend
from ..manifest import is_package
from ..parsing import SERVE_FIELDS, env_name, parse_keys
from ..repository import MODEL_CONTROL_MODES, ModelSource, Repository
from ..scorer import Scorer
from ..server import DEFAULT_HOST, DEFAULT_PORT, serve
from ..server.grpc_v2 import GrpcOptions
from .options import create_backend, model_flags, scoring_options
from .sections import SectionedCommand
from .serve_models import repository_from

if TYPE_CHECKING:
    from ..settings import ServeSettings


def _keys(_ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    return parse_keys(value)


class _SettingsOption(click.Option):
    """A ``serve`` option whose ``SCOREPACK_*`` variable the settings object reads.

    ``--help`` shows the variable, but click leaves it alone: the environment is parsed
    once, by :class:`~scorepack.settings.ServeSettings`, as under azmlinfsrv.
    """

    def resolve_envvar_value(self, ctx: click.Context) -> str | None:
        return None


def _with_settings(command: click.Command) -> click.Command:
    """Give every ``serve`` option its ``SCOREPACK_*`` variable, shown in ``--help``.

    Options that are settings fields are read by the settings object; any other option
    (one added later, or by a plugin) keeps click's own reading of the variable.
    """
    for param in command.params:
        if not isinstance(param, click.Option) or param.name is None or param.hidden:
            continue
        if param.name in SERVE_FIELDS:
            param.__class__ = _SettingsOption
            param.envvar = env_name(param.name)
        elif not param.envvar and param.name != "settings_file":
            param.envvar = env_name(param.name)
        param.show_envvar = True
    return command


@_with_settings
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
@scoring_options
@click.option(
    "--host",
    default=DEFAULT_HOST,
    show_default=True,
    envvar="SCOREPACK_HOST",
    help="Address to bind (0.0.0.0 in a container).",
)
@click.option(
    "--port",
    type=int,
    default=DEFAULT_PORT,
    show_default=True,
    envvar="SCOREPACK_PORT",
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
    envvar="SCOREPACK_AUTH_KEYS",
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
@click.option(
    "--metrics-port",
    type=click.IntRange(min=0, max=65535),
    help="With --runtime azureml: the port of the Prometheus metrics endpoint "
    "(default: a free one; deployments use 8002). The embedded server has /metrics.",
)
@click.option(
    "--cors-origin",
    "cors_origins",
    multiple=True,
    callback=_keys,
    help="Let browsers on this origin call the server (CORS); give several, or '*' "
    "(the variable takes them comma-separated). Off by default. Under azmlinfsrv it "
    "becomes AML_CORS_ORIGINS.",
)
@click.option(
    "--otlp-endpoint",
    help="Trace every request with OpenTelemetry and export the spans over OTLP/HTTP to "
    "this URL (e.g. http://collector:4318/v1/traces), or 'console'. Off by default.",
)
@click.option(
    "--settings",
    "settings_file",
    type=click.Path(exists=True, dir_okay=False),
    envvar="SCOREPACK_SETTINGS",
    show_envvar=True,
    help="A YAML or JSON file of settings, keyed by the names of the SCOREPACK_* "
    "variables without the prefix, in lower case (max_batch_size: 16). The command line "
    "wins over the environment, which wins over the file.",
)
@click.pass_context
def command(ctx: click.Context, **kw: Any) -> None:
    """Serve the model or scoring package at PATH over HTTP (POST /score, and V2 under /v2).

    \b
    Four modes:
      scorepack serve MODEL                    a model, on the embedded server
      scorepack serve PKG                      a built package, on the embedded server
      scorepack serve PKG --runtime azureml    a built package under azmlinfsrv, as
                                               Azure ML runs it
      scorepack serve A=MODEL B=PKG ...        several models (or --repository DIR) on
                                               the embedded server; /score?model=A

    The options below are grouped by the modes they apply to. Every option can also come
    from its SCOREPACK_* variable or a --settings file.
    """
    models, repository_dir = kw.pop("models"), kw.pop("repository_dir")
    model_control = kw.pop("model_control")
    key_file = kw.pop("auth_key_file")
    settings = _settings(ctx, kw)
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
        _serve_models(ctx, models, repository_dir, model_control, settings)
        return
    args = _ServeArgs.of(path, settings)
    if model_control != "none" and (is_package(args.path) or args.runtime != "embedded"):
        raise click.UsageError(
            "--model-control explicit serves models by name: NAME=PATH (a package too)."
        )
    if is_package(args.path):
        _serve_package(ctx, args, settings)
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
    config = _checked(settings.scoring_config)
    spec = resolve_backend(args.path, args.backend)
    instance = create_backend(spec, args.path, args.device, args.backend_options)
    scorer = Scorer(instance, config)
    models_: Scorer | Repository = scorer
    if model_control == "explicit":
        # a repository of one that can unload the model and load a fresh one
        def create() -> Scorer:
            fresh = spec.create(args.path, device=args.device, options=args.backend_options)
            return Scorer(fresh, config, name=scorer.name)

        models_ = Repository([ModelSource(scorer.name, None, create)], model_control="explicit")
    _serve_embedded(models_, f"{args.path} with {spec.name}", args)


def _serve_models(
    ctx: click.Context,
    models: tuple[str, ...],
    repository_dir: Path | None,
    model_control: str,
    settings: ServeSettings,
) -> None:
    """Several models (NAME=PATH and/or --repository) from one embedded server."""
    args = _ServeArgs.of("", settings)
    azureml = args.runtime != "embedded" or args.isolated or args.threads is not None
    if azureml or args.no_env_check or args.model_dir is not None:
        raise click.UsageError(
            "Several models are served by the embedded server only (no --runtime azureml, "
            "--isolated, --threads, --no-env-check or --model-dir)."
        )
    repository = repository_from(
        models,
        repository_dir,
        defaults=_checked(settings.scoring_config),
        backend=args.backend,
        device=args.device,
        backend_options=args.backend_options,
        model_control=model_control,
    )
    names = ", ".join(repository.names)
    _serve_embedded(repository, f"{len(repository.names)} models ({names})", args)


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
        click.echo(
            f"scorepack: warning: {path} can be read by other users; chmod 600 it.", err=True
        )
    return keys


def _all_keys(ctx: click.Context, given: tuple[str, ...], path: Path | None) -> tuple[str, ...]:
    """Keys from --auth-key-file (or SCOREPACK_AUTH_KEY_FILE) and the settings' keys
    (--auth-key, SCOREPACK_AUTH_KEYS); a key typed on the command line earns a warning."""
    if given and ctx.get_parameter_source("auth_keys") == ParameterSource.COMMANDLINE:
        click.echo(
            "scorepack: warning: --auth-key puts the key in the process list, where every "
            "local user can read it; use --auth-key-file or SCOREPACK_AUTH_KEYS instead.",
            err=True,
        )
    return (read_key_file(path) if path is not None else ()) + given


def _settings(ctx: click.Context, kw: dict[str, Any]) -> ServeSettings:
    """The one settings object: the options given on the command line (popped from
    ``kw``), over the ``SCOREPACK_*`` variables, over the --settings file."""
    from ..settings import ServeSettings, SettingsError, flags_of

    file = kw.pop("settings_file")
    given = {
        name: kw.pop(name)
        for name in list(kw)
        if name in SERVE_FIELDS and ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE
    }
    for name in SERVE_FIELDS & set(kw):  # defaults: the settings object has its own
        kw.pop(name)
    try:
        settings: ServeSettings = ServeSettings.load(
            given, file=file, flags=flags_of(ctx.command.params)
        )
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from exc
    return settings


def _checked(make: Any) -> Any:
    from ..settings import SettingsError

    try:
        return make()
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from exc


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
    runtime: str
    isolated: bool
    threads: int | None
    no_env_check: bool
    model_dir: Path | None
    metrics_port: int | None
    cors_origins: tuple[str, ...]
    otlp_endpoint: str | None

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
            runtime=settings.runtime,
            isolated=settings.isolated,
            threads=settings.threads,
            no_env_check=settings.no_env_check,
            model_dir=Path(settings.model_dir) if settings.model_dir is not None else None,
            metrics_port=settings.metrics_port,
            cors_origins=settings.cors_origins,
            otlp_endpoint=settings.otlp_endpoint,
        )


def _serve_embedded(scorer: Scorer | Repository, what: str, args: _ServeArgs) -> None:
    if args.metrics_port is not None:
        raise click.UsageError(
            "--metrics-port goes with --runtime azureml; the embedded server serves "
            "/metrics on its own port."
        )

    def listening(url: str) -> None:
        click.echo(f"scorepack: serving {what} at {url}/score (model loading…)", err=True)
        if args.auth_keys:
            click.echo("scorepack: keys required (Authorization: Bearer KEY)", err=True)

    if args.otlp_endpoint:
        from ..telemetry import tracing

        tracing.configure(args.otlp_endpoint, service_name=getattr(scorer, "name", "scorepack"))

    def grpc_listening(address: str) -> None:
        click.echo(f"scorepack: serving V2 gRPC at grpc://{address}", err=True)

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
    )


def _serve_package(ctx: click.Context, args: _ServeArgs, settings: ServeSettings) -> None:
    fixed = settings.package_fixed()
    if fixed:
        raise click.UsageError(
            f"{', '.join(_flag(name) for name in fixed)}: a package fixes its preprocessing, "
            "labels and outputs; rebuild it with `scorepack build` to change them."
        )
    chosen_device = args.device if "device" in settings.model_fields_set else None
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
            config=_checked(lambda: settings.apply(spec.config)),
        )
        _serve_embedded(scorer, f"the package {spec.name} ({spec.backend})", args)
        return
    if ctx.get_parameter_source("model_dir") is ParameterSource.COMMANDLINE:
        raise click.UsageError(
            "--model-dir goes with the embedded runtime; under --runtime azureml the model "
            "is laid out where Azure ML puts it."
        )
    if args.grpc_port is not None:
        raise click.UsageError(
            "--grpc-port does not apply to --runtime azureml: azmlinfsrv speaks HTTP only. "
            "Use the embedded runtime for V2 gRPC."
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

    environ = dict(settings.environ())
    root = ctx.find_root().params
    environ["SCOREPACK_LOG_FORMAT"] = str(root.get("log_format", "text")).lower()
    environ["SCOREPACK_LOG_LEVEL"] = str(root.get("log_level", "info")).lower()
    if args.otlp_endpoint:
        environ["SCOREPACK_OTLP_ENDPOINT"] = args.otlp_endpoint
    options = AzureMLServe(
        package=Path(args.path),
        host=args.host,
        port=args.port or free_port(args.host),
        device=chosen_device,
        threads=args.threads,
        isolated=args.isolated,
        check_env=not args.no_env_check,
        metrics_port=args.metrics_port,
        cors_origins=args.cors_origins,
        environ=environ,
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


def _flag(name: str) -> str:
    """The command-line flag of a settings field, for messages."""
    flags = {p.name: p.opts[0] for p in command.params if p.name}
    return flags.get(name, name)
