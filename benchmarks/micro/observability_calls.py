"""What one request's observability costs, piece by piece, in microseconds (in process).

The server-level A/B (``observability_overhead --ab``) says what metrics and access lines
cost a served request all told; this says where those microseconds go, with each piece
called as the servers call it:

* ``metrics``: one ``RequestStats.record`` of a scoring request (count + latency histogram);
* ``access text`` / ``access json``: one ``log_access`` of a scored request into the CLI's
  handler (:func:`~scorepack.telemetry.logs.configure_logging`, writing to ``/dev/null``),
  then its parts: making the record, formatting it, the handler's lock and buffer;
* ``request id``: a new request id (a gRPC call without one, an HTTP request without
  ``x-request-id``);
* ``grpc call ...``: ``CallObserver.begin`` + ``end`` of a ModelInfer that scored, with
  metrics and access lines off, metrics only, and both (text), as ``grpc_v2/observe.py``
  does them around every call.

    .venv/bin/python -m benchmarks.micro.observability_calls
    PYTHONPATH=/tmp/before/core .venv/bin/python -m benchmarks.micro.observability_calls

The second form measures another tree's ``core/`` (e.g. a worktree of main) on the same
machine, for a before/after. Each figure is the best of ``--repeat`` runs of ``--number``
calls: the least the piece costs, which a busy machine only raises.
"""

from __future__ import annotations

import argparse
import logging
import os
import timeit
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from scorepack.server import limits
from scorepack.telemetry import logs
from scorepack.telemetry.stats import NoRequestStats, RequestStats


def _best(fn: Callable[[], Any], number: int, repeat: int) -> float:
    """Microseconds per call: the best of ``repeat`` runs of ``number`` calls."""
    fn()
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


class _Context:
    """The two things ``CallObserver.end`` asks a grpc.ServicerContext."""

    def __init__(self) -> None:
        self._metadata = (("user-agent", "grpc-python/1.70.0"), ("te", "trailers"))

    def invocation_metadata(self) -> Any:
        return self._metadata

    def time_remaining(self) -> float | None:
        return None


def _new_id() -> Callable[[], Any]:
    # the tree's own way of making a request id (older trees: uuid4)
    made = getattr(limits, "new_request_id", None)
    if made is not None:
        return made  # type: ignore[no-any-return]
    import uuid

    return lambda: str(uuid.uuid4())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--number", type=int, default=20000, help="calls per run")
    parser.add_argument("--repeat", type=int, default=7, help="runs; the best is reported")
    args = parser.parse_args()
    n, r = args.number, args.repeat
    results: dict[str, float] = {}

    def measure(name: str, fn: Callable[[], Any]) -> None:
        results[name] = _best(fn, n, r)
        print(f"{name:34s} {results[name]:7.2f} us", flush=True)

    stats = RequestStats()
    measure(
        "metrics: RequestStats.record",
        lambda: stats.record("/score", 200, 0.0012, model="tiny", version="1", protocol="azureml"),
    )

    devnull = open(os.devnull, "w")
    handler = logs.BufferedStreamHandler(devnull)
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    line = logs.AccessLine("3f1c", "POST", "/score", 200, 1.2, "azureml", "tiny", "1", 4, 0.3)
    make = getattr(logs, "_access_record", None) or (
        lambda msg: logs.access_logger.makeRecord(
            logs.ACCESS_LOGGER, logging.INFO, logs.__file__, 0, msg, (), None
        )
    )
    record = make(line)
    for fmt in logs.LOG_FORMATS:
        handler.setFormatter(logs.formatter(fmt))
        measure(
            f"access {fmt}: log_access",
            lambda: logs.log_access(
                "3f1c",
                "POST",
                "/score",
                200,
                0.0012,
                protocol="azureml",
                model="tiny",
                version="1",
                batch_size=4,
                queue_seconds=0.0003,
            ),
        )
        measure(f"access {fmt}:   format", lambda: handler.format(record))
    handler.setFormatter(logs.formatter("text"))
    measure("access:   AccessLine(...)", lambda: logs.AccessLine(*line))
    measure("access:   the record", lambda: make(line))
    measure("access:   logger.handle (text)", lambda: logs.access_logger.handle(record))
    measure("request id", _new_id())

    from scorepack.server.grpc_v2.observe import CallObserver, method_path

    context = _Context()
    request = SimpleNamespace(id="")
    path = method_path("ModelInfer")
    scorer = SimpleNamespace(name="tiny", version="1")
    result = SimpleNamespace(batch_size=4, queue_seconds=0.0003)

    def grpc_call(observer: CallObserver) -> None:
        call = observer.begin()
        call.scorer = scorer
        call.result = result
        observer.end(call, path, request, context)

    for name, requests, access in (
        ("off", NoRequestStats(), False),
        ("metrics", RequestStats(), False),
        ("on", RequestStats(), True),
    ):
        logs.set_access_log(access)
        observer = CallObserver(requests)
        measure(f"grpc call {name}", lambda observer=observer: grpc_call(observer))
    logs.set_access_log(True)
    handler.close()


if __name__ == "__main__":
    main()
