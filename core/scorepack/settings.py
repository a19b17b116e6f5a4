"""One typed settings object for serving, fed by the command line, ``SCOREPACK_*``
environment variables and an optional settings file (YAML or JSON).

The classes nest by where a setting applies:

    ScorerSettings .............. how every scorer in the process decodes: threads,
    │                             lookahead, priority (read when a scorer is made)
    └── RuntimeSettings ......... + what a built package still takes when served, on
        │                         either host: batching, limits, top-k, read timeout
        ├── PackageSettings ..... + what a package reads under azmlinfsrv (its init()
        │                         and gunicorn worker): upload buffer, device, metrics,
        │                         logs, tracing, model folder
        ├── AzureMLServeSettings  + ``scorepack serve-azureml``: the host's address,
        │                         threads, environment, metrics port
        └── ScoringSettings ..... + preprocessing, labels, the classifier output: how a
            │                     model is scored (a package fixes these when built)
            └── ServeSettings ... + the embedded server (host, port, keys, header limits,
                                  drain…), the backend and device

Every ``SCOREPACK_*`` variable scorepack reads is a field of one of these, except the
few read before any settings exist (``SCOREPACK_STRICT_PLUGINS``, while the CLI itself is
being built from the plugins; ``SCOREPACK_CACHE_DIR``, a per-user cache folder beside
``XDG_CACHE_HOME``) and the client commands' ``SCOREPACK_KEY``, an option of ``score``
and ``bench``, which serve nothing.

Each field's environment variable is ``SCOREPACK_`` + its name in capitals
(``max_batch_size`` → ``SCOREPACK_MAX_BATCH_SIZE``); a settings file uses the field
names as keys. Precedence, highest first: command line, environment, settings file,
defaults. A field left ``None`` means "the default" (or, for a package, "what the
package says"), so the defaults live in one place: the config dataclasses.

Parsing of the compound forms (``224`` or ``256x192`` for a size, ``0.5,0.5,0.5`` for
per-channel numbers, ``a,b`` for keys, ``KEY=VALUE`` for backend options) lives here
and nowhere else; the CLI's callbacks call the same functions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from .batching import BatchingConfig
from .config import ScoringConfig
from .decoding import DecodeSettings
from .device import Device
from .parsing import (
    AZUREML_SERVE_FIELDS,
    DECODE_FIELDS,
    ENV_PREFIX,
    LIMIT_FIELDS,
    PREPROCESS_FIELDS,
    SERVE_FIELDS,
    env_name,
    parse_floats,
    parse_keys,
    parse_option_items,
    parse_preferred_batch_size,
    parse_size,
)
from .postprocess import PostprocessConfig, read_labels
from .preprocess import PRESETS, PreprocessConfig

__all__ = [
    "AZUREML_SERVE_FIELDS",
    "ENV_PREFIX",
    "SERVE_FIELDS",
    "AzureMLServeSettings",
    "PackageSettings",
    "RuntimeSettings",
    "ScorerSettings",
    "ScoringSettings",
    "ServeSettings",
    "SettingsError",
    "env_name",
    "flags_of",
    "read_settings_file",
]


class SettingsError(ValueError):
    """Settings that do not validate; the message names each bad setting and its source
    forms (``--flag`` / ``SCOREPACK_VAR`` / file key). The CLI shows it as a usage error,
    a package under azmlinfsrv as a start-up error."""


def read_settings_file(path: str | Path) -> dict[str, Any]:
    """A settings file's mapping (YAML, of which JSON is a subset)."""
    file = Path(path)
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingsError(f"cannot read the settings file {file}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise SettingsError(f"the settings file {file} is not valid YAML or JSON: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsError(
            f"the settings file {file} must hold a mapping of setting: value, "
            f"not a {type(data).__name__}"
        )
    return {str(k).replace("-", "_"): v for k, v in data.items()}


class _MappingEnvSource(EnvSettingsSource):
    """The ``SCOREPACK_*`` variables of a given mapping instead of ``os.environ`` (the
    azmlinfsrv runtime passes the environment it was given)."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {k.lower(): v for k, v in self._environ.items() if v.strip()}


class _FileSource(PydanticBaseSettingsSource):
    """The settings file's values, below the environment and the command line."""

    def __init__(self, settings_cls: type[BaseSettings], values: Mapping[str, Any]) -> None:
        super().__init__(settings_cls)
        self.values = dict(values)

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self.values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self.values)


