"""A burst at 5x capacity, and a soak at steady load with RSS and open files sampled.

burst: capacity is measured first (closed loop, ``--concurrency`` clients, a few seconds),
then requests are sent open-loop at ``--factor`` times that rate for ``--seconds``. The
promise checked: every answer is a 200 or an immediate 503 with ``Retry-After`` (nothing
else, no transport errors), accepted requests keep their latency, and ``GET /`` and the
readiness probe answer within 2 s throughout. Both hosts serve the same slow model (the
tests' echo fixture, every model call taking ``DELAY_S``, batches of 4, a queue of 64), so
that the server, not this Python load generator, is the bottleneck: ``--host embedded``
under ``scorepack serve``, ``--host azureml`` as a package built by ``scorepack build``
(the fixture's backend carried as a wheel) under azmlinfsrv, its deployment's threads and
scorepack's worker, as ``scorepack serve-azureml`` runs it.

soak: steady open-loop load at ``--load`` times capacity for ``--minutes``, sampling the
server's RSS (all its processes) and open file descriptors every 10 s. The promise: RSS
flat after warm-up (at most 5 % growth over the last 80 % of the run — the last 8 of 10
minutes), open files flat.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httptools
import httpx
from benchmarks.overload import tests_on_path

from scorepack.bench.http import HttpConnection, http_target

tests_on_path()

from benchmarks.overload.stalls import _server  # noqa: E402

from images import jpeg  # noqa: E402

IMAGE = jpeg(40, 30, seed=1)
PROBE_LIMIT_S = 2.0
#: what each request sends: (body, content type); set by _target for the host
PAYLOAD: list[tuple[bytes, str]] = [(IMAGE, "image/jpeg")]
#: the embedded server's model: the slow echo fixture, so that the server, not this
#: Python load generator, is the bottleneck (each model call takes DELAY_S)
DELAY_S = 0.02
SLOW_ARGS = ["--max-batch-size", "4", "--max-queue-size", "64", "--max-delay-ms", "2"]
# record=false: the fixture otherwise keeps every row it scores (~150 bytes a request),
# which the soak measured as the server's RSS growing without end
_SLOW_OPTIONS = ["-O", f"delay={DELAY_S}", "-O", "record=false"]


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))] * 1000, 2)


async def _capacity(url: str, concurrency: int, seconds: float) -> float:
    """Requests per second a closed loop of ``concurrency`` clients gets answered 200."""
    done = 0
    stop = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal done
        async with httpx.AsyncClient(base_url=url, timeout=30) as c:
            while time.perf_counter() < stop:
                r = await c.post(
                    "/score", content=PAYLOAD[0][0], headers={"content-type": PAYLOAD[0][1]}
                )
                done += r.status_code == 200

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return done / (time.perf_counter() - start)


async def _open_loop(url: str, rate: float, seconds: float, max_conns: int) -> dict[str, Any]:
    """Send at ``rate`` per second on a fixed schedule; what came back, and how fast.

    Requests go out on keep-alive connections of scorepack's load generator (pre-built
    bytes, responses parsed by httptools), up to ``max_conns`` at once: an httpx client
    cannot send a 5x burst from Python on a small machine, and a sender that falls behind
    its schedule turns a burst into a queue on the client's side, not the server's.
    ``send_lag_p99_ms`` says how far behind schedule requests went out.
    """
    statuses: Counter[str] = Counter()
    ok_s: list[float] = []
    refused_s: list[float] = []
    refused_service_s: list[float] = []  # from when it went out: how fast the refusal came
    lag_s: list[float] = []
    no_retry_after = 0
    target = http_target(url, PAYLOAD[0][0], PAYLOAD[0][1])
    idle: list[HttpConnection] = []
    slots = asyncio.Semaphore(max_conns)

    async def one(due: float) -> None:
        nonlocal no_retry_after
        async with slots:
            conn = idle.pop() if idle else HttpConnection(target)
            sent = time.perf_counter()
            lag_s.append(sent - due)
            try:
                status, _ = await asyncio.wait_for(conn.send(), 60)
            except (OSError, EOFError, asyncio.TimeoutError, httptools.HttpParserError) as exc:
                conn.close()
                statuses[type(exc).__name__] += 1
                return
            idle.append(conn)
        took = time.perf_counter() - due  # from when it was due: no coordinated omission
        statuses[str(status)] += 1
        if status == 200:
            ok_s.append(took)
        elif status == 503:
            refused_s.append(took)
            refused_service_s.append(time.perf_counter() - sent)
            no_retry_after += not conn.retry_after

    tasks = []
    start = time.perf_counter()
    n = int(rate * seconds)
    for i in range(n):
        due = start + i / rate
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        tasks.append(asyncio.create_task(one(due)))
    await asyncio.gather(*tasks)
    for conn in idle:
        conn.close()
    return {
        "sent": n,
        "statuses": dict(statuses),
        "ok_p50_ms": _pct(ok_s, 0.5),
        "ok_p99_ms": _pct(ok_s, 0.99),
        "refused_p50_ms": _pct(refused_s, 0.5),
        "refused_p99_ms": _pct(refused_s, 0.99),
        "refused_service_p99_ms": _pct(refused_service_s, 0.99),
        "refused_without_retry_after": no_retry_after,
        "send_lag_p99_ms": _pct(lag_s, 0.99),
    }


class _Probes:
    """GET / and the readiness probe every 0.2 s on a thread; the slowest answer of each."""

    def __init__(self, url: str, ready_path: str) -> None:
        self.url, self.paths = url, ("/", ready_path)
        self.worst = dict.fromkeys(self.paths, 0.0)
        self.failed: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as c:
            while not self._stop.wait(0.2):
                for path in self.paths:
                    start = time.perf_counter()
                    try:
                        ok = c.get(path).status_code == 200
                    except httpx.HTTPError:
                        ok = False
                    self.worst[path] = max(self.worst[path], time.perf_counter() - start)
                    self.failed[path] += not ok

    def __enter__(self) -> _Probes:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def report(self) -> dict[str, Any]:
        return {
            "worst_ms": {p: round(s * 1000, 1) for p, s in self.worst.items()},
            "failed": dict(self.failed),
            "within_2s": all(s <= PROBE_LIMIT_S for s in self.worst.values()),
        }


def _fixture_site(site: Path) -> Path:
    """``site`` made an installed copy of the tests' fixture backends, as pip would leave
    it (module, dist-info, entry point, RECORD), so that ``scorepack build`` can carry the
    backend as a wheel; put ``site`` on PYTHONPATH."""
    from benchmarks.overload import ROOT

    from fixture_backends import write_entry_point

    dist = write_entry_point(site)
    shutil.copyfile(ROOT / "tests" / "fixture_backends.py", site / "fixture_backends.py")
    files = ["fixture_backends.py", *(f"{dist.name}/{f.name}" for f in dist.iterdir())]
    (dist / "RECORD").write_text("".join(f"{f},,\n" for f in [*files, f"{dist.name}/RECORD"]))
    return site


def _slow_package(work: Path, site: Path) -> Path:
    """``scorepack build`` of the slow echo with the embedded burst's settings, for a CPU."""
    from benchmarks.suite.servers import SCOREPACK

    model = work / "model.slow"
    model.write_text("a slow echo\n")
    out = work / "slow-pkg"
    build = [*SCOREPACK, "build", str(model), "-o", str(out), "--device", "cpu", "--no-check"]
    subprocess.run(
        [*build, *_SLOW_OPTIONS, *SLOW_ARGS],
        env={**os.environ, "PYTHONPATH": str(site)},
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return out


def _target(host: str) -> Any:
    """The server to load: the slow echo under ``scorepack serve`` (embedded), or the slow
    echo's package under azmlinfsrv (see the module docstring)."""
    from benchmarks.suite.servers import SCOREPACK, running

    work = Path(tempfile.mkdtemp(prefix="overload-"))
    site = _fixture_site(work / "site")
    PAYLOAD[0] = (b'{"inputs": {"x": [[1.0, 2.0]]}}', "application/json")
    if host != "embedded":
        return _server(host, _slow_package(work, site), pythonpath=str(site))
    model = work / "model.slow"
    model.write_text("a slow echo\n")
    return running(
        [*SCOREPACK, "serve", str(model), "--port", "0", *_SLOW_OPTIONS, *SLOW_ARGS],
        ready_path="/health/ready",
        env={"PYTHONPATH": str(site)},
    )


def burst(host: str, factor: float, seconds: float, concurrency: int) -> dict[str, Any]:
    """The 5x-capacity burst on one host; JSON-ready, with ``passed``."""
    ready = "/" if host.startswith("azureml") else "/health/ready"
    with _target(host) as server:
        capacity = asyncio.run(_capacity(server.url, concurrency, 5.0))
        steady = asyncio.run(_open_loop(server.url, capacity * 0.5, 5.0, concurrency * 4))
        with _Probes(server.url, ready) as probes:
            loaded = asyncio.run(_open_loop(server.url, capacity * factor, seconds, 1024))
    statuses = set(loaded["statuses"])
    result = {
        "host": host,
        "capacity_rps": round(capacity, 1),
        "at_half_capacity": steady,
        f"at_{factor:g}x_capacity": loaded,
        "probes": probes.report(),
    }
    refused_fast = (loaded["refused_service_p99_ms"] or 0) < 1000
    result["passed"] = (
        statuses <= {"200", "503"}
        and loaded["refused_without_retry_after"] == 0
        and refused_fast
        and result["probes"]["within_2s"]
    )
    return result


def _tree_usage(pid: int) -> tuple[float, int]:
    """RSS (MiB) and open file descriptors of a process and its children."""
    import psutil

    try:
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0, 0
    rss = fds = 0
    for p in procs:
        try:
            rss += p.memory_info().rss
            fds += len(os.listdir(f"/proc/{p.pid}/fd"))
        except (psutil.NoSuchProcess, OSError):
            continue
    return round(rss / 2**20, 1), fds


def soak(host: str, minutes: float, load: float, concurrency: int) -> dict[str, Any]:
    """Steady load for ``minutes``; RSS and open files every 10 s; JSON-ready."""
    samples: list[dict[str, float]] = []
    with _target(host) as server:
        capacity = asyncio.run(_capacity(server.url, concurrency, 5.0))
        rate = capacity * load
        stop = threading.Event()
        start = time.monotonic()

        def sample() -> None:
            while True:
                rss, fds = _tree_usage(server.proc.pid)
                samples.append({"t_s": round(time.monotonic() - start), "rss_mib": rss, "fds": fds})
                if stop.wait(10):
                    return

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        traffic = asyncio.run(_open_loop(server.url, rate, minutes * 60, concurrency * 4))
        stop.set()
        sampler.join(30)
    # warm-up is the first 20 % of the run: RSS growth is judged over the rest
    settled = [s for s in samples if s["t_s"] >= minutes * 60 * 0.2] or samples
    first, last = settled[0]["rss_mib"], max(s["rss_mib"] for s in settled[-3:])
    growth = (last - first) / first * 100 if first else 0.0
    return {
        "host": host,
        "minutes": minutes,
        "rate_rps": round(rate, 1),
        "traffic": traffic,
        "samples": samples,
        "rss_growth_after_warmup_pct": round(growth, 2),
        "fds_first_last": [settled[0]["fds"], settled[-1]["fds"]],
        "passed": growth <= 5.0,
    }


def markdown(result: dict[str, Any]) -> str:
    """The soak's curve as a Markdown table, for benchmarks/RESULTS.md."""
    lines = [
        f"Soak, {result['host']}, {result['minutes']:g} min at {result['rate_rps']} req/s: "
        f"RSS growth after warm-up {result['rss_growth_after_warmup_pct']} % "
        f"({'flat' if result['passed'] else 'NOT flat'}).",
        "",
        "| t (s) | RSS (MiB) | open fds |",
        "| ---: | ---: | ---: |",
    ]
    lines += [f"| {s['t_s']} | {s['rss_mib']} | {s['fds']} |" for s in result["samples"]]
    return "\n".join(lines)


def summary(result: dict[str, Any]) -> str:
    keys = [k for k in result if k.startswith("at_")]
    parts = [f"{result['host']}: capacity {result['capacity_rps']} req/s"]
    parts += [f"{k}: {result[k]}" for k in keys]
    parts.append(f"probes: {result['probes']}")
    parts.append(f"passed: {result['passed']}")
    return "\n  ".join(parts)
