"""The Scorer: one model, its preprocessing, its batcher and its postprocessing.

Both hosts use it: the embedded server awaits :meth:`Scorer.handle_async`; the generated
``score.py`` calls :meth:`Scorer.handle` from gunicorn threads. Python users call
:meth:`Scorer.score` (image or JSON bytes) and :meth:`Scorer.predict` (named arrays).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import CancelledError as FutureCancelled
from concurrent.futures import Future, InvalidStateError
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .backend import Backend
from .batch_sizing import BatchSizing, LoadStats, LoadTuner, measure
from .batching import Batcher, BatchResult, Ticket
from .cancellation import Cancellation
from .codecs import (
    Decoded,
    body_kind,
    check_tensors,
    decode_image,
    decode_tensors,
    encoded_image,
)
from .config import ScoringConfig
from .decoding import DecodeSettings, DecodeStage, DecodeWatch, Slot, run_watched
from .errors import (
    BadRequestError,
    BodyTooLargeError,
    ClientGoneError,
    InvalidTensorError,
    ModelError,
    RequestError,
    ScorepackError,
    ScoringTimeoutError,
)
from .hugepages import in_effect
from .openmp import idle_spin
from .postprocess import OutputPlan, ScoreParams, plan_outputs
from .preprocess import ImagePlan, plan_image
from .signature import Signature
from .telemetry import tracing
from .telemetry.stats import ScorerStats

__all__ = ["ScoreResult", "Scorer", "warmup_sizes"]

logger = logging.getLogger("scorepack.scorer")


@dataclass(frozen=True)
class ScoreResult:
    """A response body, the size of the model call the request rode in, and how long the
    request waited in the queue for it (seconds)."""

    body: dict[str, Any]
    batch_size: int
    queue_seconds: float = 0.0


def warmup_sizes(max_rows: int, on_gpu: bool) -> list[int]:
    """The batch sizes the warm-up runs, in order.

    On a GPU, every size the batcher can form, largest first: each new shape pays cuDNN's
    algorithm search, TensorRT or XLA autotuning and kernel JIT on its first call, which
    would otherwise land on a live request (the largest first also lets the allocator
    reserve the peak once). On a CPU, 1 and the largest: the frameworks' CPU kernels cost
    little more on a new shape, and ResNet50 at every size up to 32 would add seconds to
    every start. ``benchmarks/suite/first_request.py`` measures the first request per size.
    The preferred batch size's timed calls follow (:mod:`scorepack.batch_sizing`); sizes
    run here need no untimed first call there.
    """
    largest = max(1, max_rows)
    if on_gpu:
        return list(range(largest, 0, -1))
    return sorted({1, largest})


class Scorer:
    """Serve one model: decode → preprocess → batch → predict → postprocess.

    Create it with a not-yet-loaded :class:`~scorepack.backend.Backend`, then
    :meth:`start` it; the model is loaded and warmed up on the model thread.
    """

    def __init__(
        self,
        backend: Backend,
        config: ScoringConfig | None = None,
        *,
        name: str | None = None,
        version: str | None = None,
        decode_threads: int | None = None,
        decode: DecodeSettings | None = None,
    ) -> None:
        self.backend = backend
        self.config = config or ScoringConfig()
        self.name = name or backend.path.stem or "model"
        #: the model version this scorer serves (a repository's ``NAME/VERSION``), if any
        self.version = version
        #: decode times, timeouts and cancellations, for metrics
        self.stats = ScorerStats()
        # the batcher's name is in its log lines and its thread's name: model and version
        label = f"{self.name}:{version}" if version else self.name
        #: how log lines name this model: two versions of one model must not read alike
        self.log_name = f"{self.name} version {version}" if version else self.name
        self.batcher = Batcher(self.backend.predict, self.config.batching, name=label)
        self.image_plan: ImagePlan | None = None
        #: the backend decodes JPEGs itself (Backend.accepts_encoded_images), set on load
        self.encoded_images = False
        self._output_plan: OutputPlan | None = None
        self.load_seconds: float | None = None
        #: the preferred batch size and how it was chosen (set on load)
        self.batch_sizing: BatchSizing | None = None
        #: preferred_batch_size auto: the tuner until it settles under load (batch_sizing.py)
        self._tuner: LoadTuner | None = None
        #: decoding off the model's way: bounded lookahead, lower priority (decoding.py)
        # the settings object's decode settings when the caller has them (the CLI, a
        # package's init()), else the SCOREPACK_DECODE_* variables read through it
        settings = decode if decode is not None else DecodeSettings.from_env()
        self.decoder = DecodeStage(settings.with_threads(decode_threads), name=label)
        #: what the model's OpenMP threads spin when idle (set on start: openmp.py)
        self.openmp_idle_spin: str | None = None

    # --- lifecycle -------------------------------------------------------------------

    def start(self, *, wait: bool = True, timeout: float | None = None) -> Scorer:
        """Load and warm up the model on its own thread; by default wait until ready."""
        # before any framework loads: its OpenMP threads then sleep soon after a call
        # instead of spinning through the server's work between requests (openmp.py)
        self.openmp_idle_spin = idle_spin()
        self.batcher.start(self._setup, self.backend.unload)
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until the model is ready; raise the load error if loading failed."""
        return self.batcher.wait_ready(timeout)

    @property
    def ready(self) -> bool:
        """Loaded, warmed up and not shutting down."""
        return self.batcher.ready

    @property
    def started(self) -> bool:
        """True once :meth:`start` was called (the model may still be loading)."""
        return self.batcher.started

    def close(self, timeout: float | None = 30.0) -> None:
        """Finish queued work, unload the model, stop the threads."""
        self.batcher.stop(timeout)
        self.decoder.close()

    def __enter__(self) -> Scorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _setup(self) -> None:
        started = time.perf_counter()
        self.backend.load()
        signature = self.backend.signature
        try:
            self.image_plan = plan_image(signature, self.config.preprocess)
            self._output_plan = plan_outputs(signature, self.config.postprocess)
        except ValueError as exc:
            raise ModelError(f"The scoring settings do not fit the model: {exc}") from exc
        self.batcher.set_model_limit(self.backend.max_batch_size)
        if self.image_plan is not None:
            self.encoded_images = self.backend.accepts_encoded_images(self.image_plan)
        warmed: list[int] = []
        if self.config.warmup:
            for rows in warmup_sizes(self.batcher.max_rows, self.backend.device.is_cuda):
                try:
                    self.batcher.run_now(self._zeros(rows), rows)
                except InvalidTensorError as exc:
                    # the warm-up batch is made up (zeros; size 1 where a dimension is
                    # free): a model may rightly refuse it, and real requests still work
                    logger.warning(
                        "%s: warm-up skipped, the model refused zeros: %s", self.log_name, exc
                    )
                    warmed.clear()
                    break
                warmed.append(rows)
        self.batch_sizing = self._size_batches(warmed)
        self.batcher.set_batch_rows(self.batch_sizing.size)
        tuning = ""
        if self.config.batching.preferred_batch_size == "auto" and self.batcher.max_rows > 1:
            # the warm-up's size is where it starts; the real calls under load decide
            self._tuner = LoadTuner(
                self.batch_sizing.size, self.batcher.max_rows, on_settle=self._tuned
            )
            self.batcher.set_tuner(self._tuner)
            tuning = "; tuned under load when load comes"
        self.load_seconds = time.perf_counter() - started
        logger.info(
            "%s ready in %.2f s (%s; %s%s)",
            self.log_name,
            self.load_seconds,
            ", ".join(f"{k}={v}" for k, v in self.backend.describe().items()),
            self.batch_sizing.summary(self.batcher.max_rows),
            tuning,
        )

    def _tuned(self, size: int, stats: dict[int, LoadStats]) -> None:
        """The tuner settled (on the model thread): the size it chose becomes the
        preferred batch size everywhere it shows."""
        before = self.batch_sizing or BatchSizing(self.batcher.max_rows, "not measured")
        # the budget may run out before any candidate had enough cycles: the start stays
        decided = self._tuner is not None and self._tuner.decided
        how = "tuned under load" if decided else before.how
        # the batcher applies the size when this returns: applied first, nobody reading
        # batch_sizing (/info, a test) sees "tuned" while batches still gather the old cap
        self.batcher.set_batch_rows(size)
        self.batch_sizing = BatchSizing(size, how, before.seconds, stats)
        self._tuner = None
        logger.info(
            "%s: preferred batch size %d, %s (was %d; %s)",
            self.log_name,
            size,
            "tuned under load" if decided else "not tuned: the load left before the turns ended",
            before.size,
            self.batch_sizing.summary(self.batcher.max_rows),
        )

    def _size_batches(self, warmed: list[int]) -> BatchSizing:
        """The preferred batch size: the setting's, or measured after a warm-up that ran
        (:mod:`scorepack.batch_sizing`)."""
        setting = self.config.batching.preferred_batch_size
        most = self.batcher.max_rows
        if setting == "off":
            return BatchSizing(most, "off")
        if isinstance(setting, int):
            return BatchSizing(min(setting, most), "fixed")
        if not warmed or most == 1:
            return BatchSizing(most, "not measured")
        inputs: dict[int, dict[str, np.ndarray]] = {}

        def call(rows: int) -> None:
            if rows not in inputs:
                inputs[rows] = self._zeros(rows)
            self.batcher.run_now(inputs[rows], rows)

        try:
            return measure(call, most, warmed)
        except ScorepackError as exc:
            # the largest size already ran in the warm-up: a model refusing a smaller
            # batch of zeros is odd, but real requests may still work
            logger.warning(
                "%s: batch sizes not measured, the model refused: %s", self.log_name, exc
            )
            return BatchSizing(most, "not measured")

    def _zeros(self, rows: int) -> dict[str, np.ndarray]:
        arrays = {}
        plan = self.image_plan
        for spec in self.signature.inputs:
            if plan is not None and spec.name == plan.input:
                item: tuple[int, ...] = (
                    (plan.height, plan.width, plan.channels)
                    if plan.layout == "NHWC"
                    else (plan.channels, plan.height, plan.width)
                )
            else:
                item = tuple(d or 1 for d in spec.item_shape)
            dtype = object if np.dtype(spec.dtype).kind in "USO" else spec.dtype
            shape = (rows, *item) if spec.batched else item  # a scalar input stays one
            arrays[spec.name] = np.zeros(shape, dtype=dtype)
            if dtype is object:
                arrays[spec.name][...] = b""
        return arrays

    # --- facts -----------------------------------------------------------------------

    @property
    def signature(self) -> Signature:
        return self.backend.signature

    @property
    def output_plan(self) -> OutputPlan:
        if self._output_plan is None:
            raise RuntimeError("the model is not loaded")
        return self._output_plan

    def describe(self) -> dict[str, Any]:
        """What is being served, for ``/info``, logs and ``inspect``."""
        info: dict[str, Any] = {
            "name": self.name,
            **({"version": self.version} if self.version else {}),
            "ready": self.ready,
            "backend": self.backend.describe(),
            "max_batch_size": self.batcher.max_rows,
            # the batches it forms: tuned under load (auto) unless fixed (batch_sizing.py)
            "preferred_batch_size": self.batcher.batch_rows,
            "max_delay_ms": self.config.batching.max_delay_ms,
            "decode": self.decoder.describe(),
            "openmp_idle_spin": self.openmp_idle_spin,
            # the model's memory on transparent huge pages or not (hugepages.py)
            "huge_pages": in_effect(),
        }
        if self.batcher.ready:
            info["signature"] = self.signature.to_dict()
            info["preprocess"] = self.image_plan.describe() if self.image_plan else None
            info["classifier_output"] = self.output_plan.classifier
        if self.batch_sizing is not None:
            info["batch_sizing"] = self.batch_sizing.describe()
            tuner = self._tuner
            if tuner is not None:
                info["batch_sizing"]["under_load"] = tuner.describe()
        return info

    # --- the request path ------------------------------------------------------------

    def decode(self, body: bytes, content_type: str | None = None) -> Decoded:
        """Turn a request body into model-ready arrays (runs on any thread)."""
        if len(body) > self.config.max_body_bytes:
            raise BodyTooLargeError(self.config.max_body_bytes, len(body))
        if body_kind(content_type, body) == "json":
            return decode_tensors(body, self.signature)
        # an image fills one input; a model that needs others too takes JSON tensors only
        if self.image_plan is None or len(self.signature.inputs) > 1:
            names = self.signature.input_names
            layout = ", ".join(f'"{n}": [...]' for n in names)
            raise BadRequestError(
                f"This model takes no single image input (its inputs are {names}); "
                f'send JSON tensors instead: {{"inputs": {{{layout}}}}}.'
            )
        return self.decode_image(body)

    def decode_image(self, body: bytes) -> Decoded:
        """One JPEG/PNG through the model's decoding and preprocessing: a one-row batch
        for the image input (the bytes themselves for a backend that decodes JPEGs)."""
        if self.image_plan is None:
            raise BadRequestError(
                f"This model takes no image input (its inputs are {self.signature.input_names})."
            )
        decode = encoded_image if self.encoded_images else decode_image
        return decode(body, self.image_plan, self.config.max_image_pixels)

    def handle(
        self,
        body: bytes,
        content_type: str | None = None,
        query: Mapping[str, str] | None = None,
        cancellation: Cancellation | None = None,
    ) -> ScoreResult:
        """Score one request, blocking the calling thread (gunicorn threads, scripts).

        ``cancellation``, cancelled from another thread when the client leaves, drops the
        request's work before its model call (:class:`~scorepack.errors.ClientGoneError`,
        counted as cancelled); work a model call has already taken runs to its end.
        """
        params = ScoreParams.parse(query)
        if cancellation is not None and cancellation.cancelled:
            # it left while its request waited for a thread: not even decoded
            self.stats.cancel()
            raise ClientGoneError()
        forgets: list[Callable[[], None]] = []
        watch = None
        if cancellation is not None:
            gone = cancellation

            def watch(future: Future[Any]) -> None:
                # its decode slot, then its model call: cancelled when the client leaves
                forgets.append(gone.on_cancel(future.cancel))

        try:
            result = self.run(self.decode, body, content_type, watch=watch)
        except FutureCancelled:
            # dropped before any model call took it (run counted it as cancelled)
            raise ClientGoneError() from None
        finally:
            for forget in forgets:
                forget()
        return ScoreResult(
            self.output_plan.build(result.outputs, params),
            result.batch_size,
            result.queue_seconds,
        )

    async def handle_async(
        self,
        body: bytes,
        content_type: str | None = None,
        query: Mapping[str, str] | None = None,
    ) -> ScoreResult:
        """Score one request without blocking the event loop; decoding runs in a pool."""
        params = ScoreParams.parse(query)
        result = await self.run_async(self.decode, body, content_type)
        return ScoreResult(
            self.output_plan.build(result.outputs, params),
            result.batch_size,
            result.queue_seconds,
        )

    async def run_async(self, decode: Callable[..., Decoded], *args: Any) -> BatchResult:
        """Admit, decode, batch and await one request: every protocol's path to the model.

        ``decode(*args)`` turns the request into checked arrays; it runs in the decode pool
        after the request is admitted, so a full queue refuses it before any decoding, and
        once it holds a decode slot, so decoding runs at most about two batches ahead of
        the model (:mod:`scorepack.decoding`). The whole wait is bounded by the batching
        timeout. Every request the model takes is counted, with its times, in
        ``stats.inference`` (:func:`_counted` says which failures count).
        """
        admitted = time.monotonic()
        # refused at the door (queue full, not ready): never the model's, not counted
        ticket = self.batcher.admit()
        result, rows, began, ended = await self._run_async(ticket, admitted, decode, *args)
        return self._answered(result, rows, admitted, began, ended)

    async def _run_async(
        self, ticket: Ticket, admitted: float, decode: Callable[..., Decoded], *args: Any
    ) -> tuple[BatchResult, int, float, float]:
        queued = False  # handed to the batcher: every failure from here on is the model's
        try:
            with ticket:
                slot = self._slot(
                    await self.decoder.acquire_async(self.batcher.batch_rows, ticket.deadline)
                )
                watch = DecodeWatch(ticket.deadline, self.config.batching.timeout_ms / 1000)
                try:
                    decoded, began, ended = await self.decoder.run_async(
                        self._decode_timed, watch, decode, *args
                    )
                    future = ticket.submit(decoded.inputs, decoded.rows)
                except BaseException as exc:
                    # the decode thread stops at its next checkpoint, not after every image
                    watch.abandoned = True
                    slot.release()
                    if isinstance(exc, ScoringTimeoutError):
                        self.stats.timed_out()  # its deadline passed between two images
                    raise
                queued = True
                slot.release_when_done(future)
            remaining = max(0.0, ticket.deadline - time.monotonic())
            try:
                result = await asyncio.wait_for(asyncio.wrap_future(future), remaining)
            except asyncio.TimeoutError:
                self.stats.timed_out()
                raise ScoringTimeoutError(self.config.batching.timeout_ms / 1000) from None
            except ScoringTimeoutError:
                # the model thread found it past its deadline in the queue
                self.stats.timed_out()
                raise
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                # the client went away (the host cancelled the request's task)
                self.stats.cancel()
            if queued or _counted(exc):
                self.stats.inference.failed(admitted)
            raise
        return result, decoded.rows, began, ended

    def run(
        self,
        decode: Callable[..., Decoded],
        *args: Any,
        watch: Callable[[Future[Any]], None] | None = None,
    ) -> BatchResult:
        """:meth:`run_async`'s blocking twin, for hosts that give each request a thread
        (gunicorn threads, the gRPC server): the same admission, decode slot, decode pool,
        batcher and timeout.

        The decode thread also queues the decoded request for the batcher, and this
        thread waits once, for the answer: it is woken once per request rather than once
        for the decoding and again for the model call, and the batcher sees the request
        as soon as it is decoded (each wake-up costs CPU, and a request reaching the
        batcher late rides in a later, smaller batch).

        ``watch`` is handed each future the request waits on (a decode slot, its answer):
        a host whose client can go away cancels them then, so the request gives up its
        place and no model call takes it, and this raises
        :class:`concurrent.futures.CancelledError`.
        """
        admitted = time.monotonic()
        # refused at the door (queue full, not ready): never the model's, not counted
        ticket = self.batcher.admit()
        result, answer = self._run(ticket, admitted, decode, args, watch)
        return self._answered(result, answer.rows, admitted, answer.began, answer.ended)

    def _answered(
        self, result: BatchResult, rows: int, admitted: float, began: float, ended: float
    ) -> BatchResult:
        """Count a request answered (decoded from ``began`` to ``ended``), and trace it."""
        self.stats.inference.succeeded(
            rows, admitted, began, ended, result.enqueued, result.started, result.finished
        )
        if tracing.enabled:
            tracing.record_scoring(began, ended, result, self.name, self.version)
        return result

    def _run(
        self,
        ticket: Ticket,
        admitted: float,
        decode: Callable[..., Decoded],
        args: tuple[Any, ...],
        watch: Callable[[Future[Any]], None] | None,
    ) -> tuple[BatchResult, _Answer]:
        answer: _Answer | None = None
        try:
            try:
                slot = self._slot(
                    self.decoder.acquire(self.batcher.batch_rows, ticket.deadline, watch)
                )
            except BaseException:
                ticket.release()
                raise
            answer = _Answer(ticket, slot, self.config.batching.timeout_ms / 1000)
            try:
                self.decoder.submit(self._decode_and_queue, answer, decode, *args)
            except BaseException:
                answer.give_up()
                raise
            if watch is not None:
                watch(answer.future)
            result = self._wait(answer.future, ticket)
        except BaseException as exc:
            if isinstance(exc, FutureCancelled):
                self.stats.cancel()
            # queued is set by the decode thread before the future can complete
            if (answer is not None and answer.queued) or _counted(exc):
                self.stats.inference.failed(admitted)
            raise
        return result, answer

    def _decode_and_queue(
        self, answer: _Answer, decode: Callable[..., Decoded], *args: Any
    ) -> None:
        """On a decode thread: decode, then queue for the batcher and let the model
        call's result (or the error) complete ``answer``."""
        try:
            if answer.future.cancelled():
                # its caller gave up (client gone, timed out) before decoding began
                answer.give_up()
                return
            decoded, answer.began, answer.ended = self._decode_timed(answer.watch, decode, *args)
            answer.rows = decoded.rows
            if answer.future.cancelled():
                answer.give_up()
                return
            # from here the request is the model's: its failures count as the model's
            answer.queued = True
            # the model thread answers the caller's own future: no hop back through here
            answer.ticket.submit(decoded.inputs, decoded.rows, answer.future)
        except BaseException as exc:
            answer.give_up()
            _fail_quietly(answer.future, exc)
            return
        answer.slot.release_when_done(answer.future)

    def _decode_timed(
        self, watch: DecodeWatch, decode: Callable[..., Decoded], *args: Any
    ) -> tuple[Decoded, float, float]:
        """``decode(*args)``, timed (the decode histogram, and the decode span when
        tracing), with ``watch`` the request's :func:`~scorepack.decoding.checkpoint`
        between the units of its decoding."""
        began = time.monotonic()
        decoded = run_watched(watch, decode, *args)
        ended = time.monotonic()
        self.stats.decode.observe(ended - began)
        return decoded, began, ended

    def _slot(self, slot: Slot | None) -> Slot:
        # no decode slot before the request's deadline: the same 504 as a late model call
        if slot is None:
            self.stats.timed_out()
            raise ScoringTimeoutError(self.config.batching.timeout_ms / 1000)
        return slot

    def _wait(self, future: Future[BatchResult], ticket: Ticket) -> BatchResult:
        try:
            return future.result(timeout=max(0.0, ticket.deadline - time.monotonic()))
        except FutureTimeout:
            future.cancel()
            self.stats.timed_out()
            raise ScoringTimeoutError(self.config.batching.timeout_ms / 1000) from None
        except ScoringTimeoutError:
            # the model thread found it past its deadline in the queue
            self.stats.timed_out()
            raise

    # --- for Python callers ----------------------------------------------------------

    def score(
        self, data: bytes | str | Path, *, top_k: int | None = None, raw: bool = False
    ) -> dict[str, Any]:
        """Score image bytes, JSON bytes, or an image file path; return the response body."""
        body = data if isinstance(data, bytes) else Path(data).read_bytes()
        query = {"raw": "true" if raw else "false"}
        if top_k is not None:
            query["top_k"] = str(top_k)
        return self.handle(body, None, query).body

    def predict(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Score named arrays (first dimension: batch); return the raw outputs.

        Goes through the same validation and batcher as HTTP requests.
        """
        ticket = self.batcher.admit()
        with ticket:
            decoded = check_tensors(inputs, self.signature)
            future = ticket.submit(decoded.inputs, decoded.rows)
        return self._wait(future, ticket).outputs


class _Answer:
    """A blocking request between its decode thread and its waiting thread: the future
    the caller waits on (queued as the request's own, so its model call's result lands
    there; a decoding error too), and the ticket and decode slot the decode thread gives
    up when the request goes no further."""

    __slots__ = ("began", "ended", "future", "queued", "rows", "slot", "ticket", "watch")

    def __init__(self, ticket: Ticket, slot: Slot, timeout_s: float) -> None:
        self.ticket = ticket
        self.slot = slot
        self.future: Future[BatchResult] = Future()
        self.began = self.ended = 0.0
        self.rows = 0
        #: handed to the batcher (set on the decode thread before the future can finish)
        self.queued = False
        #: decoding stops between images once the caller gave up or the deadline passed
        self.watch = DecodeWatch(ticket.deadline, timeout_s, self.future.cancelled)

    def give_up(self) -> None:
        """The request goes no further (decoding failed, or its caller left)."""
        self.slot.release()
        self.ticket.release()


def _counted(exc: BaseException) -> bool:
    """Whether a request that failed with ``exc`` before the batcher took it counts in
    the statistics' ``fail``, as Triton counts them: a request refused as bad input (a
    4xx while decoding and checking it) does not, as Triton's input checks run before its
    request starts; one that timed out or was cancelled while it waited (for a decode
    slot, in decoding) does, as Triton counts its scheduler's REJECTED and CANCELED. (A
    request refused at admission, queue full or model not ready, is never counted: it
    gets no further than Triton's failed enqueue.)"""
    return not isinstance(exc, RequestError) or isinstance(exc, ClientGoneError)


def _fail_quietly(future: Future[Any], exc: BaseException) -> None:
    """Fail ``future`` with ``exc`` unless its caller cancelled it first."""
    try:
        future.set_exception(exc)
    except InvalidStateError:  # cancelled by its caller meanwhile
        pass
