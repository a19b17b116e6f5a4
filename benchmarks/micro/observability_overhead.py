"""What metrics, access logs and (off) tracing cost: the tiny model's embedded server at c=8,
before and after, on one machine, in alternating rounds.

    git worktree add /tmp/scorepack-before REV        # the code before (e.g. main before obs)
    .venv/bin/python -m benchmarks.micro.observability_overhead --before /tmp/scorepack-before

"Before" and "after" are source trees: each server runs this environment's Python with the
tree's ``core/`` and plugins first on ``PYTHONPATH`` (the load generator is this tree's).
Rounds alternate before, after, before, ... so that drift in the machine's load falls on
both; the medians are compared. Both servers log at ``--log-level`` (default ``info``: a
line per request, read by this process) and serve ``/metrics`` while loaded, as a scraper
would see them; tracing stays off. The target (issue 12): after >= 0.98 x before.
``--protocol v2|grpc`` loads V2 REST or V2 gRPC instead of ``/score`` (gRPC: both servers
get ``--grpc-port``), for what counting and logging gRPC calls costs:

    git worktree add /tmp/scorepack-before REV   # REV: main before gRPC calls were counted
    .venv/bin/python -m benchmarks.micro.observability_overhead \
        --before /tmp/scorepack-before --protocol grpc

Needs a quiet machine; ``--rounds 1 --duration 3`` only checks that it runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from benchmarks.suite import models, servers

HERE = Path(__file__).resolve().parents[2]


def _scrape_while(url: str, stop: threading.Event, period: float) -> None:
    # a Prometheus scraping every `period` seconds, so rendering /metrics is in the price
    with httpx.Client(timeout=10) as client:
        while not stop.wait(period):
            try:
                client.get(url + "/metrics")
            except httpx.HTTPError:
                pass


def one_round(tree: Path, model: Any, image: Path, args: argparse.Namespace) -> dict[str, Any]:
    # the tree's core and its plugins: a plugin must match the core it was written against
    paths = [tree / "core", *sorted((tree / "plugins").glob("scorepack-*"))]
    env = {"PYTHONPATH": os.pathsep.join([*map(str, paths), os.environ.get("PYTHONPATH", "")])}
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
    grpc_port = servers.free_port() if args.protocol == "grpc" else None
    if grpc_port is not None:
        cmd += ["--grpc-port", str(grpc_port)]
    with servers.running(cmd, ready_path="/health/ready", env=env) as server:
        stop = threading.Event()
        scraper = threading.Thread(target=_scrape_while, args=(server.url, stop, args.scrape))
        scraper.start()
        try:
            url = server.url if grpc_port is None else f"grpc://127.0.0.1:{grpc_port}"
            result = servers.load(
                url, image, args.concurrency, args.duration, args.warmup, args.protocol
            )
        finally:
            stop.set()
            scraper.join()
        lines = len(server.log)
    return {
        "rps": result["rps"],
        "p50_ms": result["latency_ms"].get("p50"),
        "errors": result["errors"],
        "server_log_lines": lines,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, required=True, help="source tree before")
    parser.add_argument("--after", type=Path, default=HERE, help="source tree after (this one)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per tree (default 5)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per round")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--concurrency", "-c", type=int, default=8)
    parser.add_argument("--scrape", type=float, default=5.0, help="seconds between scrapes")
    parser.add_argument("--log-level", default="info", choices=("info", "warning"))
    parser.add_argument(
        "--protocol", default="score", choices=("score", "v2", "grpc"), help="what to load"
    )
    args = parser.parse_args()
    for tree in (args.before, args.after):
        if not (tree / "core" / "scorepack" / "__init__.py").is_file():
            parser.error(f"{tree} is not a scorepack source tree (no core/scorepack)")
    model = models.tiny_tensorflow()
    image = models.small_image()
    results: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    for i in range(args.rounds):
        for name in ("before", "after"):
            tree = args.before if name == "before" else args.after
            outcome = one_round(tree, model, image, args)
            results[name].append(outcome)
            print(
                f"round {i + 1} {name}: {outcome['rps']:.1f} req/s, p50 {outcome['p50_ms']} ms, "
                f"errors {outcome['errors']}",
                file=sys.stderr,
                flush=True,
            )
            time.sleep(1.0)
    summary = {
        name: {
            "median_rps": statistics.median(r["rps"] for r in runs),
            "rounds": runs,
        }
        for name, runs in results.items()
    }
    ratio = summary["after"]["median_rps"] / summary["before"]["median_rps"]
    summary["after_over_before"] = round(ratio, 4)
    summary["target"] = ">= 0.98"
    summary["settings"] = {k: str(v) for k, v in vars(args).items()}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
