"""``serve``'s help in sections, one per mode an option applies to.

``serve`` has three modes — a model on the embedded server, a built package on the
embedded server, a built package under azmlinfsrv (``--runtime azureml``) — and most of
its options belong to some of them only. The sections say which, so that ``--help`` has
the shape of the modes instead of leaving it to "X only goes with Y" errors.
"""

from __future__ import annotations

import click

__all__ = ["SERVE_SECTIONS", "SectionedCommand"]

#: (title, option names) in the order ``--help`` shows them; an option not listed here
#: (a new one, or one a plugin adds) is shown under "Other options". Some names are of
#: options other work in progress adds (metrics, tracing, gRPC, model repositories).
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
            "log_format",
        ),
    ),
    (
        "Batching and limits (a model; a package takes them at serve time too)",
        (
            "max_batch_size",
            "max_delay_ms",
            "max_queue_size",
            "timeout_ms",
            "max_body_bytes",
            "max_image_pixels",
            "top_k",
        ),
    ),
    (
        "A model only (a package fixed these when it was built)",
        (
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
        ),
    ),
    (
        "The embedded server (a model, or a package with the default --runtime embedded)",
        (
            "backend_options",
            "auth_keys",
            "auth_key_file",
            "graceful_timeout",
            "model_dir",
            "repository",
            "model_control",
            "grpc_port",
        ),
    ),
    (
        "Several models (NAME=PATH ... or --repository DIR, on the embedded server)",
        ("repository_dir", "model_control"),
    ),
    (
        "A package under azmlinfsrv, as Azure ML runs it (--runtime azureml)",
        ("runtime", "isolated", "threads", "no_env_check", "metrics_port"),
    ),
)


class SectionedCommand(click.Command):
    """A command whose ``--help`` lists its options in :data:`SERVE_SECTIONS` order."""

    sections: tuple[tuple[str, tuple[str, ...]], ...] = SERVE_SECTIONS

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        where = {name: title for title, names in self.sections for name in names}
        records: dict[str, list[tuple[str, str]]] = {title: [] for title, _ in self.sections}
        other: list[tuple[str, str]] = []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None or isinstance(param, click.Argument):
                continue
            title = where.get(param.name or "")
            (records[title] if title else other).append(record)
        for title, rows in (*records.items(), ("Other options", other)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)
