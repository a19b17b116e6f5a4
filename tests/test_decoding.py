"""The decode stage (issue 13): bounded lookahead, lower priority, overrides, no deadlock.

Structural checks only: a held model (SlowBackend's gate) keeps slots taken while the test
counts them; nothing here measures time.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from fixture_backends import SlowBackend
from scorepack import Scorer
from scorepack.decoding import DecodeSettings, DecodeStage, usable_cores
from scorepack.errors import ScorepackError
from serving_helpers import CLIENT_TIMEOUT, scoring_config, serving, wait_for

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="per-thread priority is Linux only"
)


def _body(i: int) -> bytes:
    return f'{{"inputs": [[{i}, {i}]]}}'.encode()


def _post_all(url: str, count: int) -> list[httpx.Response]:
    """``count`` concurrent POST /score requests, each its own connection."""

    def one(i: int) -> httpx.Response:
        with httpx.Client(base_url=url, timeout=CLIENT_TIMEOUT) as client:
            return client.post(
                "/score",
                content=_body(i),
                params={"raw": "true"},
                headers={"content-type": "application/json"},
            )

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


def test_a_burst_larger_than_the_lookahead_is_bounded_and_all_answered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SCOREPACK_DECODE_LOOKAHEAD", raising=False)
    backend = SlowBackend(tmp_path / "m.slow")
    burst = 24
    with serving(backend, scoring_config(max_batch_size=2)) as served:
        stage = served.scorer.decoder
        bound = stage.limit_for(served.scorer.batcher.max_rows)
        assert bound == 4  # two batches of two
        backend.gate.clear()
        backend.entered.clear()
        with ThreadPoolExecutor(1) as runner:
            try:
                replies = runner.submit(_post_all, served.url, burst)
                # the model is held: no slot comes back, so the burst piles up waiting
                wait_for(
                    lambda: stage.waiting == burst - bound,
                    "the requests beyond the lookahead to wait for a decode slot",
                )
                assert stage.in_flight == bound
                wait_for(backend.entered.is_set, "the first batch to be in the model")
                # nothing beyond the lookahead was decoded: the batcher holds the rest as
                # admitted requests waiting for a slot, not as decoded work
                assert served.scorer.batcher.queue_depth - stage.waiting <= bound
            finally:
                backend.gate.set()
            responses = replies.result(CLIENT_TIMEOUT * 2)
        assert [r.status_code for r in responses] == [200] * burst
        assert [r.json()["outputs"]["y"] for r in responses] == [
            [[float(i)] * 2] for i in range(burst)
        ]
        assert stage.peak == bound
        wait_for(lambda: stage.in_flight == 0, "every decode slot to be given back")


def test_waiting_for_a_slot_counts_against_the_timeout_and_leaks_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SCOREPACK_DECODE_LOOKAHEAD", raising=False)
    backend = SlowBackend(tmp_path / "m.slow")
    with serving(backend, scoring_config(max_batch_size=1, timeout_ms=300)) as served:
        stage = served.scorer.decoder
        backend.gate.clear()
        try:
            responses = _post_all(served.url, 6)
        finally:
            backend.gate.set()
        # the two holding slots timed out in the model's queue, the four others waiting
        # for a slot: all six are the same 504, none is a 500
        assert [r.status_code for r in responses] == [504] * 6
        wait_for(lambda: stage.in_flight == 0 and stage.waiting == 0, "slots to come back")
        again = _post_all(served.url, 2 * stage.limit_for(1) + 1)
        assert [r.status_code for r in again] == [200] * len(again)


def test_threaded_callers_share_the_same_bound(tmp_path: Path) -> None:
    backend = SlowBackend(tmp_path / "m.slow")
    scorer = Scorer(backend, scoring_config(max_batch_size=1)).start(timeout=20)
    try:
        stage = scorer.decoder
        backend.gate.clear()
        with ThreadPoolExecutor(7) as pool:
            try:
                futures = [
                    pool.submit(scorer.handle, _body(i), None, {"raw": "1"}) for i in range(7)
                ]
                wait_for(lambda: stage.waiting == 5, "five threads to wait for a slot")
                assert stage.in_flight == 2
            finally:
                backend.gate.set()
            results = [f.result(CLIENT_TIMEOUT) for f in futures]
        assert [r.body["outputs"]["y"].tolist() for r in results] == [
            [[float(i)] * 2] for i in range(7)
        ]
        assert stage.peak == 2
    finally:
        scorer.close()


def test_a_waiter_that_gives_up_hands_its_slot_on() -> None:
    async def scenario() -> None:
        stage = DecodeStage(DecodeSettings(lookahead=1))
        far = time.monotonic() + 60
        first = await stage.acquire_async(1, far)
        assert first is not None
        # a client that goes away while waiting: its task is cancelled
        gone = asyncio.ensure_future(stage.acquire_async(1, far))
        patient = asyncio.ensure_future(stage.acquire_async(1, far))
        while stage.waiting < 2:
            await asyncio.sleep(0)
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        first.release()
        second = await asyncio.wait_for(patient, 30)
        assert second is not None and stage.in_flight == 1
        second.release()
        second.release()  # twice is harmless
        assert stage.in_flight == 0
        # a deadline already past: no slot, and nothing held
        blocker = await stage.acquire_async(1, far)
        assert blocker is not None
        assert await stage.acquire_async(1, time.monotonic()) is None
        blocker.release()
        assert stage.in_flight == 0 and stage.waiting == 0

    asyncio.run(scenario())


def _priority_of_a_decode_thread(stage: DecodeStage) -> tuple[int, int]:
    def probe() -> tuple[int, int]:
        tid = threading.get_native_id()
        return tid, os.getpriority(os.PRIO_PROCESS, tid)

    try:
        return stage.run(probe)
    finally:
        stage.close()


@linux_only
def test_decode_threads_run_at_a_lower_priority_than_the_rest() -> None:
    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    tid, theirs = _priority_of_a_decode_thread(DecodeStage(DecodeSettings(nice=5)))
    assert tid != threading.get_native_id()
    assert theirs == min(19, mine + 5)
    # only the decode thread moved: the calling thread keeps its priority
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == mine
    _, untouched = _priority_of_a_decode_thread(DecodeStage(DecodeSettings(nice=0)))
    assert untouched == mine


def test_environment_overrides_are_honoured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCOREPACK_DECODE_THREADS", "3")
    monkeypatch.setenv("SCOREPACK_DECODE_LOOKAHEAD", "5")
    monkeypatch.setenv("SCOREPACK_DECODE_NICE", "0")
    scorer = Scorer(SlowBackend(tmp_path / "m.slow"))
    stage = scorer.decoder
    assert (stage.threads, stage.limit_for(32), stage.nice) == (3, 5, 0)
    # three decode threads really exist: three calls meet at a barrier
    barrier = threading.Barrier(3, timeout=CLIENT_TIMEOUT)
    futures = [stage.pool().submit(barrier.wait) for _ in range(3)]
    assert sorted(f.result(CLIENT_TIMEOUT) for f in futures) == [0, 1, 2]
    stage.close()
    if sys.platform.startswith("linux"):
        mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        assert _priority_of_a_decode_thread(stage)[1] == mine
    monkeypatch.setenv("SCOREPACK_DECODE_LOOKAHEAD", "0")
    assert Scorer(SlowBackend(tmp_path / "m.slow")).decoder.limit_for(32) == 0  # unbounded
    monkeypatch.setenv("SCOREPACK_DECODE_NICE", "40")
    with pytest.raises(
        ScorepackError, match="SCOREPACK_DECODE_NICE: Input should be less than or equal to 19"
    ):
        Scorer(SlowBackend(tmp_path / "m.slow"))
    monkeypatch.setenv("SCOREPACK_DECODE_NICE", "low")
    with pytest.raises(
        ScorepackError, match="SCOREPACK_DECODE_NICE: Input should be a valid integer"
    ):
        Scorer(SlowBackend(tmp_path / "m.slow"))


def test_defaults_come_from_the_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("THREADS", "LOOKAHEAD", "NICE"):
        monkeypatch.delenv(f"SCOREPACK_DECODE_{name}", raising=False)
    stage = Scorer(SlowBackend(tmp_path / "m.slow")).decoder
    assert stage.threads == usable_cores()
    if hasattr(os, "sched_getaffinity"):
        assert 1 <= usable_cores() <= len(os.sched_getaffinity(0))
    assert stage.limit_for(8) == 16
    info = stage.describe()
    assert info["decode_threads"] == usable_cores()
    assert info["decode_lookahead"] == "auto"
