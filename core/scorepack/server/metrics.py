"""Prometheus text exposition of what the server and its batcher counted."""

from __future__ import annotations

from collections import Counter

from ..scorer import Scorer

__all__ = ["render_metrics"]

_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def render_metrics(scorer: Scorer, responses: Counter[tuple[str, int]]) -> str:
    """The metrics page: request counts by route and status, batching and queue gauges."""
    stats = scorer.batcher.stats
    lines = [
        "# HELP scorepack_requests_total HTTP requests answered, by route and status.",
        "# TYPE scorepack_requests_total counter",
    ]
    for (route, status), count in sorted(responses.items()):
        lines.append(f'scorepack_requests_total{{route="{route}",status="{status}"}} {count}')
    lines += [
        "# HELP scorepack_model_ready 1 once the model is loaded and warmed up.",
        "# TYPE scorepack_model_ready gauge",
        f"scorepack_model_ready {int(scorer.ready)}",
        "# HELP scorepack_queue_depth Requests admitted and not yet in a model call.",
        "# TYPE scorepack_queue_depth gauge",
        f"scorepack_queue_depth {scorer.batcher.queue_depth}",
        "# HELP scorepack_batches_total Model calls made.",
        "# TYPE scorepack_batches_total counter",
        f"scorepack_batches_total {stats.batches}",
        "# HELP scorepack_batch_requests_total Requests served by model calls.",
        "# TYPE scorepack_batch_requests_total counter",
        f"scorepack_batch_requests_total {stats.requests}",
        "# HELP scorepack_rejected_total Requests refused because the queue was full.",
        "# TYPE scorepack_rejected_total counter",
        f"scorepack_rejected_total {stats.rejected}",
        "# HELP scorepack_timeouts_total Requests that waited past their timeout in the queue.",
        "# TYPE scorepack_timeouts_total counter",
        f"scorepack_timeouts_total {stats.timeouts}",
        "# HELP scorepack_inference_seconds_total Time spent inside model calls.",
        "# TYPE scorepack_inference_seconds_total counter",
        f"scorepack_inference_seconds_total {stats.busy_seconds:.6f}",
        "# HELP scorepack_batch_size Rows per model call.",
        "# TYPE scorepack_batch_size histogram",
    ]
    sizes = dict(stats.sizes)
    for bound in _BUCKETS:
        below = sum(n for size, n in sizes.items() if size <= bound)
        lines.append(f'scorepack_batch_size_bucket{{le="{bound}"}} {below}')
    lines.append(f'scorepack_batch_size_bucket{{le="+Inf"}} {sum(sizes.values())}')
    lines.append(f"scorepack_batch_size_sum {sum(s * n for s, n in sizes.items())}")
    lines.append(f"scorepack_batch_size_count {sum(sizes.values())}")
    return "\n".join(lines) + "\n"
