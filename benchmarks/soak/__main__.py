"""``python -m benchmarks.soak --requests N --seconds S``: see the package docstring.

Each host gets up to N requests or S seconds, whichever ends first, in two phases: the
warm-up (``--warmup``, a share of both) and the rest. Between and after them the traffic
stops, the gauges are waited for to read 0, and the server's RSS, threads and fds are
read at rest (and its census taken with ``--census``): "at rest" before and after is the
fairest comparison; the samples taken every ``--sample-every`` seconds under load give
the slopes. Exits 1 when a request got an answer its kind does not allow, a gauge did
not return to 0, or the server died.

    nice -n 10 .venv/bin/python -m benchmarks.soak --requests 20000 --seconds 240
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx
from benchmarks.soak import ROOT, hosts, sampling, traffic


class Soak:
    """One host's soak: workers, a sampler, and (embedded) the load/unload cycler."""

    def __init__(self, server: hosts.Server, kinds: tuple[traffic.Kind, ...], args: Any) -> None:
        self.server, self.kinds, self.args = server, kinds, args
        self.pid = server.worker_pid()
        self.outcomes: dict[str, Counter[str]] = defaultdict(Counter)
        self.failures: Counter[str] = Counter()
        self.cycles: Counter[str] = Counter()
        self.requests = 0
        self.samples: list[dict[str, Any]] = []
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._turn = itertools.count()

    def _record(self, kind: traffic.Kind, outcomes: list[str]) -> None:
        with self._lock:
            self.requests += len(outcomes)
            for outcome in outcomes:
                self.outcomes[kind.name][outcome] += 1
                if outcome not in kind.expected:
                    self.failures[f"{kind.name}: {outcome}"] += 1

    def _worker(self, until_requests: int, until_time: float) -> None:
        clients = traffic.Clients(self.server.url, self.server.grpc)
        try:
            while self.requests < until_requests and time.monotonic() < until_time:
                kind = self.kinds[next(self._turn) % len(self.kinds)]
                try:
                    outcomes = kind.send(clients)
                except Exception as exc:  # a transport error, a client's exception
                    outcomes = [f"error: {type(exc).__name__}: {str(exc)[:120]}"]
                self._record(kind, outcomes)
        finally:
            clients.close()

    def _cycler(self, stop: threading.Event) -> None:
        with httpx.Client(base_url=self.server.url, timeout=120) as http:
            while not stop.wait(self.args.cycle_pause):
                try:
                    outcomes = traffic.cycle_once(http)
                except httpx.HTTPError as exc:
                    outcomes = [f"error: {type(exc).__name__}"]
                with self._lock:
                    self.cycles["cycles"] += 1
                    for step, outcome in zip(("unload", "load", "infer"), outcomes, strict=False):
                        expected = "OK" if step == "infer" else "200"
                        if outcome != expected:
                            self.failures[f"cycle {step}: {outcome}"] += 1

    def sample(self, phase: str) -> dict[str, Any]:
        reading: dict[str, Any] = {
            "t_s": round(time.monotonic() - self.started, 1),
            "requests": self.requests,
            "cycles": self.cycles["cycles"],
            "phase": phase,
        }
        reading.update(sampling.process(self.pid))
        reading.update(sampling.gauges(self.server.metrics_url))
        return reading

    def _sampler(self, stop: threading.Event) -> None:
        while not stop.wait(self.args.sample_every):
            if self.server.proc.poll() is not None:
                return
            self.samples.append(self.sample("load"))

    def phase(self, until_requests: int, until_time: float) -> None:
        """Traffic (and cycling) until either bound; then wait for the server to settle."""
        stop = threading.Event()
        side = [threading.Thread(target=self._sampler, args=(stop,), daemon=True)]
        if self.server.grpc is not None and self.args.cycle_pause >= 0:
            side.append(threading.Thread(target=self._cycler, args=(stop,), daemon=True))
        for thread in side:
            thread.start()
        workers = [
            threading.Thread(target=self._worker, args=(until_requests, until_time), daemon=True)
            for _ in range(self.args.concurrency)
        ]
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join()
        stop.set()
        for thread in side:
            thread.join(300)

    def at_rest(self, label: str) -> dict[str, Any]:
        """Gauges waited for to read 0, then a reading (and a census) of the idle server."""
        settled = sampling.settle(self.server.metrics_url)
        reading = self.sample(label)
        reading["settled"] = bool(settled) and not any(settled.values())
        reading["fd_kinds"] = sampling.fd_kinds(self.pid)
        self.samples.append(dict(reading))  # the samples without the census (large)
        if self.args.census and self.server.census_dir is not None:
            reading["census"] = sampling.take_census(self.server.proc.pid, self.server.census_dir)
        return reading


