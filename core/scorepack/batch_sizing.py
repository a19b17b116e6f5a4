"""The preferred batch size: the batch a model runs fastest per row, tuned under load.

A bigger batch is not always faster per row. On a CPU, PyTorch (and a little TensorFlow)
run ResNet50 slower per image at batch 32 than at batch 8 (issue 13 measured 31.3 against
38.4 images/s on two cores): the working set outgrows the caches and the frameworks' CPU
kernels stop gaining from width. Batches as large as the queue allows then cost throughput,
and the rate under load moves with the mix of batch sizes that traffic happens to form.

So the batcher forms batches of at most the **preferred batch size** (Triton's
``dynamic_batching { preferred_batch_size }``): when at least that many rows are queued it
runs a batch of that size at once rather than gathering more. ``max_batch_size`` stays
the hard limit: the most the user allows in one model call, and the most one request may
carry in one call (a request of more rows than the preferred size runs whole, alone; one
of more than ``max_batch_size`` rows is split).

**Off by default; ``preferred_batch_size: auto`` measures it, then tunes it under load.**
Timing the model alone chose sizes that lost under load: in stop 17's quiet window the
choices were unstable (ONNX Runtime 2, TensorFlow 4 or 32, PyTorch 2, 4 or 8 across
servers), and in stop 18's, with the confirmation below, ONNX Runtime's 4 lost 6 % at c=32
and PyTorch's 2 lost 13 % at c=8, while a fixed 8 gained 19 % for PyTorch at c=32 (42
against 35 requests/s). Under load each call also pays the model thread's own work (gather,
split, answering) and shares the two cores with decoding: PyTorch's OpenMP workers get
preempted and each call's barriers stall, so a row costs something else under load than
alone, and more, smaller calls meet more of it. Hence the tuning under load (below), which
times the real calls under the real load. Stop 19's quiet window (ResNet50, a fresh
server per level, measured after tuning settled): PyTorch tuned to 16 and served 43.3
requests/s at c=32 against 39.0 with ``off`` and 42.0 with a fixed 8; ONNX Runtime and
TensorFlow tuned to 32, which is ``off``'s batch (ONNX 56.6 against 54.2, TensorFlow 46.5
against 45.8 at c=32: the process draw). A second PyTorch run settled on 16 again: 39.6
against 37.6 with ``off`` and 44.9 with a fixed 8. So the tuned size no longer loses and
finds most of PyTorch's gain, but "the largest size within :data:`NEAR` of the best" took
16 where 8 was as good or better. The default still stays ``off`` (batches fill to
``max_batch_size``): the tuning itself serves the first backlog for 15–35 s at every
candidate, the poor ones (1, 2) included, and it settles once; one window measured it.

**Tuning under load** (:class:`LoadTuner`, on the model thread, once the model is ready).
The warm-up's size (below) is where it starts: nothing better is known before load comes,
and a low load never leaves it. Each time the model thread comes back for its next batch
the tuner is told the time and the rows then waiting. *Watching*: once :data:`START_STREAK`
calls in a row found at least :data:`BACKLOG_ROWS` rows waiting (the thread is the
bottleneck and batches form), tuning starts; at c=1 it never does. *Tuning*: each candidate
cap (``max_batch_size`` halving down to 1) gets a turn, in interleaved rounds
(:data:`ROUNDS`; 32, 16, ..., 1, 32, 16, ...) so that drift in the load weighs on all
alike; a turn lasts :data:`TURN_CYCLES` counted cycles and at least :data:`TURN_S`. A
*cycle* is the model thread's time from asking for one batch to asking for the next: the
gather, the call, the split and answering, and whatever decoding took from its cores
meanwhile; divided by the rows the batch had, it is the thread's time per row under that
load. Only a cycle that began with work waiting counts (a thread that waits for traffic
says nothing about the cap), and only once the rows queued when the turn began have been
served: they were decoded under the last cap's decode lookahead (two of its batches), and a
small cap after a large one would first run them without the decoding beside it. A cap
larger than the traffic fills still gets its turns: its batches are what the queue holds,
as with ``off``, and its cycles measure that. *Settled*: the candidates with at least
:data:`MIN_CYCLES` cycles are compared by their median time per row with :func:`choose`'s
rules (cap only if the best beats the largest by :data:`MARGIN`; then the largest within
:data:`NEAR` of the best), the size is fixed, and the batcher drops the tuner: a settled
server pays nothing per call (while tuning, a few attribute reads and one
``perf_counter``). :data:`TUNE_BUDGET_S` or :data:`TUNE_BUDGET_CALLS` bound it (the load
may leave halfway): then the best so far, or the start where no candidate has enough
cycles. ResNet50 (ONNX Runtime) on two busy CPU cores settled in about 17 s of load, at c=8
and at c=32 alike. It settles once, under the load it first meets: a server tuned at c=8
keeps that size at c=32; tuning again when the load changes is not done.

**The warm-up's measuring (the start).** After the warm-up,
on the model thread, before the model reports ready, :func:`measure` times the model's own
call on zero-filled batches: the largest size first, then halving (32, 16, 8, 4, 2, 1).
Each size gets one untimed call when the warm-up did not already run it (a new shape's
first call pays one-off costs: kernel selection, allocation), then at least
:data:`MIN_TIMED_CALLS` timed calls, more for a cheap call (until :data:`TIMED_BUDGET_S`
of calls or :data:`MAX_TIMED_CALLS`) and more while the two fastest disagree by over
:data:`AGREE` (up to :data:`SETTLE_CALLS` calls or :data:`SETTLE_BUDGET_S` seconds); the
minimum counts, being the time least disturbed by whatever else the machine runs. The walk
goes on while the sizes are about as fast per row as the best so far (on a busy machine
PyTorch's ResNet50 measured 16 as slow per row as 32, and 8 clearly faster), and stops at
the first size slower per row than the best by more than
:data:`MARGIN`: call overhead has begun to dominate, and smaller sizes only have more of
it. Before a cap is taken, the largest size and the chosen one are timed again in turns
(:data:`CONFIRM_ROUNDS` each), so that drift since the walk began weighs on both.
:func:`choose` caps only when the size with the most rows per second beats the
largest size by at least :data:`MARGIN` (10 %): noise must never cap a model whose cost
is call overhead (a tiny model is about twice as slow per row at half the batch, so its
walk stops after two sizes). It then takes the *largest* size within :data:`NEAR` (5 %)
of the best: below 8 rows PyTorch's ResNet50 runs about as fast per row at every size on
two cores, and a quiet run measured 2 the fastest by a hair; of sizes that fast the
larger forms fewer model calls under load, and the choice stops moving with noise.
On a GPU the warm-up has already run every size, so the measuring adds timed calls only.
ResNet50 on two CPU cores adds a few seconds to the load (more on a busy machine, whose
calls take longer and disagree more); a tiny model, milliseconds.

**What else it can be.** ``preferred_batch_size: N`` fixes it (no measuring; capped at
``max_batch_size``); ``off`` (the default): batches fill to ``max_batch_size``.
It is a batching setting like ``max_batch_size``: ``serve --preferred-batch-size``,
``SCOREPACK_PREFERRED_BATCH_SIZE``, a settings file, a package's manifest (``scoring:
batching:``) or a repository's ``model-settings.yaml``. With the warm-up off
(``ScoringConfig.warmup``) or refused by the model, nothing is measured and batches fill
to ``max_batch_size``.

**Where it shows.** The load log line (the size and every measured call time), one INFO
line when tuning settles (the size, the one it replaced, each candidate's time per row,
cycles and rows per call), the model's metadata (``Scorer.describe()``: ``/info``,
``preferred_batch_size`` and ``batch_sizing``: ``how`` becomes ``tuned under load``, and
``under_load`` holds the tuner's state, ``watching``, ``tuning`` or ``settled``, and the
candidates' measurements), and the ``scorepack_preferred_batch_size`` gauge beside
``scorepack_max_batch_size`` (the cap in force: while tuning, the candidate's). Both
hosts (the embedded server, a package's ``init()`` under azmlinfsrv) load through the same
:class:`~scorepack.scorer.Scorer`, so they measure, tune and batch the same way.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

__all__ = [
    "CONFIRM_ROUNDS",
    "MARGIN",
    "NEAR",
    "BatchSizing",
    "LoadStats",
    "LoadTuner",
    "candidate_sizes",
    "choose",
    "measure",
]

#: a smaller batch must give this much more rows per second than the largest to be preferred
MARGIN = 0.10
#: sizes within this of the best rows per second count as equally fast (the largest is taken)
NEAR = 0.05
#: timed calls per size at least (their minimum counts)
MIN_TIMED_CALLS = 2
#: more timed calls while they took less than this in all (cheap calls are noisier)...
TIMED_BUDGET_S = 0.05
#: ...up to this many
MAX_TIMED_CALLS = 10
#: more timed calls, up to SETTLE_CALLS and while they took less than SETTLE_BUDGET_S in
#: all, while the two fastest differ by more than this (one of them was disturbed: a busy
#: machine's bursts last longer than a short call); the budget bounds a large model's
#: load time on a busy machine (ResNet50 on two busy cores: seconds a call)
AGREE = 0.05
SETTLE_CALLS = 5
SETTLE_BUDGET_S = 3.0
#: before capping, the largest size and the chosen one are timed this many times more each,
#: in turns
CONFIRM_ROUNDS = 2

# --- tuning under load (LoadTuner) ---
#: consecutive model calls that found at least BACKLOG_ROWS rows waiting before tuning starts
START_STREAK = 8
BACKLOG_ROWS = 2
#: a candidate's turn lasts at least TURN_CYCLES counted cycles and TURN_S seconds; cycles
#: count once the rows queued at its start are served (they followed the last cap)
TURN_CYCLES = 4
TURN_S = 0.5
#: turns per candidate, interleaved (so that drift in the load weighs on all alike)
ROUNDS = 3
#: counted cycles a candidate needs to be chosen
MIN_CYCLES = 6
#: tuning stops at the best so far after this long or this many model calls
TUNE_BUDGET_S = 120.0
TUNE_BUDGET_CALLS = 3000


class LoadStats(NamedTuple):
    """One candidate cap's cycles under load: the median seconds of the model thread's time
    per row, how many cycles were counted, and the rows per call they averaged (below the
    cap when the traffic, not the cap, bounded the batches)."""

    seconds_per_row: float
    cycles: int
    rows_per_call: float


@dataclass(frozen=True)
class BatchSizing:
    """The preferred batch size and how it came about.

    ``how`` is ``measured``, ``tuned under load``, ``fixed`` (the setting gave a number),
    ``off`` (the setting), or ``not measured`` (no warm-up, or nothing to choose from);
    ``seconds`` holds the call time per batch size measured at warm-up (the minimum of the
    timed calls); ``under_load`` each candidate cap's cycles once tuned under load.
    """

    size: int
    how: str
    seconds: Mapping[int, float] = field(default_factory=dict)
    under_load: Mapping[int, LoadStats] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """For the model's metadata: how it was chosen and the milliseconds per call."""
        info: dict[str, Any] = {
            "how": self.how,
            "measured_ms_per_call": {
                str(rows): round(s * 1000, 3) for rows, s in sorted(self.seconds.items())
            },
        }
        if self.under_load:
            info["under_load"] = {"state": "settled", **_load_table(self.under_load)}
        return info

    def summary(self, max_rows: int) -> str:
        """One phrase for the load log line."""
        text = f"preferred batch size {self.size} of {max_rows} ({self.how}"
        if self.seconds:
            text += ": " + ", ".join(
                f"{rows} rows {_ms(s)} ms, {rows / s:.0f}/s" if s > 0 else f"{rows} rows"
                for rows, s in sorted(self.seconds.items(), reverse=True)
            )
        if self.under_load:
            text += "; under load: " + ", ".join(
                f"cap {cap} {_ms(st.seconds_per_row)} ms a row ({st.cycles} calls of "
                f"{st.rows_per_call:.1f})"
                for cap, st in sorted(self.under_load.items(), reverse=True)
            )
        return text + ")"


