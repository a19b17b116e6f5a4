"""The ``scorepack`` command. Each command lives in its own module; plugins add more
through the ``register_commands`` hook."""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Sequence
from typing import Any

import click

from ..errors import ScorepackError
from ..version import __version__

__all__ = ["BUILTIN_COMMANDS", "build_cli", "main"]

#: modules of this package that define a ``command``; imported when the CLI is built
BUILTIN_COMMANDS: tuple[str, ...] = (
    "backends",
    "inspect",
    "serve",
    "serve_azureml",
    "score",
    "bench",
    "build",
    "check",
    "deploy",
    "delete",
)


class _Group(click.Group):
    """Turns scorepack errors into one-line exit messages: the CLI's half of the contract."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ScorepackError as exc:
            raise click.ClickException(exc.message) from exc


def _root() -> click.Group:
    # a new group each time, so commands a plugin adds never outlive its plugin manager
    @click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
    @click.version_option(__version__, prog_name="scorepack")
    @click.option(
        "--log-level",
        type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
        default="info",
        show_default=True,
        envvar="SCOREPACK_LOG_LEVEL",
        help="How much the commands and the server log.",
    )
    @click.option(
        "--log-format",
        type=click.Choice(["text", "json"], case_sensitive=False),
        default="text",
        show_default=True,
        envvar="SCOREPACK_LOG_FORMAT",
        help="Log lines as text, or one JSON object a line (for log collectors); "
        "`serve` logs one access line per request either way.",
    )
    def cli(log_level: str, log_format: str) -> None:
        """Turn a trained model into a fast (GPU) scoring service."""
        from ..telemetry.logs import configure_logging

        configure_logging(log_level, log_format.lower())
        # httpx logs every request at INFO; the client commands print their own summaries
        logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))

    return cli


def build_cli() -> click.Group:
    """The ``scorepack`` group: the built-in commands, then those the plugins register.

    Loads the plugins (not their frameworks). Raises
    :class:`~scorepack.errors.PluginError` when they cannot be loaded together.
    """
    from ..plugins import get_plugin_manager

    cli = _root()
    for name in BUILTIN_COMMANDS:
        cli.add_command(importlib.import_module(f"{__name__}.{name}").command)
    get_plugin_manager().hook.register_commands(cli=cli)
    name_variables(cli)
    return cli


def name_variables(group: click.Group) -> None:
    """Give every visible option of every command its environment variable, shown in
    ``--help``: one rule for the built-in commands and those the plugins add.

    - ``serve`` and ``serve-azureml``: ``SCOREPACK_<OPTION>`` for every option (the server's
      environment, read through the settings object; see ``settings_options.with_settings``);
    - an option that is a setting (:class:`~.options.Setting`: backend, device, backend
      options, preprocessing, top-k, labels, batching, limits, decoding) keeps
      ``SCOREPACK_<SETTING>`` in every command, one meaning everywhere;
    - every other option: ``SCOREPACK_<COMMAND>_<OPTION>``, the name click's
      ``auto_envvar_prefix`` gives, so that one command's option never sets another's;
    - shared on purpose: the group's ``SCOREPACK_LOG_LEVEL`` and ``SCOREPACK_LOG_FORMAT``,
      ``SCOREPACK_SETTINGS`` (the settings file) and ``SCOREPACK_KEY`` (score and bench).
    """
    for command in (group, *group.commands.values()):
        prefix = "SCOREPACK_"
        if command is not group:
            prefix += (command.name or "").upper().replace("-", "_") + "_"
        for param in command.params:
            if not isinstance(param, click.Option) or param.hidden or not param.expose_value:
                continue  # hidden: serve's deprecated spellings; unexposed: --version
            if not param.envvar and param.name is not None:
                param.envvar = prefix + param.name.upper()
            param.show_envvar = True


#: the commands that run a server: started again with huge pages asked for (hugepages.py)
SERVING_COMMANDS = frozenset({"serve", "serve-azureml"})


def main(args: Sequence[str] | None = None) -> None:
    """Console-script entry point.

    Run as the program (no ``args``), a serving command first starts itself again with
    glibc's huge pages asked for (:mod:`scorepack.hugepages`); called with ``args`` (from
    Python, tests) it never replaces the calling process.
    """
    if args is None and command_name(_root(), sys.argv[1:]) in SERVING_COMMANDS:
        # before the plugins and commands are imported: the new image imports them again
        from ..hugepages import reexec

        reexec()
    try:
        cli = build_cli()
    except ScorepackError as exc:
        # e.g. two plugins claim one name, or a hook is misspelled: no traceback for that
        click.ClickException(exc.message).show()
        raise SystemExit(1) from exc
    cli.main(args=list(args) if args is not None else None, prog_name="scorepack")


def command_name(group: click.Group, argv: Sequence[str]) -> str | None:
    """The command ``argv`` runs: its first word that is neither one of the group's own
    options nor such an option's value."""
    takes_value = {
        name
        for param in group.params
        if isinstance(param, click.Option) and not param.is_flag
        for name in param.opts
    }
    words = iter(argv)
    for word in words:
        if word == "--":
            return next(words, None)
        if not word.startswith("-"):
            return word
        if word in takes_value:
            next(words, None)  # its value, as a separate word
    return None
