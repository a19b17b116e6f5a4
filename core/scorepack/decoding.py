"""The decode stage: turns request bodies into arrays without getting in the model's way.

Decoding (JPEG → pixels → normalised floats) runs in a pool of threads, off the event loop
and off the model thread. Left alone it competes with the model for the same cores: every
admitted request is decoded at once, and on a CPU the decode threads take cores from the
model's own threads while a batch runs, so each batch runs slower than it would alone
(issue 13 measured 0.94 × the in-process limit at 32 concurrent requests). Three rules,
all automatic, keep decoding behind the model:

**Decode only as far ahead as the batcher can use.** A request holds a *decode slot* from
the moment its decoding starts until its model call has finished; at most ``lookahead``
slots are held at once (default: two batches, ``2 ×`` the batch size the batcher forms,
the preferred batch size: one in the model and the next one ready). Admitted requests
beyond that wait, first come first served, for a slot; the wait counts against the
request's own timeout, so they still get their 504, and the queue bound still gives 503s.
Slots are given back by the model thread finishing calls, never by waiting requests, so a
burst larger than the bound cannot deadlock.

**Decode threads give way to the model's threads.** On Linux each decode thread lowers
its own scheduling priority (``os.setpriority`` on its native thread id; ``nice`` +10 by
default). When the model is running, its threads get the cores and decoding takes what is
left; when the model waits, decoding runs at full speed. This needs no knowledge of how
many threads a backend uses (ONNX Runtime, TensorFlow and PyTorch each size their own
pools), which is why it was chosen over bounding decode threads by "cores minus the
backend's threads". Elsewhere priorities are left alone.

**The pool is sized from the machine.** One decode thread per usable core (CPU affinity
and a cgroup CPU quota are respected). Pillow and NumPy release the GIL while they work,
so threads scale with cores: ``benchmarks/micro/decode_scaling.py`` measures it.

**A request no longer wanted stops decoding.** One V2 request may hold many images; its
decode thread checks between them (:func:`checkpoint`) whether the request is past its
deadline or its client has gone, and stops there with the 504 (or the drop) a single
image's request gets later, instead of decoding the rest for nobody.

Overrides (fields of the settings object, :class:`scorepack.settings.ScorerSettings`:
``serve --decode-threads`` etc., a settings file, or these variables):

- ``SCOREPACK_DECODE_THREADS=N``: the number of decode threads.
- ``SCOREPACK_DECODE_LOOKAHEAD=N``: the number of decode slots (requests decoded or being
  decoded and not yet through the model); ``0`` means no bound.
- ``SCOREPACK_DECODE_NICE=N``: how much to lower decode threads' priority (0 to 19);
  ``0`` leaves them at the process's priority.

Whoever holds the settings object (``scorepack serve``, a package's ``init()``) hands
its :class:`DecodeSettings` to the scorers it makes; a scorer made without them
(``scorepack.load()`` in a script) reads the variables through the settings object when
it is made.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

from .errors import ClientGoneError, ScorepackError, ScoringTimeoutError

__all__ = [
    "DEFAULT_NICE",
    "DecodeSettings",
    "DecodeStage",
    "DecodeWatch",
    "Slot",
    "checkpoint",
    "run_watched",
    "usable_cores",
]

logger = logging.getLogger("scorepack.decoding")

T = TypeVar("T")

#: how much decode threads lower their priority on Linux (nice 10 weighs about a tenth of
#: nice 0 in the kernel's scheduler: decoding gets a core only when the model leaves one)
DEFAULT_NICE = 10
#: decode slots per batch the model can take (one batch running, one ready)
LOOKAHEAD_BATCHES = 2


def usable_cores() -> int:
    """How many cores this process may use: CPU affinity, then a cgroup v2 CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max", encoding="ascii") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            # a container limited to 2.5 CPUs on a 64-core node gets 3 threads, not 64
            cores = min(cores, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


class DecodeSettings:
    """How the decode stage runs: threads, lookahead and priority (see the module docstring).

    ``None`` means automatic. The settings object makes these
    (:meth:`scorepack.settings.ScorerSettings.decode_settings`).
    """

    __slots__ = ("lookahead", "nice", "threads")

    def __init__(
        self,
        threads: int | None = None,
        lookahead: int | None = None,
        nice: int | None = None,
    ) -> None:
        self.threads = threads
        self.lookahead = lookahead
        self.nice = nice

    @classmethod
    def from_env(cls, threads: int | None = None) -> DecodeSettings:
        """Explicit ``threads`` first, then ``SCOREPACK_DECODE_*`` (read by the settings
        object), then automatic. A bad value is a :class:`ScorepackError` naming it."""
        from .settings import ScorerSettings, SettingsError

        try:
            settings: ScorerSettings = ScorerSettings.load()
        except SettingsError as exc:
            # a ScorepackError: the CLI turns it into a one-line exit message
            raise ScorepackError(str(exc)) from None
        return settings.decode_settings().with_threads(threads)

    def with_threads(self, threads: int | None) -> DecodeSettings:
        """These settings, with ``threads`` instead when it is given."""
        if not threads:
            return self
        return DecodeSettings(threads, self.lookahead, self.nice)


class Slot:
    """One request's place in the decode lookahead; :meth:`release` is safe to call twice."""

    __slots__ = ("_lock", "_released", "_stage")

    def __init__(self, stage: DecodeStage) -> None:
        self._stage = stage
        self._lock = threading.Lock()
        self._released = False

    def release(self) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
        self._stage._release()

    def release_when_done(self, future: Future[Any]) -> None:
        """Give the slot back when the request's model call has finished (or failed)."""
        future.add_done_callback(lambda _: self.release())


class DecodeStage:
    """A decode pool that gives way to the model (see the module docstring).

    ``acquire`` / ``acquire_async`` wait for a decode slot until a deadline; ``run`` /
    ``run_async`` call a decode function on a decode thread, ``submit`` without waiting.
    Works from threads and from any number of event loops at once (the HTTP server's loop
    and the gRPC server's call threads share one stage).
    """

    def __init__(self, settings: DecodeSettings | None = None, *, name: str = "model") -> None:
        settings = settings or DecodeSettings()
        self.name = name
        self.threads = settings.threads or usable_cores()
        #: fixed number of slots, or None: LOOKAHEAD_BATCHES × the batch size given to acquire
        self._lookahead = settings.lookahead
        self.nice = DEFAULT_NICE if settings.nice is None else settings.nice
        self._lock = threading.Lock()
        self._limit = 0
        self._busy = 0
        self._waiters: deque[Future[None]] = deque()
        #: the most slots ever held at once (for tests and /metrics)
        self.peak = 0
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    # --- slots -------------------------------------------------------------------------

    def limit_for(self, max_batch_size: int) -> int:
        """The number of decode slots for a model taking ``max_batch_size`` rows a call;
        0 means unbounded."""
        if self._lookahead is not None:
            return self._lookahead
        return LOOKAHEAD_BATCHES * max(1, max_batch_size)

    @property
    def in_flight(self) -> int:
        """Slots held now: requests decoding, decoded, or in a model call."""
        with self._lock:
            return self._busy

    @property
    def waiting(self) -> int:
        """Requests waiting for a slot."""
        with self._lock:
            return sum(1 for w in self._waiters if not w.done())

    def _try(self, max_batch_size: int) -> Future[None] | None:
        """Take a slot now (None) or queue for one (the future is granted a slot later)."""
        with self._lock:
            self._limit = self.limit_for(max_batch_size)
            if not self._limit or (self._busy < self._limit and not self._waiters):
                self._busy += 1
                self.peak = max(self.peak, self._busy)
                return None
            waiter: Future[None] = Future()
            self._waiters.append(waiter)
            return waiter

    def _release(self) -> None:
        granted = []
        with self._lock:
            self._busy -= 1
            # hand freed slots straight to the oldest waiters: nobody can overtake them
            while self._waiters and (not self._limit or self._busy < self._limit):
                waiter = self._waiters.popleft()
                if waiter.set_running_or_notify_cancel():  # False: it gave up (cancelled)
                    self._busy += 1
                    granted.append(waiter)
            self.peak = max(self.peak, self._busy)
        for waiter in granted:
            waiter.set_result(None)

    def _abandon(self, waiter: Future[None]) -> None:
        """The waiter gave up; if a slot reached it meanwhile, give that slot back."""
        if not waiter.cancel():
            self._release()

    def acquire(
        self,
        max_batch_size: int,
        deadline: float,
        watch: Callable[[Future[None]], None] | None = None,
    ) -> Slot | None:
        """Wait (blocking) for a slot until ``deadline`` (time.monotonic); None on timeout.

        ``watch`` is handed the wait, when there is one: a caller whose client can go
        away cancels it then, giving the place up cleanly, and this raises
        :class:`concurrent.futures.CancelledError`.
        """
        waiter = self._try(max_batch_size)
        if waiter is not None:
            if watch is not None:
                watch(waiter)
            try:
                waiter.result(timeout=max(0.0, deadline - time.monotonic()))
            except FutureTimeout:
                self._abandon(waiter)
                return None
            except BaseException:
                self._abandon(waiter)
                raise
        return Slot(self)

    async def acquire_async(self, max_batch_size: int, deadline: float) -> Slot | None:
        """Wait for a slot until ``deadline`` without blocking the loop; None on timeout.

        Cancelling the calling task (the client went away) gives the place up cleanly.
        """
        waiter = self._try(max_batch_size)
        if waiter is not None:
            try:
                await asyncio.wait_for(
                    asyncio.wrap_future(waiter), max(0.0, deadline - time.monotonic())
                )
            except asyncio.TimeoutError:
                self._abandon(waiter)
                return None
            except BaseException:
                self._abandon(waiter)
                raise
        return Slot(self)

    # --- the pool ----------------------------------------------------------------------

    def run(self, func: Callable[..., T], *args: Any) -> T:
        """Call ``func(*args)`` on a decode thread and wait for it (for threaded hosts)."""
        return self.pool().submit(func, *args).result()

    def submit(self, func: Callable[..., Any], *args: Any) -> None:
        """Call ``func(*args)`` on a decode thread without waiting for it: ``func``
        reports its own outcome (:meth:`Scorer.run <scorepack.scorer.Scorer.run>`'s
        requests, whose decode thread also queues them for the model)."""
        self.pool().submit(func, *args)

    async def run_async(self, func: Callable[..., T], *args: Any) -> T:
        """Call ``func(*args)`` on a decode thread without blocking the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self.pool(), func, *args)

    def pool(self) -> ThreadPoolExecutor:
        """The decode threads, started on first use."""
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    self.threads,
                    thread_name_prefix=f"scorepack-decode-{self.name}",
                    initializer=self._give_way,
                )
            return self._pool

    def _give_way(self) -> None:
        """Runs first on every decode thread: lower this thread's priority (Linux only)."""
        if self.nice <= 0 or not _per_thread_priority():
            return
        tid = threading.get_native_id()
        try:
            current = os.getpriority(os.PRIO_PROCESS, tid)
            # on Linux PRIO_PROCESS with a thread id changes that one thread only
            os.setpriority(os.PRIO_PROCESS, tid, min(19, current + self.nice))
        except OSError as exc:  # a sandbox may forbid it; decoding works the same
            logger.debug("decode threads keep their priority: %s", exc)

    def close(self) -> None:
        """Stop the decode threads (queued decodes still run)."""
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False)
                self._pool = None

    def describe(self) -> dict[str, Any]:
        """The stage's settings, for /info and logs."""
        return {
            "decode_threads": self.threads,
            "decode_lookahead": self._lookahead if self._lookahead is not None else "auto",
            "decode_nice": self.nice if _per_thread_priority() else 0,
        }


