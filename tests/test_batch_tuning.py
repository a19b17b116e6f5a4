"""``preferred_batch_size: auto`` tuned under load (scorepack.batch_sizing.LoadTuner).

The decision logic is fed made-up cycles (no clock, no threads); the end-to-end tests run
a real Batcher and a real Scorer whose model sleeps an engineered time per call, under a
backlog the test keeps up by resubmitting each answered request at once, and check the
size the tuner settles on. The engineered costs differ by factors, not per cents, so that
a busy machine (sleeps overshoot, threads wait for a core) cannot change the answer.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fixture_backends import EchoBackend, SlowBackend
from scorepack import Scorer
from scorepack import scorer as scorer_module
from scorepack.batch_sizing import BACKLOG_ROWS, START_STREAK, LoadStats, LoadTuner
from scorepack.batching import Batcher, BatchingConfig, BatchResult
from serving_helpers import scoring_config

Cost = Callable[[int], float]


def drive(tuner: LoadTuner, cost: Cost, *, waiting: int = 64, calls: int = 5000) -> list[int]:
    """A model thread under a steady backlog of ``waiting`` rows: each call takes
    ``cost(rows)`` seconds. Returns the cap of every call made, until the tuner settled."""
    now, last_rows, caps = 0.0, 0, []
    for _ in range(calls):
        cap = tuner.observe(now, waiting, last_rows)
        caps.append(cap)
        if tuner.settled:
            return caps
        last_rows = min(cap, waiting)
        now += cost(last_rows)
    raise AssertionError(f"never settled in {calls} calls: {tuner.describe()}")


def per_row_best_at(best: int, per_row_ms: float = 1.0, elsewhere_ms: float = 3.0) -> Cost:
    """Seconds per call: ``per_row_ms`` a row at ``best`` rows, ``elsewhere_ms`` otherwise."""
    return lambda rows: rows * (per_row_ms if rows == best else elsewhere_ms) / 1000


def test_it_settles_on_the_cap_with_the_fewest_seconds_a_row_under_load() -> None:
    for best in (1, 4, 8, 32):
        tuner = LoadTuner(32, 32, turn_s=0.0)
        drive(tuner, per_row_best_at(best))
        assert tuner.cap == best and tuner.state == "settled"
        stats = tuner.stats()
        assert set(stats) == {32, 16, 8, 4, 2, 1}
        assert stats[best].seconds_per_row == pytest.approx(0.001)


def test_candidates_take_interleaved_turns_after_serving_the_rows_queued_before() -> None:
    tuner = LoadTuner(2, 8, turn_cycles=2, turn_s=0.0, rounds=2, min_cycles=1)
    caps = drive(tuner, lambda rows: 0.001 * rows, waiting=8)
    # watching at the start size until the backlog held for START_STREAK calls: the call
    # that completes the streak is the first of the first turn
    first = START_STREAK - 1
    assert caps[:first] == [2] * first
    turns = [caps[first]]
    for cap in caps[first + 1 : -1]:
        if cap != turns[-1]:
            turns.append(cap)
    assert turns == [8, 4, 2, 1, 8, 4, 2, 1]
    # each turn: the calls that serve the 8 rows queued at the switch are not counted
    # (one of 8 rows, two of 4, ...), then turn_cycles are
    assert caps[first : first + 4] == [8, 8, 8, 4]
    assert caps[first + 3 : first + 8] == [4, 4, 4, 4, 2]
    assert all(s.cycles == 2 * 2 for s in tuner.stats().values())


def test_an_overhead_bound_model_and_small_gains_never_cap() -> None:
    # a call costs 20 ms plus 1 ms a row: the larger the batch the cheaper a row
    tuner = LoadTuner(4, 32, turn_s=0.0)
    drive(tuner, lambda rows: 0.020 + 0.001 * rows)
    assert tuner.cap == 32
    # 8 rows 7 % cheaper a row than 32: below MARGIN, the largest stays
    tuner = LoadTuner(4, 32, turn_s=0.0)
    drive(tuner, per_row_best_at(8, per_row_ms=2.8, elsewhere_ms=3.0))
    assert tuner.cap == 32


def test_of_caps_about_as_fast_as_the_best_the_largest_is_taken() -> None:
    # 4 and 8 rows within NEAR of each other, both well ahead of the rest
    def cost(rows: int) -> float:
        return rows * {4: 1.0, 8: 1.03}.get(rows, 3.0) / 1000

    tuner = LoadTuner(32, 32, turn_s=0.0)
    drive(tuner, cost)
    assert tuner.cap == 8


def test_no_backlog_no_tuning() -> None:
    # one row waiting at most (c=1 traffic): it watches for ever, at the start size
    tuner = LoadTuner(4, 32, turn_s=0.0)
    for now in range(10_000):
        assert tuner.observe(float(now), BACKLOG_ROWS - 1, 1) == 4
    assert tuner.state == "watching" and not tuner.settled and tuner.stats() == {}
    # a backlog that breaks off before START_STREAK calls starts nothing either
    for now in range(100):
        waiting = BACKLOG_ROWS if now % START_STREAK else 0
        tuner.observe(float(now), waiting, 1)
    assert tuner.state == "watching"


def test_a_thread_waiting_for_traffic_counts_no_cycle() -> None:
    tuner = LoadTuner(8, 8, turn_cycles=2, turn_s=0.0, rounds=1, min_cycles=1, budget_s=1e6)
    for now in range(START_STREAK):
        tuner.observe(float(now), 8, 8)
    assert tuner.state == "tuning" and tuner.cap == 8
    t = 100.0
    # the turn's first call served the 8 rows queued before it: not counted
    tuner.observe(t, 8, 8)
    tuner.observe(t + 1, 0, 8)  # this cycle counts; the next call waits for traffic...
    tuner.observe(t + 60, 8, 8)  # ...so the minute it idled counts nowhere
    tuner.observe(t + 61, 8, 8)
    stats = tuner.stats()[8]
    assert stats.cycles == 2 and stats.seconds_per_row == pytest.approx(1 / 8)


def test_the_budget_settles_on_the_best_so_far_or_keeps_the_start() -> None:
    # ten calls' budget: only 32 and 16 had turns; 16 is four times cheaper a row
    tuner = LoadTuner(2, 32, turn_cycles=3, turn_s=0.0, min_cycles=3, budget_calls=10)
    drive(tuner, per_row_best_at(16, elsewhere_ms=4.0), waiting=32)
    stats = tuner.stats()
    assert tuner.cap == 16 and stats[32].cycles == stats[16].cycles == 3 and tuner.decided
    # the budget in seconds, spent before any cap had enough cycles: the start stays
    tuner = LoadTuner(2, 32, min_cycles=50, budget_s=1.0)
    drive(tuner, lambda rows: 0.1)
    assert tuner.cap == 2 and tuner.settled and not tuner.decided


def test_it_reports_settling_once_and_then_costs_nothing() -> None:
    settled: list[tuple[int, dict[int, LoadStats]]] = []
    tuner = LoadTuner(32, 8, turn_s=0.0, on_settle=lambda cap, stats: settled.append((cap, stats)))
    drive(tuner, per_row_best_at(2))
    assert [cap for cap, _ in settled] == [2] and set(settled[0][1]) == {8, 4, 2, 1}
    assert tuner.observe(1e9, 1000, 8) == 2 and len(settled) == 1
    info = tuner.describe()
    assert info["state"] == "settled" and info["cap"] == 2
    assert set(info["ms_per_row"]) == {"8", "4", "2", "1"}


# --- end to end --------------------------------------------------------------------------

#: milliseconds per call: 4 rows cost 2 ms a row, other sizes 30 ms a row (8 rows 240 ms):
#: a busy machine adding up to about 100 ms to each call still leaves 4 the fastest a row
FAST_ROWS = 4


def engineered_ms(rows: int, fast: int = FAST_ROWS) -> float:
    return rows * (2.0 if rows == fast else 30.0)


def quick_tuner(**kwargs: Any) -> functools.partial[LoadTuner]:
    """A tuner with short turns (the defaults are sized for ResNet50-like calls)."""
    return functools.partial(
        LoadTuner, turn_cycles=3, turn_s=0.0, rounds=2, min_cycles=4, budget_s=300.0, **kwargs
    )


class Backlog:
    """Keeps ``outstanding`` one-row requests in a batcher: every answered request is
    replaced at once (from the done callback, on the model thread, before it asks for its
    next batch), so the queue never runs dry, however slowly the machine runs."""

    def __init__(self, submit: Callable[[], Future[Any]], outstanding: int) -> None:
        self._submit = submit
        self._stop = threading.Event()
        self.answered = 0
        self.errors: list[BaseException] = []
        for _ in range(outstanding):
            self._next()

    def _next(self) -> None:
        if not self._stop.is_set():
            self._submit().add_done_callback(self._done)

    def _done(self, future: Future[Any]) -> None:
        if future.exception() is not None:
            self.errors.append(future.exception())  # type: ignore[arg-type]
        self.answered += 1
        self._next()

    def stop(self) -> None:
        self._stop.set()


def test_a_batcher_under_backlog_settles_on_the_engineered_best() -> None:
    def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = inputs["x"]
        time.sleep(engineered_ms(len(x)) / 1000)  # a sleep never ends early
        return {"y": x}

    settled = threading.Event()
    tuner = quick_tuner()(1, 8, on_settle=lambda cap, stats: settled.set())
    batcher = Batcher(run, BatchingConfig(max_batch_size=8, max_delay_ms=0))
    batcher.set_tuner(tuner)
    batcher.start()
    assert batcher.wait_ready(30)

    def submit() -> Future[BatchResult]:
        return batcher.admit().submit({"x": np.zeros((1, 2), np.float32)}, 1)

    backlog = Backlog(submit, outstanding=12)
    try:
        assert settled.wait(120), tuner.describe()
    finally:
        backlog.stop()
        batcher.stop()
    assert not backlog.errors
    assert tuner.cap == FAST_ROWS and batcher.batch_rows == FAST_ROWS, tuner.describe()
    assert batcher._tuner is None  # settled: nothing runs per call any more
    stats = tuner.stats()
    assert set(stats) == {8, 4, 2, 1}
    # under the backlog every cap bound its batches
    assert all(s.rows_per_call == cap for cap, s in stats.items())


class EngineeredBackend(EchoBackend):
    """An echo whose calls sleep :func:`engineered_ms` (4 rows the cheapest a row), except
    on the warm-up's zeros, where 2 rows are the cheapest: a model whose cost alone differs
    from its cost under load, as ResNet50's did on two busy cores."""

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = inputs["x"]
        alone = not x.any()
        time.sleep(engineered_ms(len(x), fast=2 if alone else FAST_ROWS) / 1000)
        return super().predict(inputs)


