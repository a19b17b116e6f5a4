"""CPU per request of the embedded server, per route, on a model that costs next to nothing.

Throughput on a shared two-core machine swings with everything else running; the CPU the
server process spends per request barely does. This starts the server in its own process,
sends a warm-up, then ``--requests`` requests at ``--concurrency`` with scorepack's load
generator (another process's CPU), and reads the server's CPU time (user + system, every
thread) from ``/proc/PID/stat`` before and after: CPU µs per request, and the event-loop
thread's share of it (``/proc/PID/task/PID/stat``; the rest is the decode pool, the model
thread and uvicorn's own threads).

    .venv/bin/python -m benchmarks.micro.request_cpu                    # every route, app + legacy
    .venv/bin/python -m benchmarks.micro.request_cpu --routes score --apps app --repeat 5
    .venv/bin/python -m benchmarks.micro.request_cpu --routes image     # the tiny TF model

Routes: ``score`` (``POST /score``, JSON tensors), ``v2`` (``POST /v2/models/identity/infer``,
JSON tensors), both on an identity model (y = x, float32 [batch, 4]); ``image`` (``POST
/score``, a 64x64 JPEG) on the tiny TensorFlow model of observability_overhead, through
``scorepack serve``. Apps: ``app`` (today's ScoringApp, as ``scorepack serve`` runs it) and
``legacy`` (benchmarks/micro/legacy_asgi.py, the hand-written app before Starlette: /score
only). The server logs at ``--log-level`` (default ``info``: one access line per request,
read by this process, as observability_overhead does). ``--profile DIR`` writes a cProfile
of each server's event-loop thread there (``python -m pstats DIR/app-score.prof``).
``--requests 300 --repeat 1`` checks that it runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

from benchmarks.micro.router_overhead import Identity
from benchmarks.suite import servers

from scorepack.bench import BenchConfig, run_bench

ROUTES = {
    "score": ("/score", b'{"inputs": {"x": [[1.0, 2.0, 3.0, 4.0]]}}', "application/json"),
    "v2": (
        "/v2/models/identity/infer",
        b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", '
        b'"data": [1.0, 2.0, 3.0, 4.0]}]}',
        "application/json",
    ),
    "image": ("/score", b"", "image/jpeg"),
}
_TICK = os.sysconf("SC_CLK_TCK")


def serve(variant: str, log_level: str, profile: str | None) -> None:
    """Run one identity-model app in this process, as ``scorepack serve`` runs it."""
    import uvicorn

    from scorepack import Scorer
    from scorepack.config import ScoringConfig
    from scorepack.server.limits import HttpLimits
    from scorepack.server.run import _exit_normally_after_signals, bind_socket, url_of
    from scorepack.telemetry.logs import configure_logging

    configure_logging(log_level, "text")
    scorer = Scorer(Identity(Path("identity.model")), ScoringConfig())
    app: Any
    if variant == "legacy":
        from benchmarks.micro.legacy_asgi import ScoringApp as Legacy

        app = Legacy(scorer)
    else:
        from scorepack.server import ScoringApp

        app = ScoringApp(scorer, limits=HttpLimits.from_env())
    # uvicorn as scorepack.server.run configures it
    config = uvicorn.Config(
        app, lifespan="on", log_config=None, access_log=False, timeout_keep_alive=30
    )
    server = uvicorn.Server(config)
    sock = bind_socket("127.0.0.1", 0)
    # the line benchmarks.suite.servers looks for
    print(f"scorepack: serving identity at {url_of(sock)}/score", flush=True)
    profiler = None
    if profile is not None:
        import cProfile
        import time

        # CPU time of the event-loop thread: wall time would count the other processes
        profiler = cProfile.Profile(time.thread_time)
        profiler.enable()
    try:
        with _exit_normally_after_signals(server):
            server.run(sockets=[sock])
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(profile)


def _cpu_seconds(pid: int, tid: int | None = None) -> float:
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    with open(path, encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime and stime: fields 14 and 15 of stat(5), counted after "pid (comm)"
    return (int(fields[11]) + int(fields[12])) / _TICK


def _load(url: str, route: str, body: bytes, content_type: str, n: int, c: int) -> int:
    config = BenchConfig(
        url=url + route,
        body=body,
        content_type=content_type,
        concurrency=c,
        duration_s=3600.0,
        max_requests=n,
    )
    result = run_bench(config)
    failed = sum(v for k, v in result.statuses.items() if not k.startswith("2"))
    if failed or result.transport_errors:
        raise RuntimeError(f"{route}: {result.statuses}, {result.last_error}")
    return int(result.requests)


def measure(app: str, route: str, args: argparse.Namespace) -> dict[str, Any]:
    """One server, one route: CPU µs per request over ``--requests`` requests."""
    path, body, content_type = ROUTES[route]
    profile = None
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
        profile = str(args.profile / f"{app}-{route}.prof")
    if route == "image":
        if app != "app":
            raise SystemExit("the image route runs today's app only")
        from benchmarks.suite import models

        model = models.tiny_tensorflow()
        body = models.small_image().read_bytes()
        cmd = [
            sys.executable,
            "-m",
            "scorepack",
            "--log-level",
            args.log_level,
            "serve",
            str(model.path),
            *model.serve_args,
            "--port",
            "0",
        ]
    else:
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.micro.request_cpu",
            "--serve",
            app,
            "--log-level",
            args.log_level,
            *(["--profile-to", profile] if profile else []),
        ]
    with servers.running(cmd, ready_path="/health/ready") as server:
        pid = server.proc.pid
        _load(server.url, path, body, content_type, args.warmup, args.concurrency)
        before, loop_before = _cpu_seconds(pid), _cpu_seconds(pid, pid)
        done = _load(server.url, path, body, content_type, args.requests, args.concurrency)
        after, loop_after = _cpu_seconds(pid), _cpu_seconds(pid, pid)
        lines = len(server.log)
    return {
        "cpu_us": (after - before) / done * 1e6,
        "loop_us": (loop_after - loop_before) / done * 1e6,
        "requests": done,
        "log_lines": lines,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", choices=("app", "legacy"), help=argparse.SUPPRESS)
    parser.add_argument("--profile-to", help=argparse.SUPPRESS)
    parser.add_argument("--routes", default="score,v2", help="score, v2, image (comma-separated)")
    parser.add_argument("--apps", default="app,legacy", help="app, legacy (comma-separated)")
    parser.add_argument("--requests", type=int, default=5000, help="measured requests per run")
    parser.add_argument("--warmup", type=int, default=500, help="requests before measuring")
    parser.add_argument("--concurrency", "-c", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3, help="runs per app and route")
    parser.add_argument("--log-level", default="info", choices=("info", "warning"))
    parser.add_argument("--profile", type=Path, help="write cProfile files of the servers here")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.log_level, args.profile_to)
        return
    summary: dict[str, Any] = {}
    for route in args.routes.split(","):
        for app in args.apps.split(","):
            if app == "legacy" and route != "score":
                continue  # the legacy app has /score only
            runs = [measure(app, route, args) for _ in range(args.repeat)]
            cpu = statistics.median(r["cpu_us"] for r in runs)
            loop = statistics.median(r["loop_us"] for r in runs)
            summary[f"{app} {route}"] = {
                "cpu_us_per_request": round(cpu, 1),
                "event_loop_us_per_request": round(loop, 1),
                "runs_cpu_us": [round(r["cpu_us"], 1) for r in runs],
            }
            print(
                f"{app:7s} {route:6s} {cpu:7.1f} µs CPU/request "
                f"({loop:.1f} on the event loop; runs {summary[f'{app} {route}']['runs_cpu_us']})",
                file=sys.stderr,
                flush=True,
            )
    summary["settings"] = {k: str(v) for k, v in vars(args).items() if k not in ("serve",)}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