class DecodeWatch:
    """One request's decoding, as its decode thread sees it: whether the request is still
    wanted. A request's decoding may be several units of work (the images of one V2
    request, up to the max batch size of them); between two, :func:`checkpoint` stops it
    once its deadline has passed (:class:`~scorepack.errors.ScoringTimeoutError`, the 504
    a late model call gets) or its caller gave up (the client left, or was answered
    already: :class:`~scorepack.errors.ClientGoneError`). Without this, a departed
    client's 64 images would all still be decoded, holding a decode thread that its
    released slot says is free."""

    __slots__ = ("abandoned", "deadline", "given_up", "timeout_s")

    def __init__(
        self,
        deadline: float,
        timeout_s: float,
        given_up: Callable[[], bool] | None = None,
    ) -> None:
        #: time.monotonic() past which the request is answered 504
        self.deadline = deadline
        self.timeout_s = timeout_s
        #: asked at each checkpoint (a threaded host: the request's future cancelled)
        self.given_up = given_up
        #: set by an async host when the request's task is cancelled (client gone)
        self.abandoned = False

    def check(self) -> None:
        """Raise if the request is no longer wanted (see the class docstring)."""
        if self.abandoned or (self.given_up is not None and self.given_up()):
            raise ClientGoneError()
        if time.monotonic() > self.deadline:
            raise ScoringTimeoutError(self.timeout_s)


_current = threading.local()


def run_watched(watch: DecodeWatch, func: Callable[..., T], *args: Any) -> T:
    """``func(*args)`` on this (decode) thread, with ``watch`` the one :func:`checkpoint`
    consults meanwhile."""
    _current.watch = watch
    try:
        return func(*args)
    finally:
        _current.watch = None


def checkpoint() -> None:
    """Between two units of one request's decoding: raise when the request being decoded
    on this thread is past its deadline or given up (:class:`DecodeWatch`); nothing
    outside :func:`run_watched`."""
    watch: DecodeWatch | None = getattr(_current, "watch", None)
    if watch is not None:
        watch.check()


def _per_thread_priority() -> bool:
    # elsewhere (macOS, Windows) PRIO_PROCESS means the whole process: never lower that
    return sys.platform.startswith("linux") and hasattr(os, "setpriority")
