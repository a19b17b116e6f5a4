"""Dynamic batching: many requests, one model call, one thread that owns the model.

Requests go through three steps, so that hosts with threads (gunicorn under azmlinfsrv)
and hosts with an event loop (the embedded server) share one mechanism:

1. :meth:`Batcher.admit` reserves a place *before* the request is decoded. A full queue
   raises :class:`~scorepack.errors.QueueFullError` at once (503, Retry-After).
2. The host decodes the body wherever it likes (off the model thread) and calls
   :meth:`Ticket.submit` with named arrays; it gets a ``concurrent.futures.Future``.
3. The model thread gathers queued work into one batch — up to the preferred batch size
   (``max_batch_size`` unless one is set or measured: :mod:`scorepack.batch_sizing`) or
   ``max_delay_ms`` after the oldest item arrived, whichever comes first — calls the model
   once and splits the results back per request.

The batcher knows how many admitted requests are still being decoded. When none are,
and at least as many requests are queued as the last batch had, it does not wait out the
delay: a lone client pays no batching tax, while under load the queue fills during each
model call and the next batch forms by itself. Waiting for the last batch's company
matters when clients come back one by one rather than together (gRPC's calls reach the
batcher spread out: at c=8 its batches fell apart into 6.4 rows a call on average, where
``/score``'s kept 8): without it the first returning request would run at once, alone or
nearly, and the rest would follow in fragments, each fragment a model call. A drop in
clients costs one ``max_delay_ms`` wait, after which the smaller batch is the measure.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from .batch_sizing import LoadTuner
from .errors import (
    BackendContractError,
    NotReadyError,
    PredictError,
    QueueFullError,
    ScorepackError,
    ScoringTimeoutError,
)
from .parsing import parse_preferred_batch_size
from .telemetry.stats import Histogram

__all__ = ["BatchResult", "BatchStats", "Batcher", "BatchingConfig", "Ticket"]

logger = logging.getLogger("scorepack.batching")

Arrays = dict[str, np.ndarray]
RunBatch = Callable[[Arrays], Arrays]


@dataclass(frozen=True)
class BatchingConfig:
    """How requests are gathered into model calls.

    ``max_queue_size`` bounds the requests admitted but not yet in a batch;
    ``timeout_ms`` bounds a request's whole wait, from admission to its result.
    ``preferred_batch_size`` is ``off`` (the default: batches fill to ``max_batch_size``),
    ``auto`` (tuned under load) or a number of rows (:mod:`scorepack.batch_sizing`).
    """

    max_batch_size: int = 32
    max_delay_ms: float = 5.0
    max_queue_size: int = 256
    timeout_ms: float = 30_000.0
    preferred_batch_size: int | str = "off"

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        try:
            parsed = parse_preferred_batch_size(self.preferred_batch_size)
        except ValueError as exc:
            raise ValueError(f"preferred_batch_size: {exc}") from None
        object.__setattr__(self, "preferred_batch_size", parsed)
        if self.max_delay_ms < 0:
            raise ValueError("max_delay_ms must not be negative")
        if self.max_queue_size < 1:
            raise ValueError("max_queue_size must be at least 1")
        if self.timeout_ms <= 0:
            raise ValueError("timeout_ms must be positive")


class BatchResult(NamedTuple):
    """One request's share of a model call, and when it queued and ran (``time.monotonic``).

    A named tuple rather than a dataclass: one is made per request, and a tuple is the
    cheapest object to make.
    """

    outputs: Arrays
    batch_size: int
    #: when the request was queued, its model call began and ended
    enqueued: float = 0.0
    started: float = 0.0
    finished: float = 0.0

    @property
    def queue_seconds(self) -> float:
        """How long the request waited in the queue for its model call."""
        return max(0.0, self.started - self.enqueued)


@dataclass
class BatchStats:
    """Counters for /metrics and tests; updated by the model thread only (``rejected``
    under the batcher's lock)."""

    batches: int = 0
    rows: int = 0
    requests: int = 0
    errors: int = 0
    #: work found past its deadline in the queue (the Scorer counts every 504 it answers)
    timeouts: int = 0
    rejected: int = 0
    busy_seconds: float = 0.0
    #: batch size (rows) → how many model calls had it
    sizes: dict[int, int] = field(default_factory=dict)
    #: seconds from queued to taken into a model call, per request
    queue_wait: Histogram = field(default_factory=Histogram)
    #: seconds per model call
    model_call: Histogram = field(default_factory=Histogram)
    #: batch size (rows) → the model calls of that size that succeeded, as one tuple
    #: ``(calls, gather, call, split)`` of the count and the seconds spent gathering the
    #: requests' inputs into one batch, in the model call, and splitting its outputs back
    #: into the requests' answers: the statistics extension's ``batch_stats``
    #: (:mod:`scorepack.v2.statistics`). A tuple replaced whole, so that a reader on
    #: another thread never sees a count without its seconds.
    executions: dict[int, tuple[int, float, float, float]] = field(default_factory=dict)


class _Work:
    __slots__ = ("batch_size", "deadline", "enqueued", "future", "inputs", "key", "rows")

    def __init__(self, inputs: Arrays, rows: int, deadline: float, future: Future[BatchResult]):
        self.inputs = inputs
        self.rows = rows
        self.deadline = deadline
        self.future = future
        self.enqueued = time.monotonic()
        # only work with the same per-row shapes and dtypes can share a model call, and
        # an input without a batch dimension (a scalar: one value for all the rows) only
        # with work whose value is the same
        self.key = tuple(
            (n, a.shape[1:], a.dtype.str) if a.ndim else (n, a.dtype.str, a.tobytes())
            for n, a in sorted(inputs.items())
        )


class Ticket:
    """A place in the queue, held while the request is decoded."""

    __slots__ = ("_batcher", "_done", "deadline")

    def __init__(self, batcher: Batcher, deadline: float) -> None:
        self._batcher = batcher
        self._done = False
        self.deadline = deadline

    def submit(
        self, inputs: Arrays, rows: int, future: Future[BatchResult] | None = None
    ) -> Future[BatchResult]:
        """Queue decoded inputs (first dimension ``rows``) and give up the ticket.

        The result comes in ``future`` when given (one its caller already waits on, so
        the model thread wakes it directly), else in a new one; either is returned.
        """
        if self._done:
            raise RuntimeError("ticket already used")
        self._done = True
        return self._batcher._submit(inputs, rows, self.deadline, future)

    def release(self) -> None:
        """Give up the place without submitting (decoding failed). Safe to call twice."""
        if not self._done:
            self._done = True
            self._batcher._release()

    def __enter__(self) -> Ticket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class Batcher:
    """Gathers work into batches and runs them on one model thread.

    ``run_batch`` is called on that thread only, with arrays whose first dimension is the
    batch; it must return one result row per input row (checked here). ``setup`` runs on
    the same thread before anything else (load the model, warm it up); until it returns
    the batcher is not ready.
    """

    def __init__(
        self,
        run_batch: RunBatch,
        config: BatchingConfig | None = None,
        *,
        model_limit: int | None = None,
        name: str = "model",
    ) -> None:
        self.config = config or BatchingConfig()
        self.name = name
        self._run_batch = run_batch
        #: the most rows one model call takes (larger requests are split)
        self.max_rows = min(self.config.max_batch_size, model_limit or self.config.max_batch_size)
        #: the most rows a batch gathers (the preferred batch size, set after warm-up)
        self.batch_rows = self.max_rows
        self.stats = BatchStats()
        self._queue: deque[_Work] = deque()
        self._upstream = 0  # admitted, still being decoded
        self._inflight = 0  # admitted, not yet answered by the model (or given up)
        self._last_requests = 0  # requests in the last batch taken (see _next_batch)
        self._last_rows = 0  # rows in the last batch taken (for the tuner)
        #: ``preferred_batch_size: auto`` tuning under load; None when not tuning (model
        #: thread only: batch_sizing.LoadTuner)
        self._tuner: LoadTuner | None = None
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._closed = False
        self._ready = threading.Event()
        self._failed: BaseException | None = None
        #: why the model thread stopped serving, when a bug of its own stopped it (_died)
        self._died_reason: str | None = None

    # --- lifecycle -------------------------------------------------------------------

    def start(
        self,
        setup: Callable[[], None] | None = None,
        teardown: Callable[[], None] | None = None,
    ) -> None:
        """Start the model thread: ``setup`` first, then batches until :meth:`stop`, then
        ``teardown``, all on that one thread."""
        if self._thread is not None:
            raise RuntimeError("batcher already started")
        self._thread = threading.Thread(
            target=self._main,
            args=(setup, teardown),
            name=f"scorepack-{self.name}",
            daemon=True,
        )
        self._thread.start()

    def set_model_limit(self, limit: int | None) -> None:
        """Cap batches at what the model accepts (known only after it is loaded)."""
        if limit:
            self.max_rows = min(self.max_rows, limit)
            self.batch_rows = min(self.batch_rows, self.max_rows)

    def set_batch_rows(self, rows: int) -> None:
        """Gather batches of at most ``rows`` (the preferred batch size; at most
        :attr:`max_rows`). A single request of more rows still runs whole, alone."""
        self.batch_rows = max(1, min(rows, self.max_rows))

    def set_tuner(self, tuner: LoadTuner | None) -> None:
        """Let ``tuner`` set the batch cap from the model thread's calls under load until it
        settles (``preferred_batch_size: auto``; :mod:`scorepack.batch_sizing`). Call it on
        the model thread (setup) or before :meth:`start`."""
        self._tuner = tuner
        if tuner is not None:
            self.set_batch_rows(tuner.cap)

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until setup finished; re-raise its error if it failed."""
        self._ready.wait(timeout)
        if self._failed is not None:
            raise self._failed
        return self._ready.is_set()

    @property
    def ready(self) -> bool:
        return self._ready.is_set() and self._failed is None and not self._stopping

    @property
    def started(self) -> bool:
        """True once :meth:`start` was called."""
        return self._thread is not None

    @property
    def failure(self) -> BaseException | None:
        """What stopped the model: the error setup raised, or a bug of the model thread's
        own (:meth:`_died`); None while it serves or loads."""
        return self._failed

    @property
    def failure_reason(self) -> str | None:
        """Why the model does not serve, for people ("failed to load: ...", "stopped
        serving: ..."); None while it serves or loads."""
        if self._died_reason is not None:
            return self._died_reason
        return None if self._failed is None else f"failed to load: {self._failed}"

    @property
    def queue_depth(self) -> int:
        """Admitted requests not yet in a model call: decoded, or still being decoded."""
        with self._cond:
            return len(self._queue) + self._upstream

    @property
    def queued(self) -> int:
        """Decoded work waiting for a model call (what the next batch is made from)."""
        with self._cond:
            return len(self._queue)

    @property
    def inflight(self) -> int:
        """Requests admitted and not yet answered: decoding, queued or in a model call.

        The gauge an autoscaler scales on (``scorepack_inflight_requests``).
        """
        return self._inflight

    def stop(self, timeout: float | None = 30.0) -> None:
        """Finish what is queued, then stop the model thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    # --- admission -------------------------------------------------------------------

    def admit(self, timeout_ms: float | None = None) -> Ticket:
        """Reserve a place for one request, or raise at once if the queue is full."""
        if self._failed is not None:
            raise NotReadyError(f"The model {self.failure_reason}")
        if not self._ready.is_set():
            raise NotReadyError()
        if self._stopping:
            raise NotReadyError("The server is shutting down.")
        limit = self.config.max_queue_size
        with self._cond:
            if len(self._queue) + self._upstream >= limit:
                self._purge()
            if len(self._queue) + self._upstream >= limit:
                self.stats.rejected += 1
                raise QueueFullError(limit, retry_after=self._retry_after())
            self._upstream += 1
            self._inflight += 1
        wait = (timeout_ms if timeout_ms is not None else self.config.timeout_ms) / 1000
        return Ticket(self, time.monotonic() + wait)

    def _purge(self) -> None:
        """Drop queued work nobody waits for any more (cancelled or past its deadline).

        Without this, requests that already got their 504 would hold their places until
        the model thread next takes a batch, and new requests would be refused for them.
        Called with the lock held.
        """
        now = time.monotonic()
        live: deque[_Work] = deque()
        for work in self._queue:
            if work.future.cancelled():
                continue
            if now > work.deadline:
                self.stats.timeouts += 1
                _fail(work.future, ScoringTimeoutError(self.config.timeout_ms / 1000))
                continue
            live.append(work)
        self._queue = live

    def _retry_after(self) -> float:
        # about how long the queue in front takes to drain, at least a second
        if not self.stats.batches:
            return 1.0
        per_row = self.stats.busy_seconds / max(self.stats.rows, 1)
        return float(max(1, round(per_row * len(self._queue))))

    def _release(self) -> None:
        with self._cond:
            self._upstream -= 1
            self._inflight -= 1
            self._cond.notify_all()

    def _answered(self, _future: Future[BatchResult]) -> None:
        # the request's future is done (result, error or cancelled): it leaves the count.
        # The lock is re-entrant: this may run inside _take, which holds it.
        with self._cond:
            self._inflight -= 1

    def _submit(
        self,
        inputs: Arrays,
        rows: int,
        deadline: float,
        parent: Future[BatchResult] | None = None,
    ) -> Future[BatchResult]:
        if parent is None:
            parent = Future()
        if rows <= self.max_rows:
            works = [_Work(inputs, rows, deadline, parent)]
        else:
            works = self._split(inputs, rows, deadline, parent)
        with self._cond:
            self._upstream -= 1
            if self._closed:
                self._inflight -= 1
                if self._died_reason is not None:
                    raise NotReadyError(f"The model {self._died_reason}")
                raise NotReadyError("The server is shutting down.")
            self._queue.extend(works)
            self._cond.notify_all()
        parent.add_done_callback(self._answered)
        return parent

    def _split(
        self, inputs: Arrays, rows: int, deadline: float, parent: Future[BatchResult]
    ) -> list[_Work]:
        """A request larger than a batch runs as several; its parent future gathers them."""
        starts = range(0, rows, self.max_rows)
        children: list[Future[BatchResult]] = [Future() for _ in starts]
        lock = threading.Lock()
        remaining = [len(children)]

        def gather(_: Future[BatchResult]) -> None:
            with lock:
                remaining[0] -= 1
                if remaining[0]:
                    return
            if parent.done():
                return
            for child in children:
                if child.cancelled():
                    parent.cancel()
                    return
                if child.exception() is not None:
                    parent.set_exception(child.exception())
                    return
            parts = [c.result() for c in children]
            merged = {k: np.concatenate([p.outputs[k] for p in parts]) for k in parts[0].outputs}
            parent.set_result(
                BatchResult(
                    merged,
                    max(p.batch_size for p in parts),
                    min(p.enqueued for p in parts),
                    min(p.started for p in parts),
                    max(p.finished for p in parts),
                )
            )

        def cancel_children(f: Future[BatchResult]) -> None:
            if f.cancelled():
                for child in children:
                    child.cancel()

        parent.add_done_callback(cancel_children)
        works = []
        for start, child in zip(starts, children, strict=True):
            stop = min(start + self.max_rows, rows)
            chunk = {k: v[start:stop] for k, v in inputs.items()}
            works.append(_Work(chunk, stop - start, deadline, child))
            child.add_done_callback(gather)
        return works

    # --- the model thread --------------------------------------------------------------

    def _main(self, setup: Callable[[], None] | None, teardown: Callable[[], None] | None) -> None:
        try:
            if setup is not None:
                setup()
        except BaseException as exc:
            self._failed = exc
            logger.error("%s failed to load: %s", self.name, exc)
            self._ready.set()
            return
        self._ready.set()
        batch: list[_Work] = []
        try:
            while True:
                taken = self._next_batch()
                if taken is None:
                    break
                batch = taken
                if batch:
                    self._execute(batch)
                batch = []
        except BaseException as exc:
            self._died(exc, batch)
        if teardown is not None:
            try:
                teardown()
            except Exception as exc:
                logger.warning("%s did not unload cleanly: %s", self.name, exc)

    def _died(self, exc: BaseException, batch: list[_Work]) -> None:
        """The model thread met a bug of its own (a model's errors fail their requests in
        :meth:`_execute` and never get here): say so, answer every request it held or
        would have taken, and refuse new ones as not ready, with the reason. Quietly
        gone, it left each later request waiting for its timeout while the model still
        looked ready (the soak's purged queue did that, before it was fixed)."""
        logger.critical("%s: the model thread stopped: %r", self.name, exc, exc_info=exc)
        reason = (
            f"stopped serving: its model thread failed ({type(exc).__name__}: {exc}); "
            "unload and load it, or restart the server."
        )
        with self._cond:
            self._failed, self._died_reason, self._closed = exc, reason, True
            waiting, self._queue = list(self._queue), deque()
            self._cond.notify_all()
        for work in [*batch, *waiting]:
            # each its own exception: one instance raised on many threads grows one traceback
            _fail(work.future, NotReadyError(f"The model {reason}"))

    def run_now(self, inputs: Arrays, rows: int) -> Arrays:
        """Call the model at once with the batch-contract check (warm-up; model thread only)."""
        return self._call(inputs, rows)

    def _next_batch(self) -> list[_Work] | None:
        delay = self.config.max_delay_ms / 1000
        with self._cond:
            if self._tuner is not None:
                # told when the thread comes back for work, with the rows then waiting
                # (0: it is about to wait for traffic)
                self._tune(self._tuner, self._compatible_rows() if self._queue else 0)
            while True:
                while not self._queue:
                    # on stop, requests still being decoded are let in before the thread ends
                    if self._stopping and self._upstream == 0:
                        self._closed = True
                        return None
                    self._cond.wait()
                due = self._queue[0].enqueued + delay
                # as many requests as the last batch had: its clients come back one by one
                company = self._last_requests
                # the queue may empty while this thread waits: admit() purges cancelled and
                # expired work from it on other threads (the soak's cancelled gRPC calls did,
                # and the thread died on an empty queue); then it waits for work again
                while self._queue:
                    if self._compatible_rows() >= self.batch_rows:
                        break
                    if self._upstream == 0 and len(self._queue) >= company:
                        break
                    remaining = due - time.monotonic()
                    if remaining <= 0 or self._stopping:
                        break
                    self._cond.wait(remaining)
                else:
                    continue
                break
            batch = self._take()
            self._last_requests = len(batch)
            if self._tuner is not None:
                self._last_rows = sum(w.rows for w in batch)
            return batch

    def _tune(self, tuner: LoadTuner, waiting: int) -> None:
        self.set_batch_rows(tuner.observe(time.perf_counter(), waiting, self._last_rows))
        if tuner.settled:
            self._tuner = None  # settled: the cap stays, and no call pays for tuning again

    def _compatible_rows(self) -> int:
        key = self._queue[0].key
        return sum(w.rows for w in self._queue if w.key == key)

    def _take(self) -> list[_Work]:
        """Pop the oldest work and what fits beside it; drop expired and cancelled work."""
        now = time.monotonic()
        batch: list[_Work] = []
        kept: deque[_Work] = deque()
        rows = 0
        key = None
        while self._queue:
            work = self._queue.popleft()
            if work.future.cancelled():
                continue
            if now > work.deadline:
                self.stats.timeouts += 1
                _fail(work.future, ScoringTimeoutError(self.config.timeout_ms / 1000))
                continue
            if key is None:
                key = work.key
            # the first request always goes (it may hold more than batch_rows, never
            # more than max_rows); the others only while the batch stays within batch_rows
            if work.key != key or (batch and rows + work.rows > self.batch_rows):
                kept.append(work)
                continue
            if not work.future.set_running_or_notify_cancel():
                continue
            batch.append(work)
            rows += work.rows
        self._queue = kept
        return batch

    def _execute(self, batch: list[_Work]) -> None:
        gathering = time.perf_counter()
        rows = sum(w.rows for w in batch)
        if len(batch) == 1:
            inputs = batch[0].inputs
        else:
            first = batch[0].inputs
            inputs = {
                n: np.concatenate([w.inputs[n] for w in batch]) if a.ndim else a
                for n, a in first.items()
            }
        began = time.monotonic()
        queue_wait = self.stats.queue_wait
        for work in batch:
            queue_wait.observe(began - work.enqueued)
        started = time.perf_counter()
        try:
            outputs = self._call(inputs, rows)
        except BackendContractError as exc:
            for work in batch:
                _fail(work.future, exc)
            self._count(rows, started, len(batch), errors=len(batch))
            return
        except Exception as exc:
            if len(batch) == 1:
                self._count(rows, started, 1, errors=1)
                _fail(batch[0].future, exc)
                return
            self._count(rows, started, 0)
            # one bad request must not fail its batch-mates: run each on its own
            logger.warning("batch of %d failed (%s); retrying its requests one by one", rows, exc)
            for work in batch:
                self._execute_alone(work)
            return
        called = self._count(rows, started, len(batch))
        ended = time.monotonic()
        splitting = time.perf_counter()
        offset = 0
        for work in batch:
            share = {k: v[offset : offset + work.rows] for k, v in outputs.items()}
            offset += work.rows
            work.future.set_result(BatchResult(share, rows, work.enqueued, began, ended))
        self._executed(rows, started - gathering, called, time.perf_counter() - splitting)

    def _execute_alone(self, work: _Work) -> None:
        began = time.monotonic()
        started = time.perf_counter()
        try:
            outputs = self._call(work.inputs, work.rows)
        except Exception as exc:
            self._count(work.rows, started, 1, errors=1)
            _fail(work.future, exc)
            return
        called = self._count(work.rows, started, 1)
        ended = time.monotonic()
        splitting = time.perf_counter()
        work.future.set_result(BatchResult(outputs, work.rows, work.enqueued, began, ended))
        self._executed(work.rows, 0.0, called, time.perf_counter() - splitting)

    def _call(self, inputs: Arrays, rows: int) -> Arrays:
        try:
            outputs = self._run_batch(inputs)
        except ScorepackError:
            raise
        except Exception as exc:
            raise PredictError(f"{self.name} failed: {type(exc).__name__}: {exc}") from exc
        for name, value in outputs.items():
            got = value.shape[0] if getattr(value, "ndim", 0) else None
            if got != rows:
                raise BackendContractError(
                    f"Backend {self.name!r} broke the batch contract: output {name!r} has "
                    f"{got} rows for {rows} input rows (exactly one result per input is required)."
                )
        return outputs

    def _count(self, rows: int, started: float, requests: int, errors: int = 0) -> float:
        """Count one model call (failed ones too); its seconds."""
        stats = self.stats
        stats.batches += 1
        stats.rows += rows
        stats.requests += requests
        stats.errors += errors
        elapsed = time.perf_counter() - started
        stats.busy_seconds += elapsed
        stats.model_call.observe(elapsed)
        stats.sizes[rows] = stats.sizes.get(rows, 0) + 1
        return elapsed

    def _executed(self, rows: int, gather: float, call: float, split: float) -> None:
        """Count one model call that succeeded, by its batch size (``BatchStats.executions``)."""
        executions = self.stats.executions
        before = executions.get(rows)
        if before is None:
            executions[rows] = (1, gather, call, split)
        else:
            executions[rows] = (
                before[0] + 1,
                before[1] + gather,
                before[2] + call,
                before[3] + split,
            )


def _fail(future: Future[BatchResult], exc: BaseException) -> None:
    if not future.done():
        try:
            future.set_exception(exc)
        except Exception:  # raced with a cancel from the waiting side
            pass
