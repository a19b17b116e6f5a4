"""How the serve commands' options meet the one settings object.

Every option that is a settings field gets its ``SCOREPACK_*`` variable, shown in
``--help``, but click does not read it: the settings object reads the environment once
(:mod:`scorepack.settings`), as a package does under azmlinfsrv, and takes from click only
the options given on the command line. Options that are not settings (a plugin's, say)
keep click's own reading of their variable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
from click.core import ParameterSource

from ..parsing import env_name
from .options import Setting

__all__ = ["load_settings", "settings_file_option", "with_settings"]


class _SettingsOption(Setting):
    """An option whose ``SCOREPACK_*`` variable the settings object reads, not click."""

    def resolve_envvar_value(self, ctx: click.Context) -> str | None:
        return None


def with_settings(fields: frozenset[str]) -> Callable[[click.Command], click.Command]:
    """Give every visible option of a command its ``SCOREPACK_*`` variable, shown in
    ``--help``; those in ``fields`` are read by the settings object."""

    def apply(command: click.Command) -> click.Command:
        for param in command.params:
            if not isinstance(param, click.Option) or param.name is None or param.hidden:
                continue
            if param.name in fields:
                param.__class__ = _SettingsOption
                param.envvar = env_name(param.name)
            elif not param.envvar and param.name != "settings_file":
                param.envvar = env_name(param.name)
            param.show_envvar = True
        return command

    return apply


#: --settings FILE: the settings file under the environment and the command line
settings_file_option = click.option(
    "--settings",
    "settings_file",
    type=click.Path(exists=True, dir_okay=False),
    envvar="SCOREPACK_SETTINGS",
    show_envvar=True,
    help="A YAML or JSON file of settings, keyed by the names of the SCOREPACK_* "
    "variables without the prefix, in lower case (max_batch_size: 16). The command line "
    "wins over the environment, which wins over the file.",
)


def load_settings(
    ctx: click.Context, kw: dict[str, Any], settings_class: Any, fields: frozenset[str]
) -> Any:
    """The one settings object of ``settings_class``: the options in ``fields`` given on
    the command line (popped from ``kw`` with the others in ``fields`` and the settings
    file), over the ``SCOREPACK_*`` variables, over the --settings file. Bad settings
    are a usage error naming each one."""
    from ..settings import SettingsError, flags_of

    file = kw.pop("settings_file", None)
    given = {
        name: kw.pop(name)
        for name in list(kw)
        if name in fields and ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE
    }
    for name in fields & set(kw):  # defaults: the settings object has its own
        kw.pop(name)
    try:
        return settings_class.load(given, file=file, flags=flags_of(ctx.command.params))
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from exc


def checked(make: Callable[[], Any]) -> Any:
    """``make()``, with a SettingsError as a usage error."""
    from ..settings import SettingsError

    try:
        return make()
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from exc