def _load_table(stats: Mapping[int, LoadStats]) -> dict[str, Any]:
    ordered = sorted(stats.items())
    return {
        "ms_per_row": {str(cap): round(st.seconds_per_row * 1000, 3) for cap, st in ordered},
        "cycles": {str(cap): st.cycles for cap, st in ordered},
        "rows_per_call": {str(cap): round(st.rows_per_call, 2) for cap, st in ordered},
    }


def _enough(timed: list[float]) -> bool:
    """Whether a size's timed calls are enough: at least MIN_TIMED_CALLS; for cheap calls,
    TIMED_BUDGET_S of them (up to MAX_TIMED_CALLS); and the two fastest agreeing within
    AGREE (or SETTLE_CALLS made, or SETTLE_BUDGET_S spent)."""
    count = len(timed)
    if count < MIN_TIMED_CALLS:
        return False
    if count >= MAX_TIMED_CALLS:
        return True
    if sum(timed) < TIMED_BUDGET_S:
        return False
    fastest, second = sorted(timed)[:2]
    settled = second <= fastest * (1 + AGREE)
    return settled or count >= SETTLE_CALLS or sum(timed) >= SETTLE_BUDGET_S


def _ms(seconds: float) -> str:
    ms = seconds * 1000
    return f"{ms:.1f}" if ms >= 10 else f"{ms:.3f}"


