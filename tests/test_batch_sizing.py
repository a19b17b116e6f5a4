"""The preferred batch size (scorepack.batch_sizing): the choosing rule over given call
times, the warm-up's walk over a made-up clock, and a Scorer over a real backend plugin
whose cost per row rises with the batch, capping the batches it forms.

No assertion depends on how fast anything ran: the rule and the walk are fed their
times; the Scorer's backend sleeps ``rows² × cost_ms`` a call (a sleep never ends early,
so a smaller batch is always several times cheaper per row, however busy the machine),
and what the tests check is what follows from the size chosen, whichever it is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fixture_backends import SlowBackend
from metrics_helpers import scrape, value
from scorepack import BatchingConfig, Scorer, ScoringConfig
from scorepack.batch_sizing import (
    CONFIRM_ROUNDS,
    MARGIN,
    MAX_TIMED_CALLS,
    MIN_TIMED_CALLS,
    NEAR,
    SETTLE_CALLS,
    BatchSizing,
    candidate_sizes,
    choose,
    measure,
)
from scorepack.parsing import parse_preferred_batch_size
from scorepack.settings import RuntimeSettings, ServeSettings, SettingsError
from serving_helpers import scoring_config, serving, wait_for

# --- the rule ----------------------------------------------------------------------------


def per_second(rates: dict[int, float]) -> dict[int, float]:
    """Call times (seconds) from rows per second, per batch size."""
    return {rows: rows / rate for rows, rate in rates.items()}


def test_a_clearly_faster_smaller_batch_is_preferred() -> None:
    # issue 13's PyTorch ResNet50 on two cores: 31.3 images/s at 32, 38.4 at 8
    times = per_second({32: 31.3, 16: 35.0, 8: 38.4, 4: 36.0})
    assert choose(times, 32) == 8


def test_noise_and_ties_never_cap() -> None:
    # a smaller size only a little faster (less than MARGIN): the largest stays
    assert choose(per_second({32: 100.0, 16: 100.0 * (1 + MARGIN) * 0.99}), 32) == 32
    # exactly as fast per row: the largest
    assert choose(per_second({32: 50.0, 16: 50.0, 8: 50.0}), 32) == 32
    # a call-overhead model (a tiny one): the same time a call, whatever its rows
    assert choose({32: 0.001, 16: 0.001}, 32) == 32
    # just past the margin, it caps
    assert choose(per_second({32: 100.0, 16: 100.0 * (1 + MARGIN) * 1.01}), 32) == 16


def test_the_fastest_wins_and_the_larger_on_a_tie() -> None:
    assert choose(per_second({32: 30.0, 16: 40.0, 8: 44.0, 4: 44.0}), 32) == 8
    assert choose(per_second({32: 30.0, 16: 44.0, 8: 40.0}), 32) == 16


def test_of_sizes_near_the_best_the_largest_wins() -> None:
    # the quiet window of stop 17: PyTorch's ResNet50 measured 2 rows the fastest per row,
    # by less than NEAR over 8; 8 makes fewer model calls for the same rate
    times = per_second({32: 31.3, 16: 33.0, 8: 37.5, 4: 38.0, 2: 39.0})
    assert choose(times, 32) == 8
    # just outside NEAR, the faster smaller size stays the choice
    assert choose(per_second({32: 30.0, 8: 40.0 * (1 - NEAR) * 0.99, 4: 40.0}), 32) == 4


def test_the_rule_respects_max_batch_size() -> None:
    # sizes above the limit (a measure from a larger setting) are not candidates
    times = per_second({64: 80.0, 32: 30.0, 16: 40.0})
    assert choose(times, 32) == 16
    assert choose(times, 16) == 16
    assert choose({}, 12) == 12
    assert choose({0: 1.0, 8: 0.0}, 12) == 12  # nothing usable measured: the limit


def test_candidate_sizes_halve_down_to_one() -> None:
    assert candidate_sizes(32) == [32, 16, 8, 4, 2, 1]
    assert candidate_sizes(12) == [12, 6, 3, 1]
    assert candidate_sizes(1) == [1]


# --- the walk, over a made-up clock ----------------------------------------------------


class FakeModel:
    """A model call whose duration is given per batch size, and the clock it moves."""

    def __init__(
        self,
        cost: Callable[[int], float],
        warmed: tuple[int, ...] = (1, 32),
        first_call_extra: float = 1.0,
    ) -> None:
        self.cost = cost
        self.warmed = warmed
        self.first_call_extra = first_call_extra
        self.now = 0.0
        self.calls: list[int] = []  # after the warm-up

    def clock(self) -> float:
        return self.now

    def __call__(self, rows: int) -> None:
        # a shape's first call pays a one-off cost (kernel selection, allocation)
        first = rows not in self.calls and rows not in self.warmed
        self.now += self.cost(rows) + (self.first_call_extra if first else 0)
        self.calls.append(rows)


def test_the_walk_stops_where_smaller_stops_paying() -> None:
    # per row: 32 → 40 ms, 16 → 30, 8 → 25, 4 → 28 (more than 10 % worse than 8): the
    # walk stops there, 2 and 1 are never tried
    per_row = {32: 0.040, 16: 0.030, 8: 0.025, 4: 0.028, 2: 0.05, 1: 0.1}
    model = FakeModel(lambda rows: per_row[rows] * rows)
    sizing = measure(model, 32, warmed=model.warmed, clock=model.clock)
    assert (sizing.size, sizing.how) == (8, "measured")
    assert sizing.seconds == pytest.approx({r: per_row[r] * r for r in (32, 16, 8, 4)})
    # the warm-up ran 32: timed at once; 16, 8 and 4 got one untimed call first; calls
    # of 0.1 s and more fill the budget with the fewest timed calls
    assert model.calls[:11] == [32] * MIN_TIMED_CALLS + [16, 16, 16, 8, 8, 8, 4, 4, 4]
    # then, before capping, the largest and the chosen size again, in turns
    assert model.calls[11:] == [32, 8] * CONFIRM_ROUNDS


def test_a_cap_is_confirmed_against_drift() -> None:
    # the largest size timed while the model was still settling (ONNX Runtime's ResNet50
    # in stop 17's quiet window chose 2 of 32): timed again in turns, the cap goes
    settling = iter([0.5, 0.5] + [0.0] * 100)
    model = FakeModel(lambda rows: rows * 0.01 + (next(settling) if rows == 32 else 0.0))
    sizing = measure(model, 32, warmed=model.warmed, clock=model.clock)
    assert sizing.size == 32
    assert sizing.seconds[32] == pytest.approx(0.32)


def test_the_walk_goes_on_past_a_size_as_slow_as_the_one_above() -> None:
    # PyTorch's ResNet50 on a busy CPU: 16 as slow per row as 32, 8 clearly faster
    per_row = {32: 0.077, 16: 0.078, 8: 0.052, 4: 0.104, 2: 0.2, 1: 0.4}
    model = FakeModel(lambda rows: per_row[rows] * rows)
    sizing = measure(model, 32, warmed=model.warmed, clock=model.clock)
    assert sizing.size == 8 and sorted(sizing.seconds) == [4, 8, 16, 32]


def test_the_minimum_of_the_timed_calls_counts() -> None:
    noise = iter([0.5, 0.0] * 50)  # every other call disturbed by half a second
    model = FakeModel(lambda rows: rows * 0.01 + next(noise), warmed=(1, 4))
    sizing = measure(model, 4, warmed=model.warmed, clock=model.clock)
    assert sizing.seconds[4] == pytest.approx(0.04)
    # the two fastest of the first two calls disagreed: timed again until two agreed
    assert model.calls[:4] == [4, 4, 4, 4] and model.calls[4] == 2


def test_a_disturbed_size_is_timed_until_two_calls_agree() -> None:
    # every call disturbed differently (a busy machine): SETTLE_CALLS calls, no more
    noise = iter([0.3, 0.2, 0.1, 0.25, 0.15] * 20)
    model = FakeModel(lambda rows: 0.1 + next(noise), warmed=(1, 2))
    sizing = measure(model, 2, warmed=model.warmed, clock=model.clock)
    assert model.calls.count(2) == SETTLE_CALLS
    assert sizing.seconds[2] == pytest.approx(0.2)
    # a call of seconds (a large model on a busy machine): settling stops at the budget
    slow = iter([1.0, 0.0] * 20)
    large = FakeModel(lambda rows: 1.0 + next(slow), warmed=(1, 2))
    measure(large, 2, warmed=large.warmed, clock=large.clock)
    assert large.calls.count(2) == 2  # 2 s + 1 s: past SETTLE_BUDGET_S after two calls


def test_cheap_calls_are_timed_more_often_and_an_overhead_model_is_not_capped() -> None:
    model = FakeModel(lambda rows: 0.0001)  # 0.1 ms a call, whatever its rows
    sizing = measure(model, 32, warmed=model.warmed, clock=model.clock)
    assert sizing.size == 32
    assert sorted(sizing.seconds) == [16, 32]  # 16 was slower per row: the walk stopped
    assert model.calls.count(32) == MAX_TIMED_CALLS


# --- the setting -------------------------------------------------------------------------


def test_the_setting_takes_auto_off_or_rows() -> None:
    assert parse_preferred_batch_size("AUTO") == "auto"
    assert parse_preferred_batch_size(" off") == "off"
    assert parse_preferred_batch_size("8") == 8 and parse_preferred_batch_size(4) == 4
    for bad in ("0", -1, "lots", True, "1.5"):
        with pytest.raises(ValueError, match="auto, off or a number of rows"):
            parse_preferred_batch_size(bad)
    assert BatchingConfig().preferred_batch_size == "off"  # the default (batch_sizing.py)
    assert BatchingConfig(preferred_batch_size="8").preferred_batch_size == 8
    with pytest.raises(ValueError, match="preferred_batch_size"):
        BatchingConfig(preferred_batch_size=0)


def test_the_setting_comes_from_flags_variables_files_and_manifests(tmp_path: Path) -> None:
    settings = RuntimeSettings.load(environ={"SCOREPACK_PREFERRED_BATCH_SIZE": "8"})
    assert settings.preferred_batch_size == 8
    assert settings.environ() == {"SCOREPACK_PREFERRED_BATCH_SIZE": "8"}
    file = tmp_path / "settings.yaml"
    file.write_text("preferred_batch_size: 'off'\nmax_batch_size: 16\n")
    config = ServeSettings.load(file=file, environ={}).scoring_config()
    assert (config.batching.preferred_batch_size, config.batching.max_batch_size) == ("off", 16)
    # the command line wins, and an explicit "auto" overrides what a package says
    served = RuntimeSettings.load({"preferred_batch_size": "auto"}, file=file, environ={})
    assert served.apply(config).batching.preferred_batch_size == "auto"
    with pytest.raises(SettingsError, match="--preferred-batch-size / SCOREPACK_PREFERRED"):
        RuntimeSettings.load(
            environ={"SCOREPACK_PREFERRED_BATCH_SIZE": "lots"},
            flags={"preferred_batch_size": "--preferred-batch-size"},
        )
    # a package's manifest (and a repository's model-settings.yaml) carries it
    fixed = ScoringConfig(batching=BatchingConfig(preferred_batch_size=4))
    assert fixed.to_dict()["batching"]["preferred_batch_size"] == 4
    assert ScoringConfig.from_dict(fixed.to_dict()) == fixed


# --- a Scorer over a backend that is slower per row at larger batches --------------------

#: milliseconds × rows² per call: 8 rows 256 ms (32 ms a row), 4 rows 64 ms (16 ms a row)
COST_MS = 4.0


@pytest.fixture()
def costly(tmp_path: Path) -> Iterator[SlowBackend]:
    yield SlowBackend(tmp_path / "m.slow", options={"cost_ms": COST_MS})


def batches_of(scorer: Scorer, backend: SlowBackend, rows: int) -> list[int]:
    """The model calls ``rows`` one-row requests make when they queue together behind
    one held request (which rides alone)."""
    warm = len(backend.calls)
    backend.gate.clear()
    backend.entered.clear()
    with ThreadPoolExecutor(rows + 1) as pool:
        try:
            held = pool.submit(scorer.predict, {"x": np.zeros((1, 2), np.float32)})
            assert backend.entered.wait(30)
            queued = [
                pool.submit(scorer.predict, {"x": np.full((1, 2), i, np.float32)})
                for i in range(rows)
            ]
            wait_for(lambda: scorer.batcher.queued == rows, f"{rows} queued requests")
        finally:
            backend.gate.set()
        held.result(60)
        for i, future in enumerate(queued):
            assert future.result(60)["y"][0, 0] == i  # each got its own row back
    return backend.calls[warm:]


def expected(first: int, rows: int, size: int) -> list[int]:
    return [first] + [size] * (rows // size) + ([rows % size] if rows % size else [])


def test_batches_are_capped_at_the_measured_size(costly: SlowBackend) -> None:
    config = scoring_config(max_batch_size=8, max_delay_ms=0, preferred_batch_size="auto")
    with Scorer(costly, config).start(timeout=60) as scorer:
        sizing = scorer.batch_sizing
        assert sizing is not None and sizing.how == "measured"
        # 4 rows cost a quarter of 8 rows' sleep per row... whatever noise adds
        assert sizing.size <= 4, sizing
        assert set(sizing.seconds) <= {8, 4, 2, 1} and 8 in sizing.seconds
        assert costly.calls[:2] == [1, 8]  # the warm-up first, then the measuring
        assert scorer.batcher.batch_rows == sizing.size and scorer.batcher.max_rows == 8
        assert batches_of(scorer, costly, 8) == expected(1, 8, sizing.size)
        info = scorer.describe()
        assert (info["max_batch_size"], info["preferred_batch_size"]) == (8, sizing.size)
        assert info["batch_sizing"]["how"] == "measured"
        assert "8" in info["batch_sizing"]["measured_ms_per_call"]
        # one request of more rows than the preferred size still runs whole (up to 8)
        warm = len(costly.calls)
        assert scorer.predict({"x": np.zeros((8, 2), np.float32)})["y"].shape == (8, 2)
        assert costly.calls[warm:] == [8]


def test_the_setting_fixes_or_turns_off_the_size(costly: SlowBackend, tmp_path: Path) -> None:
    off = scoring_config(max_batch_size=8, max_delay_ms=0, preferred_batch_size="off")
    with Scorer(costly, off).start(timeout=60) as scorer:
        assert costly.calls == [1, 8]  # the warm-up only: nothing measured
        assert scorer.batch_sizing == BatchSizing(8, "off")
        assert batches_of(scorer, costly, 8) == [1, 8]
    fixed = SlowBackend(tmp_path / "f.slow")
    three = scoring_config(max_batch_size=8, max_delay_ms=0, preferred_batch_size=3)
    with Scorer(fixed, three).start(timeout=60) as scorer:
        assert fixed.calls == [1, 8]
        assert scorer.describe()["preferred_batch_size"] == 3
        assert scorer.describe()["batch_sizing"] == {"how": "fixed", "measured_ms_per_call": {}}
        assert batches_of(scorer, fixed, 8) == expected(1, 8, 3)
    # the user's max_batch_size stays the upper bound
    above = SlowBackend(tmp_path / "a.slow")
    with Scorer(above, scoring_config(max_batch_size=4, preferred_batch_size=16)).start(
        timeout=60
    ) as scorer:
        assert scorer.batcher.batch_rows == 4 and scorer.batch_sizing == BatchSizing(4, "fixed")
    # no warm-up, no measuring: batches fill to max_batch_size
    cold = SlowBackend(tmp_path / "c.slow")
    no_warmup = scoring_config(max_batch_size=8, warmup=False, preferred_batch_size="auto")
    with Scorer(cold, no_warmup).start(timeout=60) as scorer:
        assert cold.calls == [] and scorer.batch_sizing == BatchSizing(8, "not measured")


def test_the_size_shows_in_metrics_info_and_the_load_line(
    costly: SlowBackend, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="scorepack.scorer")
    with serving(costly, scoring_config(max_batch_size=8, preferred_batch_size="auto")) as served:
        size = served.scorer.batcher.batch_rows
        samples = scrape(served.client)
        name = served.scorer.name
        assert value(samples, "scorepack_preferred_batch_size", model=name) == size
        assert value(samples, "scorepack_max_batch_size", model=name) == 8
        info = served.client.get("/info").json()
        assert info["preferred_batch_size"] == size
        assert info["batch_sizing"]["how"] == "measured"
        # the benchmark suite reads it the same way, for its report
        from benchmarks.suite.servers import Running

        running = Running(None, served.url, "/health/ready", 0.0, metrics_url="")  # type: ignore[arg-type]
        assert running.preferred_batch_size() == size
    line = next(r.getMessage() for r in caplog.records if "ready in" in r.getMessage())
    assert f"preferred batch size {size} of 8 (measured: 8 rows " in line


def test_the_suite_reports_each_servers_preferred_batch_size() -> None:
    from benchmarks.suite import report

    def server(label: str, kind: str, rps: float, preferred: int | None) -> dict[str, Any]:
        run = {"concurrency": 32, "rps": rps, "latency_ms": {"p50": 1.0}, "errors": 0}
        return {
            "server": kind,
            "label": label,
            "runs": [run],
            "ready_s": 1.0,
            "peak_rss_mib": 1.0,
            "preferred_batch_size": preferred,
        }

    results = {
        "machine": {"cpu": "X", "cores": 2, "memory_gib": 8, "gpus": [], "python": "3.11"}
        | {"versions": {}},
        "duration_s": 4.0,
        "limits": [
            {"backend": "pytorch", "decode": "article", "batch": 32, "images_per_s": 31.3}
            | {"batch_latency_ms": 1000.0}
        ],
        "servers": [
            server("pytorch embedded", "embedded", 43.0, 8),
            server("pytorch azmlinfsrv", "azureml", 42.0, 8),
            server("article baseline", "baseline", 20.0, None),
        ],
    }
    text = report.markdown(results)
    assert (
        "| ResNet50 pytorch: package under azmlinfsrv / embedded, c=32 (preferred batch size "
        "8 / 8) | 42.0 / 43.0 = **0.98** | ≥ 0.95 | pass |"
    ) in text
    assert "| pytorch embedded | 32 | 43.0 | 1.0 | 0.0 | 0 | - | 8 |" in text
    assert "| article baseline | 32 | 20.0 | 1.0 | 0.0 | 0 | - | - |" in text
    # batchauto's runs come from a server per level, each with the size it settled on
    auto = server("pytorch embedded, preferred batch size auto", "embedded", 40.0, 16)
    auto["runs"] = [
        dict(auto["runs"][0], concurrency=8, preferred_batch_size=4),
        dict(auto["runs"][0], preferred_batch_size=16),
    ]
    text = report.markdown(dict(results, servers=[*results["servers"], auto]))
    label = "pytorch embedded, preferred batch size auto"
    assert f"| {label} | 8 | 40.0 | 1.0 | 0.0 | 0 | - | 4 |" in text
    assert f"| {label} | 32 | 40.0 | 1.0 | 0.0 | 0 | - | 16 |" in text
