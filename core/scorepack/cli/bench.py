"""``scorepack bench URL FILE``: a load test against any scoring URL, Azure included."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..bench import BenchConfig, BenchResult, Snapshot, run_bench
from .table import format_table


def _progress(snapshot: Snapshot) -> None:
    p50 = f"{snapshot.p50_ms:.1f} ms" if snapshot.p50_ms is not None else "-"
    line = (
        f"\r{snapshot.elapsed_s:6.1f} s  {snapshot.completed:>7} done  "
        f"{snapshot.rps:8.1f} req/s  p50 {p50:>10}  errors {snapshot.errors}"
    )
    click.echo(line, nl=False, err=True)


def summary(result: BenchResult) -> str:
    """The human-readable result table."""
    lat = result.latency_ms
    rows = [
        ["url", result.url],
        ["concurrency", str(result.concurrency)],
        ["duration", f"{result.duration_s:.1f} s"],
        ["requests", f"{result.requests}  ({result.rps:.1f} req/s)"],
        [
            "latency",
            "  ".join(f"{k} {lat[k]:.1f} ms" for k in ("mean", "p50", "p90", "p99", "max"))
            if lat
            else "-",
        ],
        ["statuses", ", ".join(f"{s}: {n}" for s, n in sorted(result.statuses.items())) or "-"],
        [
            "transport errors",
            str(result.transport_errors)
            + (f"  (last: {result.last_error})" if result.last_error else ""),
        ],
    ]
    if result.batch_sizes:
        sizes = ", ".join(f"{b}: {n}" for b, n in sorted(result.batch_sizes.items()))
        rows.append(["batch sizes seen", sizes])
    return format_table(["", ""], rows).split("\n", 2)[2]


@click.command("bench")
@click.argument("url")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "-c",
    "--concurrency",
    type=int,
    default=8,
    show_default=True,
    help="Requests in flight at once (one connection each).",
)
@click.option(
    "-d", "--duration", type=float, default=10.0, show_default=True, help="Seconds to measure."
)
@click.option("-n", "--requests", "max_requests", type=int, help="Stop after this many requests.")
@click.option(
    "--warmup", type=float, default=0.0, show_default=True, help="Seconds of load before measuring."
)
@click.option("--key", envvar="SCOREPACK_KEY", help="Sent as 'Authorization: Bearer KEY'.")
@click.option("--content-type", help="Defaults to one sniffed from the file.")
@click.option("--timeout", type=float, default=60.0, show_default=True, help="Seconds per request.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def command(
    url: str,
    file: str,
    concurrency: int,
    duration: float,
    max_requests: int | None,
    warmup: float,
    key: str | None,
    content_type: str | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Load-test URL with FILE (an image or JSON tensors) and summarise what came back."""
    try:
        config = BenchConfig(
            url=url,
            body=Path(file).read_bytes(),
            concurrency=concurrency,
            duration_s=duration,
            max_requests=max_requests,
            content_type=content_type,
            key=key,
            timeout_s=timeout,
            warmup_s=warmup,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    live = sys.stderr.isatty() and not as_json
    result = run_bench(config, _progress if live else None)
    if live:
        click.echo("", err=True)
    click.echo(json.dumps(result.to_dict(), indent=2) if as_json else summary(result))
    if result.requests == 0:
        raise click.ClickException(f"no request completed against {result.url}")
