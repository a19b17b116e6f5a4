"""``python -m benchmarks.soak.probe ARGS``: ``scorepack ARGS`` that answers a census signal.

On SIGUSR1 the server writes, to ``$SOAK_CENSUS_DIR/census-N.json``, its gc-tracked objects
counted by type, its threads counted by name (digits dropped, so a pool is one line), and,
when ``$SOAK_TRACEMALLOC`` is a frame count, a tracemalloc snapshot beside it
(``census-N.tracemalloc``). ``$SOAK_GC_STRESS=1`` runs the collector all the time, as the tests'
``SCOREPACK_GC_STRESS=1`` does (tests/gc_stress.py), to shake out crashes of native code
that a collection at the wrong moment meets (a crash's stacks go to the log:
faulthandler). The
handler runs on the main thread (the server's event loop)
between two of its steps; the soak pauses its traffic around it.
"""

from __future__ import annotations

import gc
import json
import os
import re
import runpy
import signal
import sys
import threading
import tracemalloc
from collections import Counter
from pathlib import Path
from types import FrameType

_count = [0]


def census() -> dict[str, object]:
    """Objects by type and threads by name, after a full collection."""
    gc.collect()
    types = Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.get_objects())
    threads = Counter(re.sub(r"\d+", "N", t.name) for t in threading.enumerate())
    return {"types": dict(types), "threads": dict(threads)}


def _on_signal(signum: int, frame: FrameType | None) -> None:
    folder = Path(os.environ["SOAK_CENSUS_DIR"])
    _count[0] += 1
    stem = folder / f"census-{_count[0]}"
    result = census()
    if tracemalloc.is_tracing():
        tracemalloc.take_snapshot().dump(str(stem.with_suffix(".tracemalloc")))
        result["traced_bytes"] = tracemalloc.get_traced_memory()[0]
    # written under a temporary name: the soak waits for the final name
    stem.with_suffix(".tmp").write_text(json.dumps(result))
    stem.with_suffix(".tmp").rename(stem.with_suffix(".json"))


def main() -> None:
    frames = int(os.environ.get("SOAK_TRACEMALLOC") or 0)
    if frames:
        tracemalloc.start(frames)
    if os.environ.get("SOAK_GC_STRESS"):
        from benchmarks.soak import tests_on_path

        tests_on_path()
        from gc_stress import start

        start()
    signal.signal(signal.SIGUSR1, _on_signal)
    sys.argv = ["scorepack", *sys.argv[1:]]
    runpy.run_module("scorepack", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
