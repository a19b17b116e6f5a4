"""The compound forms a setting can take on the command line, in a ``SCOREPACK_*``
variable or in a settings file, parsed in this one place (the settings object and the
CLI's callbacks both call these). Standard library only, so the CLI can use it without
importing pydantic.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "AZUREML_SERVE_FIELDS",
    "AZUREML_SERVE_SECTIONS",
    "CLI_ONLY",
    "DECODE_FIELDS",
    "ENV_PREFIX",
    "LIMIT_FIELDS",
    "PREPROCESS_FIELDS",
    "SERVE_FIELDS",
    "SERVE_SECTIONS",
    "env_name",
    "parse_floats",
    "parse_keys",
    "parse_option_items",
    "parse_preferred_batch_size",
    "parse_size",
]

ENV_PREFIX = "SCOREPACK_"

#: the settings that make up a model's image preprocessing (fixed in a package when built)
PREPROCESS_FIELDS: tuple[str, ...] = (
    "preset",
    "image_input",
    "image_size",
    "layout",
    "resize",
    "crop_ratio",
    "color",
    "scale",
    "mean",
    "std",
    "exact_decode",
)
#: batching and input limits: a model's, and a package's again at serve time
LIMIT_FIELDS: tuple[str, ...] = (
    "max_batch_size",
    "preferred_batch_size",
    "max_delay_ms",
    "max_queue_size",
    "timeout_ms",
    "max_body_bytes",
    "max_image_pixels",
)
#: how request bodies are decoded (every mode)
DECODE_FIELDS: tuple[str, ...] = ("decode_threads", "decode_lookahead", "decode_nice")

#: ``serve``'s options in the order ``--help`` shows them, in sections by the mode they
#: apply to: (title, option names). The one list of serve's option names: the settings
#: fields (:data:`SERVE_FIELDS`) are these less :data:`CLI_ONLY`.
SERVE_SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "Every mode (PATH is a model or a package)",
        (
            "backend",
            "device",
            "host",
            "port",
            "settings_file",
            "cors_origins",
            "otlp_endpoint",
            "metrics",
            "access_log",
        ),
    ),
    (
        "Batching and limits (a model; a package takes them at serve time too)",
        (*LIMIT_FIELDS, "top_k"),
    ),
    (
        "Decoding (every mode; a package takes them at serve time too)",
        DECODE_FIELDS,
    ),
    (
        "A model only (a package fixed these when it was built)",
        (*PREPROCESS_FIELDS, "labels", "classifier_output"),
    ),
    (
        "The embedded server",
        (
            "backend_options",
            "auth_keys",
            "auth_key_file",
            "grpc_port",
            "model_dir",
            "graceful_timeout",
            "drain_seconds",
            "read_timeout_s",
            "max_header_count",
            "max_header_bytes",
        ),
    ),
    (
        "Several models (NAME=PATH ... or --repository DIR)",
        ("repository_dir", "model_control", "load_models", "exit_on_error"),
    ),
)

#: ``serve-azureml``'s options, as :data:`SERVE_SECTIONS` (it has no other mode)
AZUREML_SERVE_SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "The server",
        (
            "host",
            "port",
            "device",
            "threads",
            "isolated",
            "no_env_check",
            "metrics_port",
            "cors_origins",
            "otlp_endpoint",
            "access_log",
            "settings_file",
        ),
    ),
    (
        "Batching, limits and decoding (the package's own settings when left out)",
        (*LIMIT_FIELDS, "top_k", *DECODE_FIELDS),
    ),
    (
        "How requests are read (the package's gunicorn worker)",
        ("read_timeout_s", "upload_buffer_bytes"),
    ),
)

#: options of the serve commands that are not settings: click reads them itself
CLI_ONLY: frozenset[str] = frozenset(
    {
        "settings_file",
        "auth_key_file",
        "repository_dir",
        "model_control",
        "load_models",
        "exit_on_error",
    }
)


def _fields(sections: tuple[tuple[str, tuple[str, ...]], ...]) -> frozenset[str]:
    return frozenset(name for _, names in sections for name in names) - CLI_ONLY


#: every field of :class:`scorepack.settings.ServeSettings` (a test keeps them equal): the
#: ``serve`` options whose variables the settings object reads, not click
SERVE_FIELDS: frozenset[str] = _fields(SERVE_SECTIONS)
#: every field of :class:`scorepack.settings.AzureMLServeSettings`, likewise
AZUREML_SERVE_FIELDS: frozenset[str] = _fields(AZUREML_SERVE_SECTIONS)


def env_name(field: str) -> str:
    """The environment variable of a settings field: ``SCOREPACK_`` + its name in capitals."""
    return ENV_PREFIX + field.upper()


def parse_size(value: Any) -> tuple[int, int] | None:
    """``224`` → (224, 224); ``256x192`` or ``256,192`` or ``[256, 192]`` → (256, 192)."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        parts = [value]
    elif isinstance(value, list | tuple):
        parts = [int(p) for p in value]
    else:
        try:
            parts = [int(p) for p in str(value).lower().replace("x", ",").split(",")]
        except ValueError:
            raise ValueError("use N or HxW, e.g. 224 or 256x192") from None
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 1:
        raise ValueError("use N or HxW, e.g. 224 or 256x192")
    return parts[0], parts[1]


def parse_floats(value: Any) -> tuple[float, ...] | None:
    """``0.485,0.456,0.406`` (or a list, or one number) → a tuple of floats."""
    if value is None:
        return None
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    try:
        return tuple(float(p) for p in items)
    except (TypeError, ValueError):
        raise ValueError("use comma-separated numbers, e.g. 0.485,0.456,0.406") from None


def parse_keys(value: Any) -> tuple[str, ...]:
    """Keys given as ``a,b``, as repeated values, or as a list; blanks dropped."""
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else list(value)
    return tuple(k.strip() for item in items for k in str(item).split(",") if k.strip())


def parse_option_items(value: Any) -> dict[str, Any]:
    """Backend options: a mapping, or ``KEY=VALUE`` items (a list, or one string of
    whitespace-separated items as an environment variable holds them). Values stay as
    given: the backend's schema types them (:meth:`scorepack.Backend.parse_options`)."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return {str(k).strip(): v for k, v in value.items()}
    items = value.split() if isinstance(value, str) else list(value)
    options: dict[str, Any] = {}
    for item in items:
        key, sep, raw = str(item).partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{item!r}: use KEY=VALUE")
        options[key.strip()] = raw.strip()
    return options


def parse_preferred_batch_size(value: Any) -> int | str:
    """``auto``, ``off`` or a number of rows (1 or more), from text or a number
    (:mod:`scorepack.batch_sizing` says what each means)."""
    problem = "use auto, off or a number of rows (1 or more)"
    if isinstance(value, bool):
        raise ValueError(problem)
    if isinstance(value, int):
        rows = value
    else:
        text = str(value).strip().lower()
        if text in ("auto", "off"):
            return text
        try:
            rows = int(text)
        except ValueError:
            raise ValueError(problem) from None
    if rows < 1:
        raise ValueError(problem)
    return rows
