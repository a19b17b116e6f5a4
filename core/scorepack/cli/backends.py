"""``scorepack backends [NAME]``: what is installed, which formats, which devices; with
NAME, one backend's details and the ``-O`` options it takes."""

from __future__ import annotations

import json
import textwrap

import click

from ..backend import BackendOption
from ..errors import ScorepackError, UnknownBackendError
from ..plugins import get_plugins
from .table import format_table


def option_rows(options: dict[str, BackendOption]) -> list[dict[str, object]]:
    """One record per backend option, as ``backends NAME --json`` prints them."""
    return [
        {
            "name": o.name,
            "type": o.type_name,
            "default": o.default,
            "choices": list(o.choices),
            "minimum": o.minimum,
            "help": o.help,
        }
        for o in options.values()
    ]


def backend_rows(probe_devices: bool = True, only: str | None = None) -> list[dict[str, object]]:
    """One record per installed backend (or only the one named ``only``)."""
    plugins = get_plugins()
    rows: list[dict[str, object]] = []
    if only is not None and only not in plugins.backends:
        raise UnknownBackendError(only, plugins.backends)
    for name, spec in plugins.backends.items():
        if only is not None and name != only:
            continue
        version = spec.framework_version()
        devices: list[str] = []
        runtime: dict[str, str] = {}
        problem = None
        if version is None:
            problem = f"not installed: {spec.install}"
        elif probe_devices:
            try:
                devices = spec.backend.available_devices()
                # optional: a backend may say more about its runtime (ONNX Runtime's
                # execution providers, say) through a ``runtime_info()`` classmethod
                runtime_info = getattr(spec.backend, "runtime_info", None)
                if callable(runtime_info):
                    runtime = {str(k): str(v) for k, v in runtime_info().items()}
            except ScorepackError as exc:
                problem = exc.message
            except Exception as exc:  # a broken framework install must not hide the others
                problem = f"{type(exc).__name__}: {exc}"
        rows.append(
            {
                "name": name,
                "formats": list(spec.formats),
                "framework": spec.framework,
                "framework_version": version,
                "devices": devices,
                "runtime": runtime,
                "plugin": plugins.owner(name),
                "problem": problem,
                "options": option_rows(spec.options),
            }
        )
    return rows


def _complete_backend(
    _ctx: click.Context, _param: click.Parameter, incomplete: str
) -> list[click.shell_completion.CompletionItem]:
    """Shell completion of NAME: the installed backends (read from the plugins' entry
    points; no framework is imported)."""
    return [
        click.shell_completion.CompletionItem(name)
        for name in sorted(get_plugins().backends)
        if name.startswith(incomplete)
    ]


@click.command("backends")
@click.argument("name", required=False, shell_complete=_complete_backend)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--no-devices", is_flag=True, help="Do not import frameworks to list devices.")
def command(name: str | None, as_json: bool, no_devices: bool) -> None:
    """List installed backends: formats, framework version, usable devices.

    With NAME, show that backend and every option it takes (-O KEY=VALUE): type,
    default, allowed values and what it does.
    """
    rows = backend_rows(probe_devices=not no_devices, only=name)
    if as_json:
        click.echo(json.dumps(rows[0] if name else rows, indent=2))
        return
    if name:
        _show_one(rows[0])
        return
    if not rows:
        click.echo("No backends installed. Try: pip install 'scorepack-tensorflow[cpu]'")
        return
    table = [[str(r["name"]), ", ".join(r["formats"]), *_status(r)] for r in rows]  # type: ignore[arg-type]
    click.echo(format_table(["BACKEND", "FORMATS", "FRAMEWORK", "DEVICES"], table))


def _status(row: dict[str, object]) -> tuple[str, str]:
    """The FRAMEWORK and DEVICES cells: a version and devices, or what is wrong."""
    if row["framework_version"] is None:
        return str(row["problem"]), "-"
    framework = f"{row['framework']} {row['framework_version']}"
    devices = ", ".join(row["devices"])  # type: ignore[arg-type]
    details = "; ".join(f"{k}: {v}" for k, v in row["runtime"].items())  # type: ignore[attr-defined]
    cell = devices or str(row["problem"] or "-")
    return framework, f"{cell} ({details})" if details else cell


def _show_one(row: dict[str, object]) -> None:
    framework, devices = _status(row)
    click.echo(f"backend:   {row['name']} ({row['plugin']})")
    click.echo(f"formats:   {', '.join(row['formats'])}")  # type: ignore[arg-type]
    click.echo(f"framework: {framework}")
    click.echo(f"devices:   {devices}")
    options: list[dict[str, object]] = row["options"]  # type: ignore[assignment]
    if not options:
        click.echo("options:   none")
        return
    click.echo("options (-O KEY=VALUE):")
    for o in options:
        allowed = " | ".join(o["choices"]) if o["choices"] else str(o["type"])  # type: ignore[arg-type]
        if o["minimum"] is not None:
            allowed += f" >= {o['minimum']:g}"
        default = "" if o["default"] is None else f", default {_text(o['default'])}"
        click.echo(f"  {o['name']} ({allowed}{default})")
        for line in textwrap.wrap(str(o["help"]), 76):
            click.echo(f"      {line}")


def _text(value: object) -> str:
    """A default as a user would type it (true, not True)."""
    return str(value).lower() if isinstance(value, bool) else str(value)
