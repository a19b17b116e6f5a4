"""Options shared by the commands that load a model (inspect, serve, build).

Each is a :class:`Setting`: a field of the one settings object (:mod:`scorepack.settings`),
so its variable is ``SCOREPACK_<FIELD>`` in every command that has it, with one meaning —
``build`` writes into the package what ``serve`` would apply, ``inspect`` preprocesses as
``serve`` would. The other commands' own options get ``SCOREPACK_<COMMAND>_<OPTION>`` (see
:func:`scorepack.cli.name_variables`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from ..backend import Backend, BackendSpec
from ..codecs import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_IMAGE_PIXELS
from ..config import ScoringConfig
from ..device import Device
from ..errors import BackendOptionError
from ..parsing import (
    LIMIT_FIELDS,
    PREPROCESS_FIELDS,
    env_name,
    parse_floats,
    parse_option_items,
    parse_preferred_batch_size,
    parse_size,
)
from ..preprocess import PRESETS, PreprocessConfig

F = TypeVar("F", bound=Callable[..., Any])


class Setting(click.Option):
    """An option that is a field of the settings object: ``SCOREPACK_<FIELD>`` (its
    ``name`` in capitals) in every command that has it, shown in ``--help``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("show_envvar", True)
        super().__init__(*args, **kwargs)
        if self.envvar is None and self.name is not None:
            self.envvar = env_name(self.name)


def setting(*decls: str, **attrs: Any) -> Callable[[F], F]:
    """``click.option`` for a :class:`Setting`."""
    return click.option(*decls, cls=Setting, **attrs)