def candidate_sizes(max_rows: int) -> list[int]:
    """The sizes the walk may measure: ``max_rows``, then halving down to 1."""
    sizes = []
    rows = max(1, max_rows)
    while True:
        sizes.append(rows)
        if rows == 1:
            return sizes
        rows //= 2


def choose(seconds: Mapping[int, float], max_rows: int, margin: float = MARGIN) -> int:
    """The preferred size from measured call times (batch size → seconds per call).

    When the size with the most rows per second gives at least ``1 + margin`` times the
    rows per second of the largest size measured, the largest size within :data:`NEAR`
    of that best; otherwise the largest size. Sizes above ``max_rows`` are ignored; with nothing
    measured the answer is ``max_rows``.
    """
    usable = {rows: s for rows, s in seconds.items() if 1 <= rows <= max_rows and s > 0}
    if not usable:
        return max(1, max_rows)
    largest = max(usable)

    def rate(rows: int) -> float:
        return rows / usable[rows]

    best = max(usable, key=lambda rows: (rate(rows), rows))
    if rate(best) < (1 + margin) * rate(largest):
        return largest
    # the largest size about as fast as the best: sizes within NEAR of each other differ by
    # noise, and of two equals the larger needs fewer model calls under load
    return max(rows for rows in usable if rate(rows) >= (1 - NEAR) * rate(best))


