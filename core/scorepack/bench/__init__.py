"""A load generator for any scoring URL: ``scorepack bench``.

:mod:`.run` drives the load (closed loop, or open loop at a fixed rate with latencies
corrected for coordinated omission); :mod:`.http` is the HTTP/1.1 connection it drives
by default. Another protocol plugs in as a :class:`Connection` factory.
"""

from .run import (
    DEFAULT_MAX_ERROR_RATE,
    BenchConfig,
    BenchResult,
    Connection,
    Snapshot,
    run_bench,
)

__all__ = [
    "DEFAULT_MAX_ERROR_RATE",
    "BenchConfig",
    "BenchResult",
    "Connection",
    "Snapshot",
    "run_bench",
]