def test_a_scorer_tunes_under_load_and_shows_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="scorepack.scorer")
    monkeypatch.setattr(scorer_module, "LoadTuner", quick_tuner())
    backend = EngineeredBackend(tmp_path / "m.echo")
    config = scoring_config(max_batch_size=8, max_delay_ms=0, preferred_batch_size="auto")
    with Scorer(backend, config).start(timeout=120) as scorer:
        start = scorer.batcher.batch_rows
        assert start == 2  # the warm-up's measuring, on zeros: where tuning starts
        info = scorer.describe()["batch_sizing"]
        assert info["how"] == "measured" and info["under_load"]["state"] == "watching"
        assert info["under_load"]["cap"] == start
        batcher = scorer.batcher

        def submit() -> Future[BatchResult]:
            return batcher.admit().submit({"x": np.ones((1, 2), np.float32)}, 1)

        backlog = Backlog(submit, outstanding=12)
        try:
            for _ in range(12_000):  # bounded: 120 s
                if scorer.batch_sizing is not None and scorer.batch_sizing.how != "measured":
                    break
                time.sleep(0.01)
        finally:
            backlog.stop()
        assert not backlog.errors
        sizing = scorer.batch_sizing
        assert sizing is not None and sizing.how == "tuned under load", scorer.describe()
        assert sizing.size == FAST_ROWS and scorer.batcher.batch_rows == FAST_ROWS
        info = scorer.describe()
        assert info["preferred_batch_size"] == FAST_ROWS
        under_load = info["batch_sizing"]["under_load"]
        assert under_load["state"] == "settled"
        assert set(under_load["ms_per_row"]) == {"8", "4", "2", "1"}
        # the warm-up's measurements stay beside the ones under load
        assert "8" in info["batch_sizing"]["measured_ms_per_call"]
        # real requests still get their own rows back at the tuned size
        assert scorer.predict({"x": np.full((1, 2), 7, np.float32)})["y"][0, 0] == 7
    lines = [r.getMessage() for r in caplog.records if "tuned under load" in r.getMessage()]
    assert any(f"preferred batch size {FAST_ROWS}, tuned under load" in x for x in lines), lines


@pytest.mark.parametrize("setting", ["off", 3])
def test_off_and_a_fixed_size_never_tune(
    setting: str | int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[object] = []
    monkeypatch.setattr(scorer_module, "LoadTuner", lambda *a, **k: made.append(a))
    backend = SlowBackend(tmp_path / "m.slow")
    config = scoring_config(max_batch_size=8, max_delay_ms=0, preferred_batch_size=setting)
    with Scorer(backend, config).start(timeout=60) as scorer:
        rows = scorer.batcher.batch_rows
        before = scorer.batch_sizing
        batcher = scorer.batcher

        def submit() -> Future[BatchResult]:
            return batcher.admit().submit({"x": np.ones((1, 2), np.float32)}, 1)

        backlog = Backlog(submit, outstanding=24)
        try:
            for _ in range(12_000):  # bounded: a backlog of many calls
                if backlog.answered >= 20 * START_STREAK:
                    break
                time.sleep(0.01)
        finally:
            backlog.stop()
        assert backlog.answered >= 20 * START_STREAK and not backlog.errors
        assert made == [] and scorer.batcher._tuner is None
        assert scorer.batch_sizing == before and scorer.batcher.batch_rows == rows
        assert "under_load" not in scorer.describe()["batch_sizing"]
