"""The batcher on its own, with a plain function as the model: when a batch stops waiting.

A batch runs once nothing admitted is still being decoded and as many requests are
queued as the last batch had, or at ``max_delay_ms``: clients that come back one by one
(gRPC's calls reach the batcher spread out) ride together again, a lone client never
waits, and a client left alone waits once.
"""

from __future__ import annotations

from concurrent.futures import Future, wait

import numpy as np

from scorepack.batching import Batcher, BatchingConfig, BatchResult


def _doubling_batcher(max_delay_ms: float, calls: list[int]) -> Batcher:
    def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        calls.append(len(inputs["x"]))
        return {"y": inputs["x"] * 2}

    batcher = Batcher(run, BatchingConfig(max_batch_size=8, max_delay_ms=max_delay_ms))
    batcher.start()
    batcher.wait_ready(30)
    return batcher


def _row(value: float) -> dict[str, np.ndarray]:
    return {"x": np.full((1, 1), value, np.float32)}


def test_clients_coming_back_one_by_one_ride_together_again() -> None:
    # gRPC's calls reach the batcher spread out: each arrives decoded before the next is
    # admitted. A ten-minute delay: only the last batch's company ends the wait
    calls: list[int] = []
    batcher = _doubling_batcher(600_000, calls)
    try:
        # a lone client, one request at a time: each runs at once
        for v in range(2):
            assert batcher.admit().submit(_row(v), 1).result(30).batch_size == 1
        # three clients at once: one model call
        tickets = [batcher.admit() for _ in range(3)]
        futures = [t.submit(_row(v), 1) for v, t in enumerate(tickets)]
        assert [f.result(30).batch_size for f in futures] == [3, 3, 3]
        # they come back one by one: the first, decoded and alone in the queue, waits for
        # the other two (a batcher without the rule runs it at once, alone)
        first = batcher.admit().submit(_row(0), 1)
        assert not wait([first], timeout=0.3).done
        futures = [first, *(batcher.admit().submit(_row(v), 1) for v in (1, 2))]
        results = [f.result(30) for f in futures]
    finally:
        batcher.stop()
    assert [r.batch_size for r in results] == [3, 3, 3]
    assert [float(r.outputs["y"][0, 0]) for r in results] == [0.0, 2.0, 4.0]
    assert calls == [1, 1, 3, 3]


def test_a_client_left_alone_waits_for_company_once_within_the_delay() -> None:
    calls: list[int] = []
    batcher = _doubling_batcher(50, calls)
    try:
        tickets = [batcher.admit() for _ in range(2)]
        futures = [t.submit(_row(v), 1) for v, t in enumerate(tickets)]
        assert [f.result(30).batch_size for f in futures] == [2, 2]
        # one client left: its first request waits out the delay (50 ms) for the other,
        # then runs alone, and from then on alone at once
        for v in range(3):
            assert batcher.admit().submit(_row(v), 1).result(30).batch_size == 1
    finally:
        batcher.stop()
    assert calls == [2, 1, 1, 1]


def test_a_request_can_be_answered_in_its_callers_own_future() -> None:
    # Scorer.run's decode thread queues the request with the future its caller already
    # waits on: the model thread wakes the caller directly
    calls: list[int] = []
    batcher = _doubling_batcher(0, calls)
    try:
        mine: Future[BatchResult] = Future()
        assert batcher.admit().submit(_row(3), 1, mine) is mine
        assert float(mine.result(30).outputs["y"][0, 0]) == 6.0
        # a caller that gave up before its request was queued: no model call takes it
        gone: Future[BatchResult] = Future()
        gone.cancel()
        batcher.admit().submit(_row(4), 1, gone)
        assert batcher.admit().submit(_row(5), 1).result(30).batch_size == 1
        assert batcher.inflight == 0
    finally:
        batcher.stop()
    assert calls == [1, 1]
