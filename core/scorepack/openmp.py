"""The model's OpenMP threads stop spinning soon after a model call.

PyTorch's CPU kernels (and MKL and oneDNN inside it, and any backend built on GNU OpenMP)
run on libgomp's thread team. When a parallel region ends, libgomp keeps its worker threads
spinning on their cores for ``GOMP_SPINCOUNT`` iterations before they sleep: 300 000 by
default, which on this machine (AMD EPYC, 2 cores) is about 8 ms of CPU (medians of 7.3–9.4
ms in seven runs) burnt by the idle worker after *every* ResNet50 batch-1 call
(``benchmarks/micro/c1_breakdown.py --spin``). A loop that calls the model again at once
(the in-process limit, a server under load) never notices: the spin ends when the next call
begins. A server at low concurrency does: between one request's model call and the next,
its own work — sending the answer, reading the client's next request, decoding it — runs
while a worker spins on one of the cores, and the decode threads, which lower their
priority to give way to the model (:mod:`scorepack.decoding`), give way to a thread that is
doing nothing.

So before the first backend loads its framework, scorepack sets ``GOMP_SPINCOUNT`` to
:data:`IDLE_SPINCOUNT` (30 000: under a millisecond here, where 300 000 took about 8 ms;
libgomp's own estimate is 100 000 spins a millisecond): long enough for the gaps between
operators inside one call, short enough that an idle worker sleeps before the next lone
request arrives (after a batch-1 call: 0.0 ms of CPU in the median, at most 0.8 ms).
ONNX Runtime shows that sleeping workers cost a lone request little: its threads sleep
between operators (about 40 times a batch-1 call) and its c=1 p50 met the in-process
latency (+0.0 ms in the stop-17 quiet window). Other
backends need nothing: ONNX Runtime's threads do not spin unless ``-O allow_spinning=true``,
and TensorFlow's Eigen pool spins for about 0.05 ms after a call.

Measured with ``c1_breakdown`` (PyTorch ResNet50, fresh servers, arms alternating, a
machine shared with other work, 17:39–17:47 UTC of 2026-12-07): the server's threads waited
for a core 1.6–2.1 ms per request with the bound against 9.0–10.4 ms with libgomp's
default; the model call took 26.6 ms against 28.0 ms (medians of five servers each), c=1
p50 29 against 30 ms; c=32 34.2 against 33.8 requests/s (two each: no loss).

Override: set ``GOMP_SPINCOUNT`` (or ``OMP_WAIT_POLICY``) yourself and scorepack leaves
both alone; ``GOMP_SPINCOUNT=300000`` is libgomp's own default. libgomp reads the variable
once, when it is loaded: in a process that loaded it before the first model (a framework
imported first), the setting cannot apply, and scorepack says so instead of setting it.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import MutableMapping

__all__ = ["IDLE_SPINCOUNT", "bound_idle_spin", "idle_spin"]

logger = logging.getLogger("scorepack.openmp")

#: libgomp spin iterations before an idle OpenMP worker sleeps (libgomp's default: 300 000)
IDLE_SPINCOUNT = 30_000
#: the user's own settings, which scorepack never overrides
USER_VARIABLES = ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")

_lock = threading.Lock()
_state: str | None = None


def libgomp_loaded(maps: str = "/proc/self/maps") -> bool:
    """Whether GNU OpenMP is already loaded in this process (Linux; elsewhere False)."""
    try:
        with open(maps, encoding="utf-8", errors="replace") as f:
            return any("libgomp" in line for line in f)
    except OSError:
        return False


def bound_idle_spin(
    env: MutableMapping[str, str] | None = None, *, maps: str = "/proc/self/maps"
) -> str:
    """Set ``GOMP_SPINCOUNT`` for the model's OpenMP threads unless the user set it (or
    ``OMP_WAIT_POLICY``) or libgomp is already loaded; say what is in effect."""
    env = os.environ if env is None else env
    for name in USER_VARIABLES:
        if name in env:
            return f"{name}={env[name]} (set by the user)"
    if sys.platform.startswith("linux") and libgomp_loaded(maps):
        # read once at load: setting it now would only mislead child processes
        return "libgomp was loaded before the model: its own spin count"
    env["GOMP_SPINCOUNT"] = str(IDLE_SPINCOUNT)
    return f"GOMP_SPINCOUNT={IDLE_SPINCOUNT}"


def idle_spin() -> str:
    """:func:`bound_idle_spin` once per process (the first Scorer to start); then what it
    said. Called before any backend loads, on the thread that starts the Scorer."""
    global _state
    with _lock:
        if _state is None:
            _state = bound_idle_spin()
            logger.debug("OpenMP idle spin: %s", _state)
        return _state
