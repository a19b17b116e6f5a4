"""Where one request's milliseconds go at c=1, per backend, and what the idle OpenMP spin costs.

Issue 13 asks for the embedded server's c=1 p50 within 2 ms of the in-process batch-1
latency (decode + model, one image after another: ``benchmarks/suite/inprocess.py``). For
each ResNet50 backend (the suite's models, built on first use) this runs, in rounds:

* the in-process batch-1 latency, as the suite measures it (its own process);
* fresh embedded servers, one per arm and round, arms alternating, each loaded at c=1 by
  ``scorepack bench``; from the server's own histograms (``/metrics``) per request: decode,
  queue wait (the hand-off to the model thread and any batching wait), the model call, the
  whole request inside the server; the rest of the client's p50 is HTTP and the client;
  from ``/proc/PID/task/*/schedstat``: the server's CPU per request and how long its
  threads waited for a core;
* optionally (``--c32 S``) S seconds at c=32 per server, so that a bound on the spin is
  seen not to cost throughput.

The arms (``--arms``): ``bounded`` is scorepack's default (``GOMP_SPINCOUNT`` 30 000, set
before the model loads: :mod:`scorepack.openmp`); ``libgomp`` sets ``GOMP_SPINCOUNT=300000``,
libgomp's own default (what every release before it ran). Only PyTorch uses libgomp, so
ONNX Runtime and TensorFlow are the control: their arms must come out alike.

``--spin`` first prints, per backend, the CPU its idle threads burn in a 30 ms pause after
a batch-1 call (in-process, per arm): the mechanism itself, measurable on a busy machine.

Quiet machine (about 12 minutes for three backends with the defaults):

    .venv/bin/python -m benchmarks.micro.c1_breakdown --spin --c32 12

``--rounds 1 --seconds 3 --backends onnx`` checks that it runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from scorepack.openmp import IDLE_SPINCOUNT

from ..suite import models, servers

ROOT = Path(__file__).resolve().parents[2]
ARMS = {"bounded": {}, "libgomp": {"GOMP_SPINCOUNT": "300000"}}
HISTOGRAMS = {
    "decode_ms": "scorepack_decode_seconds",
    "queue_wait_ms": "scorepack_queue_wait_seconds",
    "model_call_ms": "scorepack_model_call_seconds",
    "server_ms": "scorepack_request_duration_seconds",
}

SPIN_CODE = """
import json, os, sys, threading, time
import numpy as np
from pathlib import Path
from scorepack.loading import resolve_backend
backend, path = sys.argv[1], Path(sys.argv[2])
model = resolve_backend(path, backend).create(path, device="cpu", options={})
model.load()
spec = model.signature.inputs[0]
x = {spec.name: np.zeros([1, *[d or 1 for d in spec.shape[1:]]], spec.dtype)}
me = str(threading.get_native_id())
def cpu():
    total = 0
    for tid in os.listdir("/proc/self/task"):
        if tid != me:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
    return total
for _ in range(5):
    model.predict(x)
burnt = []
for _ in range(20):
    model.predict(x)
    before = cpu(); time.sleep(0.03); burnt.append((cpu() - before) / 1e6)
print(json.dumps(sorted(burnt)))
"""


SCHED_FIELDS = ("se.nr_migrations", "nr_voluntary_switches", "nr_involuntary_switches")


def _schedstat(pid: int) -> dict[str, float]:
    """The process's threads together: CPU seconds, seconds waiting for a core, and how
    often they moved between cores, went to sleep and were preempted."""
    total = {"cpu": 0.0, "runq_wait": 0.0, **dict.fromkeys(SCHED_FIELDS, 0.0)}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                fields = f.read().split()
            with open(f"/proc/{pid}/task/{tid}/sched") as f:
                sched = f.read()
        except OSError:  # the thread ended
            continue
        total["cpu"] += int(fields[0]) / 1e9
        total["runq_wait"] += int(fields[1]) / 1e9
        for line in sched.splitlines():
            key, _, value = line.partition(":")
            if key.strip() in SCHED_FIELDS:
                total[key.strip()] += float(value)
    return total


def _histograms(url: str) -> dict[str, tuple[float, float]]:
    """Histogram name → (sum, count) from the server's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, tuple[float, float]] = {}
    for family in text_string_to_metric_families(httpx.get(url + "/metrics", timeout=30).text):
        if family.name not in HISTOGRAMS.values():
            continue
        total = sum(s.value for s in family.samples if s.name.endswith("_sum"))
        count = sum(s.value for s in family.samples if s.name.endswith("_count"))
        out[family.name] = (total, count)
    return out


