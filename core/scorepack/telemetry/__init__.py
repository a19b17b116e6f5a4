"""Observability: metrics (Prometheus), access logs (text or JSON) and traces (OpenTelemetry).

Everything imported here is light: ``prometheus_client`` and OpenTelemetry are imported
only when a host builds its metrics registry or tracing is turned on.
"""

from .stats import LockedHistogram, RequestStats, ScorerStats

__all__ = ["LockedHistogram", "RequestStats", "ScorerStats"]
