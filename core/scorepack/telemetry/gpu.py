"""GPU memory and utilisation through NVML (``nvidia-ml-py``), per device.

Absent without a GPU: :func:`nvml_collector` returns None when the ``pynvml`` module, the
NVIDIA driver or any device is missing, and never raises. NVML is a C library the driver
ships; it reads the counters ``nvidia-smi`` shows, without touching any framework's CUDA
context. The metric names mirror Triton's ``nv_gpu_*``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

__all__ = ["NvmlCollector", "nvml_collector"]

logger = logging.getLogger("scorepack.telemetry")


class NvmlCollector:
    """Reads every device's memory and utilisation when scraped."""

    def __init__(self, nvml: Any, count: int) -> None:
        self._nvml = nvml
        self._count = count

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        labels = ("gpu", "uuid", "name")
        used = GaugeMetricFamily(
            "scorepack_gpu_memory_used_bytes", "GPU memory in use (NVML).", labels=labels
        )
        total = GaugeMetricFamily(
            "scorepack_gpu_memory_total_bytes", "GPU memory in all (NVML).", labels=labels
        )
        utilisation = GaugeMetricFamily(
            "scorepack_gpu_utilization_ratio",
            "Share of the last sample period the GPU was busy, 0 to 1 (NVML).",
            labels=labels,
        )
        nvml = self._nvml
        for index in range(self._count):
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                values = [str(index), _text(nvml.nvmlDeviceGetUUID(handle))]
                values.append(_text(nvml.nvmlDeviceGetName(handle)))
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                rates = nvml.nvmlDeviceGetUtilizationRates(handle)
            except Exception as exc:  # a device that fell off the bus must not fail a scrape
                logger.debug("NVML could not read GPU %d: %s", index, exc)
                continue
            used.add_metric(values, float(memory.used))
            total.add_metric(values, float(memory.total))
            utilisation.add_metric(values, float(rates.gpu) / 100.0)
        yield used
        yield total
        yield utilisation


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def nvml_collector() -> NvmlCollector | None:
    """A collector for this machine's GPUs, or None when there are none to read."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        count = int(pynvml.nvmlDeviceGetCount())
    except Exception as exc:  # NVMLError_LibraryNotFound, _DriverNotLoaded, ...
        logger.debug("no NVML (%s): GPU metrics are left out", exc)
        return None
    if count < 1:
        return None
    return NvmlCollector(pynvml, count)