def measure(
    call: Callable[[int], None],
    max_rows: int,
    warmed: Collection[int] = (),
    *,
    clock: Callable[[], float] = time.perf_counter,
    margin: float = MARGIN,
) -> BatchSizing:
    """Time ``call(rows)`` (one model call of ``rows`` rows) walking down from ``max_rows``
    and choose (see the module docstring). ``warmed``: sizes already run once."""
    seconds: dict[int, float] = {}
    best: float | None = None  # the fewest seconds per row so far
    for rows in candidate_sizes(max_rows):
        if rows not in warmed:
            call(rows)
        timed: list[float] = []
        while not _enough(timed):
            began = clock()
            call(rows)
            timed.append(clock() - began)
        seconds[rows] = min(timed)
        per_row = seconds[rows] / rows
        if best is not None and per_row > best * (1 + margin):
            # clearly slower per row: call overhead has begun to dominate, and the
            # smaller sizes only have more of it
            break
        best = per_row if best is None else min(best, per_row)
    chosen = choose(seconds, max_rows, margin)
    largest = max(seconds)
    if chosen != largest:
        # a cap rests on two sizes timed at different moments: time them again in turns
        # (CONFIRM_ROUNDS each), so that drift since the first (a pool or arena still
        # settling, the machine's load) weighs on both alike, and choose again
        for _ in range(CONFIRM_ROUNDS):
            for rows in (largest, chosen):
                began = clock()
                call(rows)
                seconds[rows] = min(seconds[rows], clock() - began)
        chosen = choose(seconds, max_rows, margin)
    return BatchSizing(chosen, "measured", seconds)


