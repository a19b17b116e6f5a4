"""Garbage-collector stress for the test suite: ``SCOREPACK_GC_STRESS=1 scripts/test ...``.

Collects on every allocation the thresholds allow and, on a thread of its own, about every
half millisecond, so that objects freed only by the collector (reference cycles, type
objects) are freed while other threads use what they refer to. This is how the segfault
of CI run 21 was reproduced (protobuf's upb runtime handed a decode thread a message class
the collector had half-cleared; fixed in ``scorepack.proto.messages``): without it, one
crash in 87 runs of its test file; with it, one in six to eight on a busy machine. Run it with
``PYTHONFAULTHANDLER=1`` to see every thread's stack when the process dies.
"""

from __future__ import annotations

import gc
import threading
import time

__all__ = ["start"]


def start(period: float = 0.0005) -> None:
    """Collect on every allocation, and from a daemon thread every ``period`` seconds."""
    gc.set_threshold(1, 1, 1)

    def hammer() -> None:
        while True:
            gc.collect()
            time.sleep(period)

    threading.Thread(target=hammer, name="gc-stress", daemon=True).start()
