"""``scorepack backends``: what is installed, which formats, which devices."""

from __future__ import annotations

import json

import click

from ..errors import ScorepackError
from ..plugins import get_plugins
from .table import format_table


def backend_rows(probe_devices: bool = True) -> list[dict[str, object]]:
    """One record per installed backend."""
    plugins = get_plugins()
    rows: list[dict[str, object]] = []
    for name, spec in plugins.backends.items():
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
            }
        )
    return rows


@click.command("backends")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--no-devices", is_flag=True, help="Do not import frameworks to list devices.")
def command(as_json: bool, no_devices: bool) -> None:
    """List installed backends: formats, framework version, usable devices."""
    rows = backend_rows(probe_devices=not no_devices)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
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
