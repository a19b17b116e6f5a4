"""Prometheus text exposition of what the server and its batchers counted.

With one model the per-model series carry no labels (as before); with several, each
carries ``model`` and ``version`` labels.
"""

from __future__ import annotations

from collections import Counter

from ..batching import BatchStats
from ..repository import Repository

__all__ = ["render_metrics"]

_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

_GAUGES = (
    ("scorepack_model_ready", "gauge", "1 once the model is loaded and warmed up."),
    ("scorepack_queue_depth", "gauge", "Requests admitted and not yet in a model call."),
    ("scorepack_batches_total", "counter", "Model calls made."),
    ("scorepack_batch_requests_total", "counter", "Requests served by model calls."),
    ("scorepack_rejected_total", "counter", "Requests refused because the queue was full."),
    ("scorepack_timeouts_total", "counter", "Requests answered 504: past their timeout."),
    (
        "scorepack_cancelled_total",
        "counter",
        "Requests whose client left before the answer; their queued work was dropped.",
    ),
    ("scorepack_inference_seconds_total", "counter", "Time spent inside model calls."),
)


def render_metrics(repository: Repository, responses: Counter[tuple[str, int]]) -> str:
    """The metrics page: request counts by route and status, batching and queue gauges."""
    lines = [
        "# HELP scorepack_requests_total HTTP requests answered, by route and status.",
        "# TYPE scorepack_requests_total counter",
    ]
    for (route, status), count in sorted(responses.items()):
        lines.append(f'scorepack_requests_total{{route="{route}",status="{status}"}} {count}')
    states = repository.models()
    labelled = len(states) > 1
    series: list[tuple[str, dict[str, float], BatchStats]] = []
    for state in states:
        scorer = repository.find(state.name, state.version)
        labels = f'model="{state.name}",version="{state.version or ""}"' if labelled else ""
        stats = scorer.batcher.stats if scorer is not None else BatchStats()
        values = {
            "scorepack_model_ready": int(scorer is not None and scorer.ready),
            "scorepack_queue_depth": scorer.batcher.queue_depth if scorer is not None else 0,
            "scorepack_batches_total": stats.batches,
            "scorepack_batch_requests_total": stats.requests,
            "scorepack_rejected_total": stats.rejected,
            "scorepack_timeouts_total": stats.timeouts,
            "scorepack_cancelled_total": stats.cancelled,
            "scorepack_inference_seconds_total": stats.busy_seconds,
        }
        series.append((labels, values, stats))
    for name, kind, help_text in _GAUGES:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        for labels, values, _ in series:
            value = values[name]
            text = f"{value:.6f}" if name == "scorepack_inference_seconds_total" else str(value)
            lines.append(f"{name}{{{labels}}} {text}" if labels else f"{name} {text}")
    lines += [
        "# HELP scorepack_batch_size Rows per model call.",
        "# TYPE scorepack_batch_size histogram",
    ]
    for labels, _, stats in series:
        sep = "," if labels else ""
        sizes = dict(stats.sizes)
        for bound in _BUCKETS:
            below = sum(n for size, n in sizes.items() if size <= bound)
            lines.append(f'scorepack_batch_size_bucket{{{labels}{sep}le="{bound}"}} {below}')
        lines.append(f'scorepack_batch_size_bucket{{{labels}{sep}le="+Inf"}} {sum(sizes.values())}')
        suffix = f"{{{labels}}}" if labels else ""
        lines.append(f"scorepack_batch_size_sum{suffix} {sum(s * n for s, n in sizes.items())}")
        lines.append(f"scorepack_batch_size_count{suffix} {sum(sizes.values())}")
    return "\n".join(lines) + "\n"