def _env(arm: str, scorer: bool = True) -> dict[str, str]:
    """The environment of a process under ``arm``. A server's Scorer bounds the spin
    itself; an in-process measurement (no Scorer) is given the bound it would set."""
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    if arm == "bounded" and not scorer:
        env["GOMP_SPINCOUNT"] = str(IDLE_SPINCOUNT)
    return {**env, **ARMS[arm]}


def spin(backend: str, arm: str) -> dict[str, float]:
    """CPU (ms) the model's idle threads burn in a 30 ms pause after a batch-1 call."""
    model = models.resnet50(backend)
    out = subprocess.run(
        [sys.executable, "-c", SPIN_CODE, model.backend, str(model.path)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env=_env(arm, scorer=False),
    )
    burnt = json.loads(out.stdout.strip().splitlines()[-1])
    return {"median_ms": round(statistics.median(burnt), 2), "max_ms": round(max(burnt), 2)}


def in_process(backend: str, arm: str, seconds: float) -> float:
    """The suite's in-process batch-1 latency (decode + model, ms) under ``arm``."""
    model = models.resnet50(backend)
    cmd = [sys.executable, "-m", "benchmarks.suite.inprocess", "--backend", model.backend]
    cmd += ["--model", str(model.path), "--preset", model.preset, "--image", str(models.SAMPLE)]
    cmd += ["--batches", "1", "--seconds", str(seconds)]
    out = subprocess.run(
        cmd, capture_output=True, text=True, check=True, cwd=ROOT, env=_env(arm, scorer=False)
    )
    rows = json.loads(out.stdout.strip().splitlines()[-1])
    return float(next(r["batch_latency_ms"] for r in rows if r["decode"] == "scorepack"))


def server_round(backend: str, arm: str, seconds: float, c32: float) -> dict[str, Any]:
    """One fresh server under ``arm``: c=1 broken down, then optionally c=32."""
    model = models.resnet50(backend)
    extra = ["--no-access-log"]
    with servers.embedded(model, *extra, env={**_env(arm), "PYTHONUNBUFFERED": "1"}) as server:
        servers.load(server.url, models.SAMPLE, 1, 2.0, 0.0)  # warm the path
        before, cpu0 = _histograms(server.url), _schedstat(server.proc.pid)
        run = servers.load(server.url, models.SAMPLE, 1, seconds, 0.0)
        after, cpu1 = _histograms(server.url), _schedstat(server.proc.pid)
        n = after[HISTOGRAMS["server_ms"]][1] - before[HISTOGRAMS["server_ms"]][1]
        row: dict[str, Any] = {
            "arm": arm,
            "p50_ms": run["latency_ms"]["p50"],
            "mean_ms": run["latency_ms"]["mean"],
            "requests": int(n),
        }
        for key, name in HISTOGRAMS.items():
            total = after[name][0] - before[name][0]
            count = after[name][1] - before[name][1]
            row[key] = round(total / count * 1000, 2) if count else None
        row["http_and_client_ms"] = round(row["mean_ms"] - (row["server_ms"] or 0), 2)
        per = {k: (cpu1[k] - cpu0[k]) / max(n, 1) for k in cpu0}
        row["server_cpu_ms_per_request"] = round(per["cpu"] * 1000, 2)
        row["server_runq_wait_ms_per_request"] = round(per["runq_wait"] * 1000, 2)
        # sleeps: an OpenMP worker that stops spinning sleeps (and is woken) once a call
        row["sleeps_per_request"] = round(per["nr_voluntary_switches"], 1)
        row["preempted_per_request"] = round(per["nr_involuntary_switches"], 1)
        row["migrations_per_request"] = round(per["se.nr_migrations"], 2)
        if c32:
            row["c32_rps"] = servers.load(server.url, models.SAMPLE, 32, c32, 2.0)["rps"]
        info = httpx.get(server.url + "/info", timeout=30).json()
        row["openmp_idle_spin"] = info.get("openmp_idle_spin")
    return row


def _spread(values: list[float]) -> str:
    if not values:
        return "–"
    med = statistics.median(values)
    return f"{med:.1f} ({min(values):.1f}–{max(values):.1f})"


def report(backend: str, limits: dict[str, list[float]], rounds: list[dict[str, Any]]) -> None:
    print(f"\n## {backend}")
    cols = ["p50_ms", "server_ms", "model_call_ms", "decode_ms", "queue_wait_ms"]
    cols += ["http_and_client_ms", "server_cpu_ms_per_request", "server_runq_wait_ms_per_request"]
    cols += ["sleeps_per_request", "preempted_per_request", "migrations_per_request"]
    if any("c32_rps" in r for r in rounds):
        cols.append("c32_rps")
    print("| arm | in-process batch-1 ms | " + " | ".join(cols) + " | p50 − in-process |")
    print("|---" * (len(cols) + 3) + "|")
    for arm in ARMS:
        mine = [r for r in rounds if r["arm"] == arm]
        if not mine:
            continue
        cells = [_spread([r[c] for r in mine if r.get(c) is not None]) for c in cols]
        limit = statistics.median(limits[arm])
        gap = statistics.median(r["p50_ms"] for r in mine) - limit
        print(f"| {arm} | {_spread(limits[arm])} | " + " | ".join(cells) + f" | {gap:+.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--backends", default="pytorch,tensorflow,onnx")
    parser.add_argument("--arms", default="bounded,libgomp")
    parser.add_argument("--rounds", type=int, default=3, help="server starts per arm")
    parser.add_argument("--seconds", type=float, default=12.0, help="c=1 load per server")
    parser.add_argument("--limit-seconds", type=float, default=8.0)
    parser.add_argument("--c32", type=float, default=0.0, help="seconds at c=32 per server")
    parser.add_argument("--spin", action="store_true", help="measure the idle spin first")
    args = parser.parse_args()
    arms = [a for a in args.arms.split(",") if a]
    unknown = set(arms) - set(ARMS)
    if unknown:
        parser.error(f"unknown arm(s) {sorted(unknown)}; choose from {sorted(ARMS)}")
    results: dict[str, Any] = {"arms": {a: ARMS[a] for a in arms}, "backends": {}}
    for backend in [b for b in args.backends.split(",") if b]:
        entry: dict[str, Any] = {}
        if args.spin:
            entry["idle_spin"] = {arm: spin(backend, arm) for arm in arms}
            print(
                f"{backend}: CPU burnt by idle threads in 30 ms after a call: {entry['idle_spin']}"
            )
        limits: dict[str, list[float]] = {arm: [] for arm in ARMS}
        rounds: list[dict[str, Any]] = []
        for index in range(args.rounds):
            # alternate which arm goes first: drift on the machine weighs on both
            for arm in arms if index % 2 == 0 else arms[::-1]:
                limits[arm].append(in_process(backend, arm, args.limit_seconds))
                row = server_round(backend, arm, args.seconds, args.c32)
                row["round"] = index
                rounds.append(row)
                print(f"  {backend} {arm} round {index}: limit {limits[arm][-1]:.1f} ms, {row}")
        entry["in_process_batch1_ms"] = limits
        entry["rounds"] = rounds
        results["backends"][backend] = entry
        report(backend, limits, rounds)
    out = ROOT / "benchmarks" / "results" / f"{time.strftime('%Y%m%d-%H%M%S')}-c1-breakdown.json"
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nwrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