def _stack(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    def apply(func: F) -> F:
        for decorator in reversed(decorators):
            func = decorator(func)
        return func

    return apply


def _size(
    _ctx: click.Context, _param: click.Parameter, value: str | None
) -> tuple[int, int] | None:
    try:
        return parse_size(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _floats(
    _ctx: click.Context, _param: click.Parameter, value: str | None
) -> tuple[float, ...] | None:
    try:
        return parse_floats(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _preferred(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Any:
    try:
        return None if value is None else parse_preferred_batch_size(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


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
    try:
        return parse_option_items(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


#: -O KEY=VALUE, repeatable: options for the backend (``Backend.option_schema``)
backend_option = setting(
    "-O",
    "--option",
    "backend_options",
    multiple=True,
    callback=_backend_options,
    metavar="KEY=VALUE",
    help="A backend option, e.g. -O signature=serving_default (repeatable); "
    "`scorepack backends NAME` lists a backend's options. Its environment variable, "
    "where there is one, takes whitespace-separated KEY=VALUE items.",
)

#: --backend, as every command that loads a model takes it
backend_flag = setting("--backend", help="Backend name; detected from PATH when left out.")

model_flags = _stack(
    backend_flag,
    setting(
        "--device",
        default="auto",
        show_default=True,
        callback=_device,
        help="auto, cpu, cuda or cuda:N.",
    ),
    backend_option,
)

#: the model argument and the options that pick its backend and device
model_options = _stack(click.argument("path", type=click.Path(exists=True)), model_flags)

preprocess_options = _stack(
    setting(
        "--preset",
        type=click.Choice(sorted(PRESETS)),
        default="raw",
        show_default=True,
        help="Pixels: raw 0..255, unit 0..1, imagenet, caffe (BGR), inception (-1..1).",
    ),
    setting("--input", "image_input", help="The input that takes images (when ambiguous)."),
    setting("--image-size", callback=_size, help="N or HxW, when the model does not fix it."),
    setting(
        "--layout",
        type=click.Choice(["NHWC", "NCHW"], case_sensitive=False),
        help="Channels last or first (default: from the model).",
    ),
    setting(
        "--resize",
        type=click.Choice(["stretch", "crop"]),
        default="stretch",
        show_default=True,
        help="stretch to size, or shorter side + centre crop.",
    ),
    setting(
        "--crop-ratio",
        type=float,
        default=0.875,
        show_default=True,
        help="With --resize crop: the centre crop's share of the resized shorter side.",
    ),
    setting(
        "--color",
        type=click.Choice(["RGB", "BGR"], case_sensitive=False),
        help="Channel order (default: from --preset).",
    ),
    setting("--scale", type=float, help="Multiply pixels (0..255) by this."),
    setting("--mean", callback=_floats, help="Subtract after scaling, per channel."),
    setting("--std", callback=_floats, help="Divide by this after the mean, per channel."),
    setting("--exact-decode", is_flag=True, help="Always decode JPEGs at full size."),
)


def _limit_options(defaults: bool) -> Callable[[F], F]:
    """Batching and input limits: with the defaults shown (a model), or none (a package,
    whose own settings apply to what is not given)."""

    def option(flag: str, kind: type, default: Any, help: str) -> Callable[[F], F]:
        if defaults:
            return setting(flag, type=kind, default=default, show_default=True, help=help)
        return setting(flag, type=kind, help=f"{help} (Default: the package's.)")

    def preferred(func: F) -> F:
        # auto | off | N: one click parameter type that parses as the settings do
        text = (
            "Rows a batch gathers: off fills batches to --max-batch-size; N fixes it; "
            "auto tunes it under load to the size fastest per row (at most "
            "--max-batch-size)."
        )
        if defaults:
            return setting(
                "--preferred-batch-size",
                callback=_preferred,
                metavar="auto|off|N",
                default="off",
                show_default=True,
                help=text,
            )(func)
        return setting(
            "--preferred-batch-size",
            callback=_preferred,
            metavar="auto|off|N",
            help=f"{text} (Default: the package's.)",
        )(func)

    return _stack(
        option("--max-batch-size", int, 32, "Most rows in one model call."),
        preferred,
        option("--max-delay-ms", float, 5.0, "Longest a request waits for batch-mates."),
        option(
            "--max-queue-size",
            int,
            256,
            "Requests waiting at most; beyond it, 503 with Retry-After at once.",
        ),
        option("--timeout-ms", float, 30000.0, "A request not scored by then gets 504."),
        option(
            "--max-body-bytes",
            int,
            DEFAULT_MAX_BODY_BYTES,
            "Larger bodies get 413 without being read.",
        ),
        option(
            "--max-image-pixels",
            int,
            DEFAULT_MAX_IMAGE_PIXELS,
            "Images whose header declares more pixels get 413 before decoding.",
        ),
    )


def _top_k(defaults: bool) -> Callable[[F], F]:
    if defaults:
        return setting(
            "--top-k", type=int, default=5, show_default=True, help="Classes returned per row."
        )
    return setting("--top-k", type=int, help="Classes returned per row (default: the package's).")


scoring_options = _stack(
    preprocess_options,
    _top_k(True),
    setting("--labels", type=click.Path(exists=True, dir_okay=False), help="One label per line."),
    setting("--output", "classifier_output", help="The output holding class scores."),
    _limit_options(True),
)

#: a built package's runtime settings: top-k, batching and limits, its own by default
package_runtime_options = _stack(_top_k(False), _limit_options(False))

#: how requests are decoded (scorepack.decoding): automatic unless given
decode_options = _stack(
    setting(
        "--decode-threads",
        type=int,
        help="Threads that decode and preprocess requests (default: one per usable core).",
    ),
    setting(
        "--decode-lookahead",
        type=int,
        help="Requests decoded ahead of the model at most (default: two batches; 0: no bound).",
    ),
    setting(
        "--decode-nice",
        type=int,
        help="How much decode threads lower their priority on Linux, so that the model's "
        "threads get the cores first (0 to 19; default 10; 0: not at all).",
    ),
)

#: how long a begun request may take to arrive (both hosts)
read_timeout_option = setting(
    "--read-timeout-s",
    type=float,
    help="Seconds a begun request may go without a byte arriving; then 408 (default 60).",
)


def create_backend(spec: BackendSpec, path: str, device: str, options: dict[str, Any]) -> Backend:
    """``spec.create`` with a usage error (not a traceback) for an option it does not take
    or a value that does not parse: checked here, before the model loads."""
    try:
        return spec.create(path, device=device, options=options)
    except BackendOptionError as exc:
        raise click.UsageError(exc.message) from exc


#: the options above that make up a ScoringConfig (click names = settings fields)
_SCORING_NAMES = (
    *PREPROCESS_FIELDS,
    "top_k",
    "labels",
    "classifier_output",
    *LIMIT_FIELDS,
)


def _config(kw: dict[str, Any]) -> ScoringConfig:
    # one way from flat settings to a ScoringConfig: the settings object's. Click has
    # already read these commands' variables, so the environment is not read again; the
    # options given (command line or variable) win over a --settings file, which wins
    # over the defaults
    from ..settings import ServeSettings, SettingsError, flags_of

    file = kw.pop("settings_file", None)
    values = {name: kw.pop(name) for name in _SCORING_NAMES if name in kw}
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        values = {
            name: value
            for name, value in values.items()
            if ctx.get_parameter_source(name)
            in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
        }
    flags = flags_of(ctx.command.params) if ctx is not None else {}
    try:
        # ServeSettings reads the whole file, so one file serves `serve` and `build` alike
        settings: ServeSettings = ServeSettings.load(values, file=file, environ={}, flags=flags)
        return settings.scoring_config()
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from exc


def preprocess_config(kw: dict[str, Any]) -> PreprocessConfig:
    """Build the preprocessing config from the options above (popping them, and
    ``settings_file`` when there is one, from ``kw``)."""
    return _config(kw).preprocess


def scoring_config(kw: dict[str, Any]) -> ScoringConfig:
    """Build the whole scoring config from the options above (popping them, and
    ``settings_file`` when there is one, from ``kw``)."""
    return _config(kw)
