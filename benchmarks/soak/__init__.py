"""A bounded soak over every protocol and host: ``python -m benchmarks.soak --help``.

It looks for what short tests miss: memory, threads, open files or in-flight counts that
grow with requests served, or with models loaded and unloaded. A real server runs in its
own process (the embedded server over a model repository, and a built package under
azmlinfsrv) and is driven with a mix of good and bad requests over /score, V2 REST (JSON
and binary), V2 gRPC (scorepack's clients and tritonclient), cancelled and expired gRPC
calls, clients that hang up mid-request, and bursts past a small queue, while one model
is unloaded and loaded again and again beside the one being driven. The server's RSS,
threads, open fds and its in-flight and queue-depth gauges are sampled as it goes; the
report gives their slope after warm-up, per 10,000 requests.

Not a test (it runs for minutes): the tests hold what it found, by count
(tests/test_soak_counts.py). ``--census`` also asks the server, through a signal, for its
gc object counts by type, its threads by name and (``--tracemalloc``) its traced heap, after
warm-up and at the end, and reports what grew: the way to find where a slope comes from.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def tests_on_path() -> None:
    """Reuse the tests' model builders, images and fixture backends."""
    tests = str(ROOT / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
