"""The compound forms a setting can take on the command line, in a ``SCOREPACK_*``
variable or in a settings file, parsed in this one place (the settings object and the
CLI's callbacks both call these). Standard library only, so the CLI can use it without
importing pydantic.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "ENV_PREFIX",
    "SERVE_FIELDS",
    "env_name",
    "parse_floats",
    "parse_keys",
    "parse_option_items",
    "parse_size",
]

ENV_PREFIX = "SCOREPACK_"

#: every field of :class:`scorepack.settings.ServeSettings` (a test keeps them equal): the
#: ``serve`` options whose variables the settings object reads, not click
SERVE_FIELDS: frozenset[str] = frozenset(
    {
        "max_batch_size",
        "max_delay_ms",
        "max_queue_size",
        "timeout_ms",
        "max_body_bytes",
        "max_image_pixels",
        "top_k",
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
        "labels",
        "classifier_output",
        "backend",
        "device",
        "backend_options",
        "host",
        "port",
        "grpc_port",
        "auth_keys",
        "graceful_timeout",
        "runtime",
        "isolated",
        "threads",
        "no_env_check",
        "model_dir",
        "metrics_port",
        "cors_origins",
        "otlp_endpoint",
    }
)


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
