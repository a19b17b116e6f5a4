"""Options shared by the commands that load a model (inspect, serve, build)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from ..backend import Backend, BackendSpec
from ..batching import BatchingConfig
from ..codecs import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_IMAGE_PIXELS
from ..config import ScoringConfig
from ..device import Device
from ..errors import BackendOptionError
from ..postprocess import PostprocessConfig, read_labels
from ..preprocess import PRESETS, PreprocessConfig

F = TypeVar("F", bound=Callable[..., Any])


def _stack(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    def apply(func: F) -> F:
        for decorator in reversed(decorators):
            func = decorator(func)
        return func

    return apply


def _size(
    _ctx: click.Context, _param: click.Parameter, value: str | None
) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        parts = [int(p) for p in value.lower().replace("x", ",").split(",")]
    except ValueError:
        raise click.BadParameter("use N or HxW, e.g. 224 or 256x192") from None
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 1:
        raise click.BadParameter("use N or HxW, e.g. 224 or 256x192")
    return parts[0], parts[1]


def _floats(
    _ctx: click.Context, _param: click.Parameter, value: str | None
) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        return tuple(float(p) for p in value.split(","))
    except ValueError:
        raise click.BadParameter("use comma-separated numbers, e.g. 0.485,0.456,0.406") from None


def _device(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    try:
        Device.parse(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


def _backend_options(
    _ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]
) -> dict[str, Any]:
    # values stay text here: the backend's schema parses them (Backend.parse_options)
    options: dict[str, Any] = {}
    for item in value:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r}: use KEY=VALUE")
        options[key.strip()] = raw.strip()
    return options


#: -O KEY=VALUE, repeatable: options for the backend (``Backend.option_schema``)
backend_option = click.option(
    "-O",
    "--option",
    "backend_options",
    multiple=True,
    callback=_backend_options,
    metavar="KEY=VALUE",
    help="A backend option, e.g. -O signature=serving_default (repeatable); "
    "`scorepack backends NAME` lists a backend's options.",
)

model_options = _stack(
    click.argument("path", type=click.Path(exists=True)),
    click.option("--backend", help="Backend name; detected from PATH when left out."),
    click.option(
        "--device",
        default="auto",
        show_default=True,
        envvar="SCOREPACK_DEVICE",
        callback=_device,
        help="auto, cpu, cuda or cuda:N.",
    ),
    backend_option,
)

preprocess_options = _stack(
    click.option(
        "--preset",
        type=click.Choice(sorted(PRESETS)),
        default="raw",
        show_default=True,
        help="Pixels: raw 0..255, unit 0..1, imagenet, caffe (BGR), inception (-1..1).",
    ),
    click.option("--input", "image_input", help="The input that takes images (when ambiguous)."),
    click.option("--image-size", callback=_size, help="N or HxW, when the model does not fix it."),
    click.option("--layout", type=click.Choice(["NHWC", "NCHW"], case_sensitive=False)),
    click.option(
        "--resize",
        type=click.Choice(["stretch", "crop"]),
        default="stretch",
        show_default=True,
        help="stretch to size, or shorter side + centre crop.",
    ),
    click.option("--crop-ratio", type=float, default=0.875, show_default=True),
    click.option("--color", type=click.Choice(["RGB", "BGR"], case_sensitive=False)),
    click.option("--scale", type=float, help="Multiply pixels (0..255) by this."),
    click.option("--mean", callback=_floats, help="Subtract after scaling, per channel."),
    click.option("--std", callback=_floats, help="Divide by this after the mean, per channel."),
    click.option("--exact-decode", is_flag=True, help="Always decode JPEGs at full size."),
)

scoring_options = _stack(
    preprocess_options,
    click.option("--top-k", type=int, default=5, show_default=True),
    click.option(
        "--labels", type=click.Path(exists=True, dir_okay=False), help="One label per line."
    ),
    click.option("--output", "classifier_output", help="The output holding class scores."),
    click.option(
        "--max-batch-size",
        type=int,
        default=32,
        show_default=True,
        envvar="SCOREPACK_MAX_BATCH_SIZE",
    ),
    click.option(
        "--max-delay-ms",
        type=float,
        default=5.0,
        show_default=True,
        envvar="SCOREPACK_MAX_DELAY_MS",
    ),
    click.option(
        "--max-queue-size",
        type=int,
        default=256,
        show_default=True,
        envvar="SCOREPACK_MAX_QUEUE_SIZE",
    ),
    click.option(
        "--timeout-ms",
        type=float,
        default=30000.0,
        show_default=True,
        envvar="SCOREPACK_TIMEOUT_MS",
    ),
    click.option(
        "--max-body-bytes",
        type=int,
        default=DEFAULT_MAX_BODY_BYTES,
        show_default=True,
        envvar="SCOREPACK_MAX_BODY_BYTES",
    ),
    click.option(
        "--max-image-pixels",
        type=int,
        default=DEFAULT_MAX_IMAGE_PIXELS,
        show_default=True,
        envvar="SCOREPACK_MAX_IMAGE_PIXELS",
    ),
)


def create_backend(spec: BackendSpec, path: str, device: str, options: dict[str, Any]) -> Backend:
    """``spec.create`` with a usage error (not a traceback) for an option it does not take
    or a value that does not parse: checked here, before the model loads."""
    try:
        return spec.create(path, device=device, options=options)
    except BackendOptionError as exc:
        raise click.UsageError(exc.message) from exc


def preprocess_config(kw: dict[str, Any]) -> PreprocessConfig:
    """Build the preprocessing config from the options above (popping them from ``kw``)."""
    try:
        return PreprocessConfig(
            preset=kw.pop("preset"),
            input=kw.pop("image_input"),
            size=kw.pop("image_size"),
            layout=kw.pop("layout"),
            resize=kw.pop("resize"),
            crop_ratio=kw.pop("crop_ratio"),
            color=kw.pop("color"),
            scale=kw.pop("scale"),
            mean=kw.pop("mean"),
            std=kw.pop("std"),
            exact_decode=kw.pop("exact_decode"),
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc


def scoring_config(kw: dict[str, Any]) -> ScoringConfig:
    """Build the whole scoring config from the options above (popping them from ``kw``)."""
    preprocess = preprocess_config(kw)
    labels_path = kw.pop("labels")
    try:
        return ScoringConfig(
            preprocess=preprocess,
            postprocess=PostprocessConfig(
                top_k=kw.pop("top_k"),
                output=kw.pop("classifier_output"),
                labels=read_labels(labels_path) if labels_path else None,
            ),
            batching=BatchingConfig(
                max_batch_size=kw.pop("max_batch_size"),
                max_delay_ms=kw.pop("max_delay_ms"),
                max_queue_size=kw.pop("max_queue_size"),
                timeout_ms=kw.pop("timeout_ms"),
            ),
            max_body_bytes=kw.pop("max_body_bytes"),
            max_image_pixels=kw.pop("max_image_pixels"),
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