# --- the settings -------------------------------------------------------------------------


class ScorerSettings(BaseSettings):
    """How every scorer in the process decodes requests (see :mod:`scorepack.decoding`):
    the root of the settings classes, which holds how they are loaded."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_ignore_empty=True,
        extra="forbid",
        frozen=True,
    )

    decode_threads: int | None = Field(
        None, ge=1, description="decode threads (default: one per usable core)"
    )
    decode_lookahead: int | None = Field(
        None,
        ge=0,
        description="requests decoded ahead of the model (default: two batches; 0: no bound)",
    )
    decode_nice: int | None = Field(
        None,
        ge=0,
        le=19,
        description="how much decode threads lower their priority on Linux (default 10; 0: not)",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # command line (init) over the environment over the settings file; no .env files
        # or secret directories: scorepack never read those, and a surprise source is worse
        environ = _ENVIRON.get()
        if environ is not None:
            env_settings = _MappingEnvSource(settings_cls, environ)
        return (init_settings, env_settings, _FileSource(settings_cls, _FILE_VALUES.get() or {}))

    @classmethod
    def load(
        cls,
        given: Mapping[str, Any] | None = None,
        *,
        file: str | Path | None = None,
        flags: Mapping[str, str] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Any:
        """Settings from ``given`` (the command line), the environment (``os.environ``
        unless ``environ`` is given) and ``file``.

        Raises :class:`SettingsError` naming every bad setting by ``flags`` (field →
        command-line flag), its variable and its file key.
        """
        values = read_settings_file(file) if file is not None else {}
        unknown = sorted(set(values) - set(cls.model_fields))
        if unknown:
            raise SettingsError(
                f"the settings file {file} has unknown setting(s): {', '.join(unknown)}; "
                f"valid ones: {', '.join(sorted(cls.model_fields))}"
            )
        file_token = _FILE_VALUES.set(values)
        env_token = _ENVIRON.set(environ)
        try:
            return cls(**{k: v for k, v in (given or {}).items() if v is not None})
        except ValidationError as exc:
            raise SettingsError(_describe(exc, flags or {}, file)) from None
        finally:
            _FILE_VALUES.reset(file_token)
            _ENVIRON.reset(env_token)

    def given(self) -> dict[str, Any]:
        """The settings that were set (by any source), with their values."""
        return {name: getattr(self, name) for name in sorted(self.model_fields_set)}

    def decode_settings(self) -> DecodeSettings:
        """The decode stage's settings (``None``: automatic)."""
        return DecodeSettings(
            threads=self.decode_threads, lookahead=self.decode_lookahead, nice=self.decode_nice
        )


