"""``scorepack check PKG``: resolve the package's environment for its target, install nothing."""

from __future__ import annotations

import json
from pathlib import Path

import click

__all__ = ["command", "report_check"]

#: exit status when the environment resolves but part of it could not be checked from here
INCOMPLETE = 3


def report_check(package: Path, index: str | None, as_json: bool = False) -> int:
    """Run the check, print its report, and return the exit status (0, 1 or 3)."""
    from ..generator.check import check_package

    click.echo(
        f"scorepack: resolving {package}'s environment with pip (nothing is installed)…", err=True
    )
    report = check_package(package, index=index)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.text())
    if report.failed:
        return 1
    return 0 if report.complete else INCOMPLETE


@click.command("check")
@click.argument("package", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--index-url",
    help="The package index to resolve against [default: $PIP_INDEX_URL, else PyPI].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def command(package: Path, index_url: str | None, as_json: bool) -> None:
    """Check that PACKAGE's pinned environment resolves for Linux x86-64 and its Python.

    Runs pip's resolver (`pip install --dry-run --report`) against the package index,
    for the package's target rather than this machine, without this machine's pip
    configuration, and reports per requirement: found, version, CUDA major, conflict.
    Exit status: 0 resolves; 1 does not; 3 resolves, but an extra index (PyTorch's)
    could not be reached from here, so what needs it is unchecked.
    """
    raise SystemExit(report_check(package, index_url, as_json))
