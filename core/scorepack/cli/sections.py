"""The serve commands' ``--help`` in sections, one per mode an option applies to.

``serve`` has three modes — a model, a built package, several models, all on the
embedded server — and some options belong to some of them only; the fourth mode, a
package under azmlinfsrv, is a command of its own (``serve-azureml``), so that options
that cannot apply there are not accepted at all. The sections come from
:data:`scorepack.parsing.SERVE_SECTIONS`, the one list of serve's option names.
"""

from __future__ import annotations

from typing import Any

import click

from ..parsing import AZUREML_SERVE_SECTIONS, SERVE_SECTIONS

__all__ = ["AZUREML_SERVE_SECTIONS", "SERVE_SECTIONS", "SectionedCommand"]


class SectionedCommand(click.Command):
    """A command whose ``--help`` lists its options in ``sections`` order; an option in
    no section (a new one, or one a plugin adds) is shown under "Other options"."""

    def __init__(
        self,
        *args: Any,
        sections: tuple[tuple[str, tuple[str, ...]], ...] = SERVE_SECTIONS,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.sections = sections

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        where: dict[str, str] = {}
        for title, names in self.sections:
            for name in names:
                where.setdefault(name, title)
        records: dict[str, list[tuple[str, str]]] = {title: [] for title, _ in self.sections}
        other: list[tuple[str, str]] = []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None or isinstance(param, click.Argument):
                continue
            placed = where.get(param.name or "")
            (records[placed] if placed else other).append(record)
        for title, rows in (*records.items(), ("Other options", other)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)
