"""What the soak (``python -m benchmarks.soak``) found, held by counts, never by time.

1. The model thread died when the queue it was waiting on emptied under it: ``admit()``
   on another thread purges cancelled and expired work (cancelled gRPC calls, deadlines)
   while the model thread waits for a batch's company; it woke to an empty queue, raised
   IndexError, and every later request to that model waited for its 504. Here the
   interleaving is made exact: the model thread is seen waiting (its stack) before the
   work it waits beside is cancelled and purged.
"""

from __future__ import annotations

import sys
import threading
from concurrent.futures import Future

import numpy as np

from scorepack.batching import Batcher, BatchingConfig
from serving_helpers import wait_for


def _row(value: float) -> dict[str, np.ndarray]:
    return {"x": np.full((1, 1), value, np.float32)}


def _waiting_for(thread: threading.Thread) -> str | None:
    """What the model thread waits for in ``_next_batch``: ``"work"`` (an empty queue: a
    wait without a timeout), ``"company"`` (queued work, waiting for its batch-mates
    until the delay is out: a wait with one), or None (not waiting there)."""
    frame = sys._current_frames().get(thread.ident or -1)
    timeout: object = None
    waiting = False
    while frame is not None:
        if frame.f_code.co_name == "wait" and frame.f_code.co_filename.endswith("threading.py"):
            waiting, timeout = True, frame.f_locals.get("timeout")
        if frame.f_code.co_name == "_next_batch":
            if not waiting:
                return None
            return "work" if timeout is None else "company"
        frame = frame.f_back
    return None


def test_the_model_thread_survives_its_queue_purged_while_it_waits() -> None:
    calls: list[int] = []

    def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        calls.append(len(inputs["x"]))
        return {"y": inputs["x"] * 2}

    # a ten-minute delay and a queue of two: the model thread waits beside queued work
    # for as long as another admitted request is still being decoded
    config = BatchingConfig(max_batch_size=4, max_delay_ms=600_000, max_queue_size=2)
    batcher = Batcher(run, config, name="purged")
    batcher.start()
    batcher.wait_ready(30)
    thread = batcher._thread
    assert thread is not None
    try:
        first: Future = batcher.admit().submit(_row(1), 1)
        decoding = batcher.admit()  # admitted, not yet submitted: the thread waits for it
        wait_for(lambda: _waiting_for(thread) == "company", "the model thread to wait for company")
        assert first.cancel()  # its client went away (a cancelled gRPC call)
        # the queue is full (one queued, one decoding): admission purges the cancelled
        # work, and the queue the model thread waits on is now empty
        third = batcher.admit()
        assert batcher.queued == 0
        decoding.release()  # wakes the model thread, its queue empty
        # it goes back to waiting for work (before the fix it died here, of an IndexError)
        wait_for(
            lambda: not thread.is_alive() or _waiting_for(thread) == "work",
            "the model thread to wake up",
        )
        assert thread.is_alive(), "the model thread died of an empty queue"
        result = third.submit(_row(3), 1).result(30)
        assert float(result.outputs["y"][0, 0]) == 6.0
        assert thread.is_alive()
        assert calls == [1]
        assert batcher.inflight == 0 and batcher.queue_depth == 0
    finally:
        batcher.stop()
