"""What the soak reads from the server process, and what it makes of the readings.

A sample: the serving process's RSS, threads and open fds (by kind: socket, pipe,
anon_inode, file), and from its ``/metrics`` the sum over models of the in-flight gauge
and the queue depth. The slope of each after warm-up is a least-squares line over the
samples against requests served, given per 10,000 requests.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

GAUGES = ("scorepack_inflight_requests", "scorepack_queue_depth")


def fd_kinds(pid: int) -> dict[str, int]:
    """Open fds of ``pid`` by what they are (socket, pipe, anon_inode, file, ...)."""
    kinds: Counter[str] = Counter()
    folder = f"/proc/{pid}/fd"
    for fd in os.listdir(folder):
        try:
            target = os.readlink(f"{folder}/{fd}")
        except OSError:
            continue
        kinds[target.split(":", 1)[0] if ":" in target else "file"] += 1
    return dict(kinds)


def process(pid: int) -> dict[str, float]:
    """RSS (MiB), threads and open fds of one process."""
    import psutil

    proc = psutil.Process(pid)
    return {
        "rss_mib": round(proc.memory_info().rss / 2**20, 2),
        "threads": proc.num_threads(),
        "fds": proc.num_fds(),
    }


def gauges(metrics_url: str) -> dict[str, float]:
    """The in-flight and queue-depth gauges, summed over models (None where unread)."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = httpx.get(metrics_url, timeout=30).text
    except httpx.HTTPError:
        return {}
    out = dict.fromkeys(GAUGES, 0.0)
    for family in text_string_to_metric_families(text):
        if family.name in out:
            out[family.name] = sum(s.value for s in family.samples)
    return out


def settle(metrics_url: str, timeout: float = 60.0) -> dict[str, float]:
    """Wait (bounded) until both gauges read 0; the last reading."""
    deadline = time.monotonic() + timeout
    while True:
        reading = gauges(metrics_url)
        if (reading and not any(reading.values())) or time.monotonic() > deadline:
            return reading
        time.sleep(0.2)


def slope(samples: list[dict[str, Any]], key: str, warmup: float) -> dict[str, float] | None:
    """``key`` after the first ``warmup`` share of requests: first, last, and its
    least-squares slope per 10,000 requests."""
    total = samples[-1]["requests"] if samples else 0
    settled = [s for s in samples if s["requests"] >= total * warmup and key in s]
    if len(settled) < 3:
        return None
    xs = [float(s["requests"]) for s in settled]
    ys = [float(s[key]) for s in settled]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    per = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0
    return {"first": ys[0], "last": ys[-1], "per_10k_requests": round(per * 10_000, 3)}


def take_census(pid: int, folder: Path, timeout: float = 120.0) -> dict[str, Any]:
    """Ask the server (benchmarks.soak.probe) for its census and wait for it."""
    before = set(folder.glob("census-*.json"))
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = set(folder.glob("census-*.json")) - before
        if new:
            path = new.pop()
            census = json.loads(path.read_text())
            census["path"] = str(path)
            return census
        time.sleep(0.2)
    raise TimeoutError(f"no census from {pid} in {timeout:.0f} s")


def _grown(before: dict[str, int], after: dict[str, int], top: int) -> dict[str, int]:
    grown = {k: after.get(k, 0) - before.get(k, 0) for k in set(before) | set(after)}
    ranked = sorted(((v, k) for k, v in grown.items() if v), reverse=True)
    return {k: v for v, k in ranked[:top]}


def census_diff(before: dict[str, Any], after: dict[str, Any], top: int = 15) -> dict[str, Any]:
    """What grew between two censuses: object types, threads, traced heap by line."""
    out: dict[str, Any] = {
        "types": _grown(before["types"], after["types"], top),
        "threads": _grown(before["threads"], after["threads"], top),
    }
    if "traced_bytes" in before and "traced_bytes" in after:
        out["traced_bytes"] = [before["traced_bytes"], after["traced_bytes"]]
        old = _snapshot(before["path"])
        new = _snapshot(after["path"])
        stats = new.compare_to(old, "traceback")[:top]
        out["tracemalloc"] = [
            {
                "size_diff": s.size_diff,
                "count_diff": s.count_diff,
                "where": [f"{f.filename}:{f.lineno}" for f in s.traceback][-6:],
            }
            for s in stats
        ]
    return out


def _snapshot(census_path: str) -> Any:
    import tracemalloc

    snap = tracemalloc.Snapshot.load(str(Path(census_path).with_suffix(".tracemalloc")))
    return snap.filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