class RuntimeSettings(ScorerSettings):
    """Scoring settings a built package still takes at serve time, from ``SCOREPACK_*``
    variables (``scorepack serve PKG`` passes its options on as these): batching, input
    limits, top-k, decoding and how long a request may take to arrive. ``None``: what
    the package (or the default) says."""

    #: the fields a package takes at serve time (the others it fixes when built)
    RUNTIME_FIELDS: ClassVar[tuple[str, ...]] = (
        *LIMIT_FIELDS,
        "top_k",
        *DECODE_FIELDS,
        "read_timeout_s",
    )

    max_batch_size: int | None = Field(None, ge=1, description="most rows in one model call")
    preferred_batch_size: int | Literal["auto", "off"] | None = Field(
        None,
        description="rows a batch gathers: auto (tuned under load to the fastest per "
        "row), off (up to max_batch_size) or N",
    )
    max_delay_ms: float | None = Field(
        None, ge=0, description="longest a request waits for batch-mates"
    )
    max_queue_size: int | None = Field(None, ge=1, description="requests waiting at most")
    timeout_ms: float | None = Field(None, gt=0, description="a request not scored by then: 504")
    max_body_bytes: int | None = Field(None, ge=1, description="larger bodies: 413")
    max_image_pixels: int | None = Field(None, ge=1, description="larger images: 413")
    top_k: int | None = Field(None, ge=1, description="classes returned per row")
    read_timeout_s: float | None = Field(
        None,
        gt=0,
        description="seconds a begun request may go without a byte arriving; then 408 (default 60)",
    )

    @field_validator("preferred_batch_size", mode="before")
    @classmethod
    def _preferred(cls, value: Any) -> Any:
        return None if value is None else parse_preferred_batch_size(value)

    def runtime_given(self) -> dict[str, Any]:
        """The runtime settings that were set: what a package takes at serve time."""
        return {k: v for k, v in self.given().items() if k in self.RUNTIME_FIELDS}

    def apply(self, config: ScoringConfig) -> ScoringConfig:
        """``config`` with the runtime settings that were set applied."""
        given = self.runtime_given()
        batching = {k: v for k, v in given.items() if k in BatchingConfig.__dataclass_fields__}
        top = {k: v for k, v in given.items() if k in ("max_body_bytes", "max_image_pixels")}
        post = {"top_k": given["top_k"]} if "top_k" in given else {}
        try:
            return replace(
                config,
                batching=replace(config.batching, **batching),
                postprocess=replace(config.postprocess, **post),
                **top,
            )
        except ValueError as exc:
            raise SettingsError(str(exc)) from exc

    def environ(self) -> dict[str, str]:
        """The ``SCOREPACK_*`` variables that carry the runtime settings that were set
        (to a package's score.py under azmlinfsrv)."""
        return {env_name(k): str(v) for k, v in self.runtime_given().items()}


class PackageSettings(RuntimeSettings):
    """What a package reads under azmlinfsrv (its ``init()`` and its gunicorn worker,
    :mod:`scorepack.azureml.worker`): :class:`RuntimeSettings` plus the worker's upload
    buffer, the device, the metrics endpoint, logs (access lines among them), tracing and
    where the model is."""

    upload_buffer_bytes: int | None = Field(
        None, ge=1, description="bytes of requests still arriving held at once (default 256 MiB)"
    )
    device: str | None = Field(
        None, description="auto, cpu, cuda or cuda:N (default: the package's)"
    )
    model_dir: str | None = Field(
        None, description="the model files, when not where Azure ML puts them"
    )
    metrics_port: int | None = Field(
        None, ge=0, le=65535, description="serve Prometheus metrics on this port; unset or 0: none"
    )
    metrics_addr: str = Field("0.0.0.0", description="the address the metrics port binds")
    log_format: Literal["text", "json"] = Field("text", description="log lines as text or JSON")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="how much scorepack logs"
    )
    otlp_endpoint: str | None = Field(
        None, description="OTLP/HTTP URL traces go to, or 'console'; none: tracing off"
    )
    access_log: bool = Field(
        True, description="one log line per answered request, at INFO; off: none"
    )

    @field_validator("log_format", "log_level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("device")
    @classmethod
    def _device(cls, value: str | None) -> str | None:
        if value is not None:
            Device.parse(value)  # raises ValueError with the reason
        return value


class AzureMLServeSettings(RuntimeSettings):
    """Everything ``scorepack serve-azureml PKG`` takes: :class:`RuntimeSettings` (passed
    on to the package as its ``SCOREPACK_*`` variables) plus where azmlinfsrv listens, its
    threads and environment, the metrics port, CORS, access lines and tracing."""

    host: str | None = Field(None, description="address to bind")
    port: int | None = Field(None, ge=0, le=65535, description="port; 0 picks a free one")
    device: str | None = Field(
        None, description="auto, cpu, cuda or cuda:N (default: the package's)"
    )
    threads: int | None = Field(None, ge=1, description="gunicorn threads (default: the package's)")
    isolated: bool = Field(False, description="run in a fresh virtual environment")
    no_env_check: bool = Field(False, description="serve even when versions differ from the pins")
    metrics_port: int | None = Field(
        None, ge=0, le=65535, description="the Prometheus metrics port (default: a free one)"
    )
    upload_buffer_bytes: int | None = Field(
        None, ge=1, description="bytes of requests still arriving held at once (default 256 MiB)"
    )
    cors_origins: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(), description="origins browsers may call from (CORS); none: off"
    )
    otlp_endpoint: str | None = Field(
        None, description="OTLP/HTTP URL traces go to, or 'console'; none: tracing off"
    )
    access_log: bool = Field(
        True, description="one log line per answered request, at INFO; off: none"
    )

    @field_validator("device")
    @classmethod
    def _device(cls, value: str | None) -> str | None:
        if value is not None:
            Device.parse(value)  # raises ValueError with the reason
        return value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _origins(cls, value: Any) -> Any:
        return parse_keys(value)

    def package_environ(self) -> dict[str, str]:
        """The ``SCOREPACK_*`` variables the package's ``init()`` and worker read
        (:class:`PackageSettings`) for the settings that were set here."""
        environ = self.environ()
        if self.upload_buffer_bytes is not None:
            environ[env_name("upload_buffer_bytes")] = str(self.upload_buffer_bytes)
        if self.otlp_endpoint:
            environ[env_name("otlp_endpoint")] = self.otlp_endpoint
        if not self.access_log:
            environ[env_name("access_log")] = "false"
        return environ