class LoadTuner:
    """Chooses the preferred batch size from the model thread's real calls under load.

    The batcher calls :meth:`observe` on its model thread each time it comes back for the
    next batch, with the time, the rows then waiting and the rows of the call just made,
    and gathers the next batch with at most the cap it returns. Watching, the cap stays
    ``start``; after :data:`START_STREAK` calls in a row found at least
    :data:`BACKLOG_ROWS` rows waiting, each candidate (``max_rows`` halving down to 1)
    gets interleaved turns (:data:`ROUNDS` each); once every candidate had its turns, or
    the budget is spent, :meth:`observe` returns the chosen cap with :attr:`settled` set
    and ``on_settle`` gets the measurements (see the module docstring). Not thread-safe
    except :meth:`describe`: one thread observes.
    """

    def __init__(
        self,
        start: int,
        max_rows: int,
        *,
        on_settle: Callable[[int, dict[int, LoadStats]], None] | None = None,
        turn_cycles: int = TURN_CYCLES,
        turn_s: float = TURN_S,
        rounds: int = ROUNDS,
        min_cycles: int = MIN_CYCLES,
        budget_s: float = TUNE_BUDGET_S,
        budget_calls: int = TUNE_BUDGET_CALLS,
        start_streak: int = START_STREAK,
    ) -> None:
        self.start = max(1, min(start, max_rows))
        self.max_rows = max(1, max_rows)
        self.cap = self.start
        self.settled = False
        #: settled on measurements (False: the budget ran out first, the start stays)
        self.decided = False
        self.state = "watching"
        self._on_settle = on_settle
        self._turn_cycles = turn_cycles
        self._turn_s = turn_s
        self._rounds = rounds
        self._min_cycles = min_cycles
        self._budget_s = budget_s
        self._budget_calls = budget_calls
        self._start_streak = start_streak
        self._streak = 0
        self._candidates = candidate_sizes(self.max_rows)
        self._turn = 0  # index into the candidates × rounds schedule
        self._turn_began = 0.0
        self._turn_counted = 0
        self._flush = 0  # rows waiting when the turn began: served before cycles count
        self._served = 0  # rows served in this turn
        self._began = 0.0
        self._calls = 0
        self._last_entry: float | None = None  # when the last call's batch was asked for
        self._last_cap = self.cap
        self._per_row: dict[int, list[float]] = {}
        self._rows: dict[int, int] = {}
        self._lock = threading.Lock()  # describe() reads from other threads

    def observe(self, now: float, waiting: int, last_rows: int) -> int:
        """The model thread asks for its next batch at ``now``, ``waiting`` rows queued;
        the call before made ``last_rows`` rows. Returns the cap for the next batch."""
        if self.settled:
            return self.cap
        if self.state == "watching":
            self._streak = self._streak + 1 if waiting >= BACKLOG_ROWS else 0
            if self._streak >= self._start_streak:
                self.state = "tuning"
                self._began = now
                self._begin_turn(now, waiting)
            return self.cap
        # the cycle from the last call's ask to this one: the gather, the model call, the
        # split, and whatever else takes the model thread's cores meanwhile (decoding)
        last = self._last_entry
        if last is not None and last_rows > 0:
            with self._lock:
                self._per_row.setdefault(self._last_cap, []).append((now - last) / last_rows)
                self._rows[self._last_cap] = self._rows.get(self._last_cap, 0) + last_rows
            self._turn_counted += 1
        self._served += last_rows
        self._calls += 1
        if now - self._began >= self._budget_s or self._calls >= self._budget_calls:
            return self._settle()
        if self._turn_counted >= self._turn_cycles and now - self._turn_began >= self._turn_s:
            self._turn += 1
            if self._turn >= self._rounds * len(self._candidates):
                return self._settle()
            self._begin_turn(now, waiting)
        # a counted cycle begins only with work waiting (an idle thread's wait for traffic
        # says nothing about the cap), and only once the rows queued before the turn are
        # served (they were decoded under the last cap's lookahead, two of its batches: a
        # small cap after a large one would run first without the decoding beside it)
        clean = waiting > 0 and self._served >= self._flush
        self._last_entry = now if clean else None
        self._last_cap = self.cap
        return self.cap

    def _begin_turn(self, now: float, waiting: int) -> None:
        self.cap = self._candidates[self._turn % len(self._candidates)]
        self._turn_began = now
        self._turn_counted = 0
        self._flush = waiting
        self._served = 0
        self._last_entry = None

    def stats(self) -> dict[int, LoadStats]:
        """Each candidate's cycles so far."""
        with self._lock:
            return {
                cap: LoadStats(statistics.median(times), len(times), self._rows[cap] / len(times))
                for cap, times in self._per_row.items()
                if times
            }

    def _settle(self) -> int:
        stats = self.stats()
        usable = {
            cap: st.seconds_per_row * cap
            for cap, st in stats.items()
            if st.cycles >= self._min_cycles
        }
        # nothing measured enough (the load left before the turns were done): keep the start
        self.cap = choose(usable, self.max_rows) if usable else self.start
        self.decided = bool(usable)
        self.settled = True
        self.state = "settled"
        if self._on_settle is not None:
            self._on_settle(self.cap, stats)
        return self.cap

    def describe(self) -> dict[str, Any]:
        """The state (``watching``, ``tuning``, ``settled``), the cap now, and each
        candidate's cycles so far."""
        return {"state": self.state, "cap": self.cap, **_load_table(self.stats())}
