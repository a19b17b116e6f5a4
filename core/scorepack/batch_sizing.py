"""The preferred batch size: the batch a model runs fastest per row, measured at warm-up.

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

**Off by default; ``preferred_batch_size: auto`` measures it.** In stop 17's quiet
window the measuring chose unstable sizes on ResNet50 (ONNX Runtime 2, where batch 32 is
its fastest in-process; TensorFlow 4 in one server and 32 in the next; PyTorch 2, 4 and 8
across three servers), and ONNX Runtime lost 7 % at c=32 with it. The sizes below 8 run
within a few per cent of each other per row on a CPU and the sizes are timed one after the
other, so drift between them decides. The confirmation below steadied the choice, but in
stop 18's window the sizes it chose still lost under load (ONNX Runtime 4: −6 % at c=32;
PyTorch 2: −13 % at c=8): it times the model alone, while under load every batch also
pays the server's own work per call. So the default is ``off`` (batches fill to
``max_batch_size``, as before) and a fixed size (PyTorch's ResNet50 on two cores:
``--preferred-batch-size 8``, c=32 42 against 35 requests/s) is the dependable lever.

**How ``auto`` chooses.** After the warm-up,
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

**Where it shows.** The load log line (the size and every measured call time), the model's
metadata (``Scorer.describe()``: ``/info``, ``preferred_batch_size`` and
``batch_sizing``), and the ``scorepack_preferred_batch_size`` gauge beside
``scorepack_max_batch_size``. Both hosts (the embedded server, a package's ``init()``
under azmlinfsrv) load through the same :class:`~scorepack.scorer.Scorer`, so they measure
and batch the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CONFIRM_ROUNDS",
    "MARGIN",
    "NEAR",
    "BatchSizing",
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


@dataclass(frozen=True)
class BatchSizing:
    """The preferred batch size and how it came about.

    ``how`` is ``measured``, ``fixed`` (the setting gave a number), ``off`` (the setting),
    or ``not measured`` (no warm-up, or nothing to choose from); ``seconds`` holds the
    measured call time per batch size (the minimum of the timed calls).
    """

    size: int
    how: str
    seconds: Mapping[int, float] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """For the model's metadata: how it was chosen and the milliseconds per call."""
        return {
            "how": self.how,
            "measured_ms_per_call": {
                str(rows): round(s * 1000, 3) for rows, s in sorted(self.seconds.items())
            },
        }

    def summary(self, max_rows: int) -> str:
        """One phrase for the load log line."""
        text = f"preferred batch size {self.size} of {max_rows} ({self.how}"
        if self.seconds:
            text += ": " + ", ".join(
                f"{rows} rows {_ms(s)} ms, {rows / s:.0f}/s" if s > 0 else f"{rows} rows"
                for rows, s in sorted(self.seconds.items(), reverse=True)
            )
        return text + ")"


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