def soak_host(name: str, args: Any) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"soak-{name}-"))
    if name == "embedded":
        context = hosts.embedded(
            work, tracemalloc_frames=args.tracemalloc, gc_stress=args.gc_stress
        )
        kinds = traffic.EMBEDDED
    else:
        context = hosts.azureml(work)
        kinds = traffic.AZUREML
    with context as server:
        soak = Soak(server, kinds, args)
        start = time.monotonic()
        warm_requests = int(args.requests * args.warmup)
        soak.phase(warm_requests, start + args.seconds * args.warmup)
        warm = soak.at_rest("after-warmup")
        soak.phase(args.requests, start + args.seconds)
        end = soak.at_rest("end")
        elapsed = time.monotonic() - start
        alive = server.proc.poll() is None
    result: dict[str, Any] = {
        "host": name,
        "requests": soak.requests,
        "seconds": round(elapsed, 1),
        "requests_per_s": round(soak.requests / elapsed, 1),
        "load_unload_cycles": soak.cycles["cycles"],
        "at_rest": {
            label: {k: v for k, v in r.items() if k != "census"}
            for label, r in (("after_warmup", warm), ("end", end))
        },
        "slopes": {
            key: sampling.slope(soak.samples, key, args.warmup)
            for key in ("rss_mib", "threads", "fds")
        },
        "outcomes": {k: dict(v) for k, v in soak.outcomes.items()},
        "failures": dict(soak.failures),
        "server_alive": alive,
        "log": str(server.log),
        "samples": soak.samples,
    }
    if "census" in warm and "census" in end:
        result["census_growth"] = sampling.census_diff(warm["census"], end["census"])
    result["passed"] = alive and not soak.failures and warm["settled"] and end["settled"]
    if result["passed"] and not args.keep:
        shutil.rmtree(work, ignore_errors=True)
        result["log"] = None
    return result


def summary(result: dict[str, Any]) -> str:
    warm, end = result["at_rest"]["after_warmup"], result["at_rest"]["end"]
    lines = [
        f"{result['host']}: {result['requests']} requests in {result['seconds']} s "
        f"({result['requests_per_s']}/s), {result['load_unload_cycles']} load/unload cycles; "
        f"passed: {result['passed']}",
        "  at rest       after warm-up -> end",
    ]
    for key in ("requests", "rss_mib", "threads", "fds"):
        lines.append(f"  {key:<12}  {warm[key]} -> {end[key]}")
    lines.append(f"  fd kinds      {warm['fd_kinds']} -> {end['fd_kinds']}")
    gauges_end = {k: end.get(k) for k in sampling.GAUGES}
    lines.append(f"  gauges at end {gauges_end} (settled: {end['settled']})")
    for key, s in result["slopes"].items():
        lines.append(f"  slope {key}: {s}")
    if result["failures"]:
        lines.append(f"  FAILURES: {result['failures']}")
    if "census_growth" in result:
        growth = result["census_growth"]
        lines.append(f"  objects grown: {growth['types']}")
        lines.append(f"  threads grown: {growth['threads']}")
        for stat in growth.get("tracemalloc", [])[:8]:
            lines.append(f"  heap {stat['size_diff']:+} B {stat['count_diff']:+}: {stat['where']}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    parser.add_argument("--requests", type=int, default=20_000, help="per host (default 20000)")
    parser.add_argument("--seconds", type=float, default=300.0, help="per host at most")
    parser.add_argument("--hosts", default="embedded,azureml")
    parser.add_argument("--concurrency", type=int, default=4, help="worker threads")
    parser.add_argument("--warmup", type=float, default=0.25, help="share of the run")
    parser.add_argument("--sample-every", type=float, default=5.0, help="seconds")
    parser.add_argument(
        "--cycle-pause",
        type=float,
        default=0.5,
        help="seconds between load/unload cycles of 'cycled' (embedded); negative: none",
    )
    parser.add_argument("--census", action="store_true", help="object/thread census diff")
    parser.add_argument("--tracemalloc", type=int, default=0, help="frames traced (census)")
    parser.add_argument(
        "--gc-stress",
        action="store_true",
        help="the embedded server runs its garbage collector all the time (tests/gc_stress.py)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folders")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()

    results = []
    for name in args.hosts.split(","):
        result = soak_host(name, args)
        print(summary(result), flush=True)
        results.append(result)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{time.strftime('%Y%m%d-%H%M%S')}-soak.json"
    path.write_text(json.dumps(results, indent=1, default=str) + "\n")
    print(f"wrote {path}")
    return 0 if all(r["passed"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