class ScoringSettings(RuntimeSettings):
    """How a model is scored: :class:`RuntimeSettings` plus preprocessing, labels and
    the classifier output (a package fixes these when it is built)."""

    preset: str | None = Field(None, description="pixel normalisation preset")
    image_input: str | None = Field(None, description="the input that takes images")
    image_size: tuple[int, int] | None = Field(None, description="N or HxW")
    layout: Literal["NHWC", "NCHW"] | None = None
    resize: Literal["stretch", "crop"] | None = None
    crop_ratio: float | None = Field(None, gt=0, le=1)
    color: Literal["RGB", "BGR"] | None = None
    scale: float | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    exact_decode: bool | None = None
    labels: str | None = Field(None, description="a file with one label per line")
    classifier_output: str | None = Field(None, description="the output holding class scores")

    @field_validator("image_size", mode="before")
    @classmethod
    def _size(cls, value: Any) -> Any:
        return parse_size(value)

    @field_validator("mean", "std", mode="before")
    @classmethod
    def _floats(cls, value: Any) -> Any:
        return parse_floats(value)

    @field_validator("layout", "color", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("preset")
    @classmethod
    def _preset(cls, value: str | None) -> str | None:
        if value is not None and value not in PRESETS:
            raise ValueError(f"use one of {', '.join(sorted(PRESETS))}")
        return value

    def scoring_config(self) -> ScoringConfig:
        """The :class:`~scorepack.config.ScoringConfig` these settings describe, with the
        dataclasses' defaults for whatever was not set."""
        given = self.given()
        pre = {
            "input" if k == "image_input" else "size" if k == "image_size" else k: v
            for k, v in given.items()
            if k in _PREPROCESS_FIELDS
        }
        post: dict[str, Any] = {}
        if "classifier_output" in given:
            post["output"] = given["classifier_output"]
        if "labels" in given:
            post["labels"] = read_labels(given["labels"])
        try:
            config = ScoringConfig(
                preprocess=PreprocessConfig(**pre), postprocess=PostprocessConfig(**post)
            )
        except ValueError as exc:
            raise SettingsError(str(exc)) from exc
        return self.apply(config)


_PREPROCESS_FIELDS = frozenset(PREPROCESS_FIELDS)


class ServeSettings(ScoringSettings):
    """Everything ``scorepack serve`` takes: :class:`ScoringSettings` plus the embedded
    server (address, keys, gRPC, CORS, metrics, access lines, tracing, header limits,
    shutdown) and the backend and device."""

    backend: str | None = Field(None, description="backend name (detected when left out)")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    backend_options: Annotated[dict[str, Any], NoDecode] = Field(
        default_factory=dict, description="backend options, KEY=VALUE"
    )
    host: str | None = Field(None, description="address to bind")
    port: int | None = Field(None, ge=0, le=65535, description="port; 0 picks a free one")
    grpc_port: int | None = Field(
        None, ge=0, le=65535, description="V2 gRPC port (off when unset); 0 picks a free one"
    )
    auth_keys: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(), description="keys clients must send as 'Authorization: Bearer KEY'"
    )
    graceful_timeout: float | None = Field(
        None, ge=0, description="seconds in-flight requests get to finish on SIGTERM"
    )
    drain_seconds: float | None = Field(
        None,
        ge=0,
        description="on SIGTERM, seconds readiness answers 503 while requests are still "
        "served, before the listener closes (default 0)",
    )
    max_header_count: int | None = Field(
        None, ge=1, description="header fields in one request; more: 431 (default 100)"
    )
    max_header_bytes: int | None = Field(
        None, ge=1, description="bytes of all request headers together; more: 431 (default 32 KiB)"
    )
    model_dir: str | None = Field(None, description="a package's model files, elsewhere")
    cors_origins: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(), description="origins browsers may call from (CORS); none: off"
    )
    otlp_endpoint: str | None = Field(
        None, description="OTLP/HTTP URL traces go to, or 'console'; none: tracing off"
    )
    metrics: bool = Field(
        True,
        description="count requests for Prometheus and serve GET /metrics; off: nothing "
        "counted per request, no /metrics (404)",
    )
    access_log: bool = Field(
        True, description="one log line per answered request, at INFO; off: none"
    )

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        Device.parse(value)  # raises ValueError with the reason
        return value

    @field_validator("backend_options", mode="before")
    @classmethod
    def _options(cls, value: Any) -> Any:
        return parse_option_items(value)

    @field_validator("auth_keys", "cors_origins", mode="before")
    @classmethod
    def _keys(cls, value: Any) -> Any:
        return parse_keys(value)

    def package_fixed(self) -> list[str]:
        """Settings that were set but that a package fixes when it is built."""
        return sorted(
            k
            for k in self.model_fields_set
            if k in ScoringSettings.model_fields and k not in self.RUNTIME_FIELDS
        )


# the settings file's values while one load() runs (a context variable, so concurrent
# loads in threads cannot see each other's files)
_FILE_VALUES: ContextVar[dict[str, Any] | None] = ContextVar("scorepack_file", default=None)
_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("scorepack_environ", default=None)


def _describe(exc: ValidationError, flags: Mapping[str, str], file: str | Path | None) -> str:
    """One line per bad setting, naming the ways it can be given, and the value."""
    lines = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        names = [n for n in (flags.get(field), env_name(field) if field else None) if n]
        if file is not None and field:
            names.append(f"{field} in {file}")
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "not a setting"
        elif "input" in error:
            message += f", not {error['input']!r}"
        lines.append(f"{' / '.join(names)}: {message}" if names else message)
    return "invalid settings: " + "; ".join(lines)


def flags_of(params: Iterable[Any]) -> dict[str, str]:
    """Field → the longest command-line flag, from click parameters (for messages)."""
    flags = {}
    for param in params:
        opts = [o for o in getattr(param, "opts", ()) if o.startswith("--")]
        if param.name and opts:
            flags[param.name] = max(opts, key=len)
    return flags
