"""``scorepack bench URL FILE``: a load test against any scoring URL, Azure included."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import click

from ..bench import (
    DEFAULT_MAX_ERROR_RATE,
    BenchConfig,
    BenchResult,
    Connection,
    Snapshot,
    run_bench,
)
from ..client import scoring_url
from ..client_v2 import PROTOCOLS
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
    mode = "closed loop" if result.rate is None else f"open loop at {result.rate:g} req/s"
    rows = [
        ["url", result.url],
        ["mode", f"{mode}, concurrency {result.concurrency}"],
        ["duration", f"{result.duration_s:.1f} s"],
        ["requests", f"{result.requests}  ({result.rps:.1f} req/s)"],
        ["latency", _latency(result.latency_ms)],
    ]
    if result.rate is not None:
        # latency counts from when each request was due; service time from its send
        rows.append(["service time", _latency(result.service_ms)])
        rows.append(["max send lag", f"{result.max_send_lag_ms:.1f} ms"])
        if result.unsent:
            rows.append(["unsent", f"{result.unsent} (all connections busy: raise -c)"])
    rows += [
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
    rows.append(["error rate", f"{result.error_rate:.2%}"])
    return format_table(["", ""], rows).split("\n", 2)[2]


def _protocol_connections(
    config: BenchConfig, protocol: str, model: str | None, version: str | None
) -> tuple[Callable[[], Connection] | None, str | None]:
    """The connection factory and the URL to show for V2 protocols (None for /score)."""
    if protocol == "score":
        return None, None
    from ..bench.protocols import connections, prepare_v2_load

    load = prepare_v2_load(
        protocol,
        config.url,
        config.body,
        model=model,
        version=version,
        key=config.key,
        timeout=config.timeout_s,
    )
    return connections(load, config.timeout_s), load.display_url


def _latency(lat: dict[str, float]) -> str:
    if not lat:
        return "-"
    return "  ".join(f"{k} {lat[k]:.1f} ms" for k in ("mean", "p50", "p90", "p99", "max"))


@click.command("bench")
@click.argument("url")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Requests in flight at once (one connection each); with --rate, the most.",
)
@click.option(
    "-r",
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    help="Open loop: send this many requests per second on a fixed schedule, whatever "
    "the answers' pace; latency counts from when each request was due (corrected for "
    "coordinated omission, as wrk2 and perf_analyzer do). Default: closed loop.",
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
@click.option(
    "--max-error-rate",
    type=click.FloatRange(0, 1),
    default=DEFAULT_MAX_ERROR_RATE,
    show_default=True,
    help="Exit with status 1 when more than this fraction of requests fail (non-2xx, "
    "transport errors, or with --rate never sent).",
)
@click.option(
    "--protocol",
    type=click.Choice(PROTOCOLS),
    help="score: Azure ML's POST /score; v2: Open Inference Protocol REST (binary tensors); "
    "grpc: its gRPC service (URL host:port). Default: grpc for a grpc:// URL, else score.",
)
@click.option(
    "--model",
    help="The model (default: the one the server serves); /score sends it as ?model=NAME.",
)
@click.option(
    "--model-version", help="The model version (default: the server's); /score: ?version=V."
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def command(
    url: str,
    file: str,
    concurrency: int,
    rate: float | None,
    duration: float,
    max_requests: int | None,
    warmup: float,
    key: str | None,
    content_type: str | None,
    timeout: float,
    max_error_rate: float,
    protocol: str | None,
    model: str | None,
    model_version: str | None,
    as_json: bool,
) -> None:
    """Load-test URL with FILE (an image or JSON tensors) and summarise what came back.

    Closed loop by default: CONCURRENCY workers each send as soon as their last answer
    arrives. --rate R sends R requests per second on schedule instead (open loop).
    Exits with status 1 when the error rate passes --max-error-rate.
    """
    protocol = protocol or ("grpc" if url.startswith("grpc://") else "score")
    try:
        config = BenchConfig(
            # /score picks one of several models by its query, as `scorepack score` sends it
            url=scoring_url(url, model, model_version) if protocol == "score" else url,
            body=Path(file).read_bytes(),
            concurrency=concurrency,
            duration_s=duration,
            max_requests=max_requests,
            content_type=content_type,
            key=key,
            timeout_s=timeout,
            warmup_s=warmup,
            rate=rate,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    connect, shown = _protocol_connections(config, protocol, model, model_version)
    live = sys.stderr.isatty() and not as_json
    result = run_bench(config, _progress if live else None, connect)
    if shown:
        result.url = shown
    if live:
        click.echo("", err=True)
    click.echo(json.dumps(result.to_dict(), indent=2) if as_json else summary(result))
    if result.requests == 0:
        raise click.ClickException(f"no request completed against {result.url}")
    if result.error_rate > max_error_rate:
        raise click.ClickException(
            f"{result.error_rate:.2%} of requests failed, more than --max-error-rate "
            f"{max_error_rate:.2%} allows"
            + (f" (last transport error: {result.last_error})" if result.last_error else "")
        )
