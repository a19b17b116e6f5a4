"""What metrics, access logs and (off) tracing cost, on one machine, in alternating rounds.

Two ways to measure it (issue 12's target: "on" >= 0.98 x "off" on the tiny model at c=8,
and nothing measurable on ResNet50 at c=32):

**A/B on one tree** (``--ab``), observability and nothing else: the same code serves in
both arms; "off" is ``--no-metrics --no-access-log`` (nothing counted, no ``/metrics``, no
access line), "on" is the defaults (requests counted, ``/metrics`` scraped every
``--scrape`` seconds while loaded, an access line per request at INFO, read by this
process). Tracing is off in both (no ``--otlp-endpoint``), so "on" also carries what
tracing costs when off.

    .venv/bin/python -m benchmarks.micro.observability_overhead --ab            # tiny, c=8
    .venv/bin/python -m benchmarks.micro.observability_overhead --ab --protocol grpc
    .venv/bin/python -m benchmarks.micro.observability_overhead --ab --model resnet50-onnx
    .venv/bin/python -m benchmarks.micro.observability_overhead --ab --arms off,metrics,on

``--arms off,metrics,on`` adds a third arm, metrics on (and scraped) without access lines,
to say which of the two costs what (``metrics_over_off`` beside ``on_over_off``).

**Before/after** (``--before TREE``): two source trees, e.g. main before observability.
Each server runs this environment's Python with the tree's ``core/`` and plugins first on
``PYTHONPATH`` (the load generator is this tree's). Everything else that changed between
the trees is charged to observability too, which is why ``--ab`` exists.

    git worktree add /tmp/scorepack-before REV
    .venv/bin/python -m benchmarks.micro.observability_overhead --before /tmp/scorepack-before

Rounds alternate (A/B: off-on, then on-off, so a drift in the machine's load falls on both
arms equally); the medians are compared, and the spread of each arm's rounds says what a
difference must exceed to be measurable. ``--protocol v2|grpc`` loads V2 REST or V2 gRPC
instead of ``/score`` (gRPC: the servers get ``--grpc-port``). Needs a quiet machine;
``--rounds 1 --duration 3`` only checks that it runs.

On a small machine the fresh server per round and the Python load generator make the
tiny model's A/B a draw of a few per cent either way; ``paired_ab`` measures
the same arms in pairs of live servers under h2load and gives an interval.
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
from benchmarks.micro.grpc_cpu import _server_cpu
from benchmarks.suite import models, servers

HERE = Path(__file__).resolve().parents[2]

#: the A/B's arms: the serve options each adds (tracing is off in all). "metrics" (chosen
#: with --arms off,metrics,on) splits the cost: metrics on and scraped, no access lines
ARMS: dict[str, tuple[str, ...]] = {
    "off": ("--no-metrics", "--no-access-log"),
    "metrics": ("--no-access-log",),
    "on": (),
}
#: the models --model picks, and the concurrency each is measured at by default
MODELS = {"tiny": 8, "resnet50-onnx": 32}
TARGET = 0.98


def _scrape_while(url: str, stop: threading.Event, period: float) -> None:
    # a Prometheus scraping every `period` seconds, so rendering /metrics is in the price
    with httpx.Client(timeout=10) as client:
        while not stop.wait(period):
            try:
                client.get(url + "/metrics")
            except httpx.HTTPError:
                pass


def one_round(
    tree: Path,
    model: Any,
    image: Path,
    args: argparse.Namespace,
    extra: tuple[str, ...] = (),
    scrape: bool = True,
) -> dict[str, Any]:
    """One server of ``tree`` with the ``extra`` serve options, loaded for one round."""
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
        *extra,
    ]
    grpc_port = servers.free_port() if args.protocol == "grpc" else None
    if grpc_port is not None:
        cmd += ["--grpc-port", str(grpc_port)]
    with servers.running(cmd, ready_path="/health/ready", env=env) as server:
        stop = threading.Event()
        scraper = threading.Thread(target=_scrape_while, args=(server.url, stop, args.scrape))
        if scrape:
            scraper.start()
        try:
            url = server.url if grpc_port is None else f"grpc://127.0.0.1:{grpc_port}"
            if args.warmup > 0:
                # a load of its own, so the CPU measured below is the measured requests'
                servers.load(url, image, args.concurrency, args.warmup, 0.0, args.protocol)
            cpu = _server_cpu(server.proc.pid)
            result = servers.load(url, image, args.concurrency, args.duration, 0.0, args.protocol)
            cpu = _server_cpu(server.proc.pid) - cpu
        finally:
            stop.set()
            if scrape:
                scraper.join()
        lines = len(server.log)
    return {
        "rps": result["rps"],
        # all the server's threads (user + system) over the measured requests: unlike the
        # rate, barely moved by what else the machine runs
        "server_cpu_ms": round(1000.0 * cpu / max(result["requests"], 1), 4),
        "p50_ms": result["latency_ms"].get("p50"),
        "errors": result["errors"],
        "server_log_lines": lines,
    }


def _spread(values: list[float]) -> float:
    """(max - min) / median: how far apart one arm's rounds are, as a fraction."""
    return (max(values) - min(values)) / statistics.median(values) if values else 0.0


def summarise(
    results: dict[str, list[dict[str, Any]]], top: str, bottom: str, *others: str
) -> dict[str, Any]:
    """Medians per arm, the ratio ``top / bottom``, each arm's round-to-round spread, the
    per-round ratios, and whether the difference exceeds the spread (is measurable);
    ``others``: arms also given as a ratio over ``bottom``."""
    summary: dict[str, Any] = {}
    for name, runs in results.items():
        rps = [r["rps"] for r in runs]
        cpu = [r["server_cpu_ms"] for r in runs]
        summary[name] = {
            "median_rps": statistics.median(rps),
            "spread": round(_spread(rps), 4),
            "median_server_cpu_ms": round(statistics.median(cpu), 4),
            "cpu_spread": round(_spread(cpu), 4),
            "rounds": runs,
        }
    ratio = summary[top]["median_rps"] / summary[bottom]["median_rps"]
    pairs = [a["rps"] / b["rps"] for a, b in zip(results[top], results[bottom], strict=True)]
    spread = max(summary[top]["spread"], summary[bottom]["spread"])
    summary[f"{top}_over_{bottom}"] = round(ratio, 4)
    # what observability adds to each request's server CPU, in ms (the rate's mirror)
    base_cpu = summary[bottom]["median_server_cpu_ms"]
    summary[f"{top}_cpu_minus_{bottom}_ms"] = round(
        summary[top]["median_server_cpu_ms"] - base_cpu, 4
    )
    summary["round_ratios"] = [round(p, 4) for p in pairs]
    summary["target"] = f">= {TARGET}"
    summary["met"] = ratio >= TARGET
    # a difference inside the rounds' own spread is not one this run can tell apart; with
    # one round per arm there is no spread to judge by
    rounds = min(len(runs) for runs in results.values())
    summary["measurable"] = abs(1.0 - ratio) > spread if rounds > 1 else None
    for other in others:
        share = summary[other]["median_rps"] / summary[bottom]["median_rps"]
        summary[f"{other}_over_{bottom}"] = round(share, 4)
        extra = summary[other]["median_server_cpu_ms"] - base_cpu
        summary[f"{other}_cpu_minus_{bottom}_ms"] = round(extra, 4)
    return summary


def _model(name: str) -> Any:
    if name == "tiny":
        return models.tiny_tensorflow()
    return models.resnet50("onnx")


def _image(name: str) -> Path:
    # the tiny model gets a small JPEG (the server's own work is what is measured);
    # ResNet50 the sample photo, as the suite loads it
    return models.small_image() if name == "tiny" else models.SAMPLE


def _report(i: int, name: str, outcome: dict[str, Any]) -> None:
    print(
        f"round {i + 1} {name}: {outcome['rps']:.1f} req/s, "
        f"server CPU {outcome['server_cpu_ms']:.3f} ms/req, p50 {outcome['p50_ms']} ms, "
        f"errors {outcome['errors']}, server log lines {outcome['server_log_lines']}",
        file=sys.stderr,
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument(
        "--ab", action="store_true", help="observability off vs on, both from this tree"
    )
    mode.add_argument("--before", type=Path, help="source tree before (before/after mode)")
    parser.add_argument("--after", type=Path, default=HERE, help="source tree after (this one)")
    parser.add_argument(
        "--model", choices=tuple(MODELS), default="tiny", help="what is served (default tiny)"
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds per arm (default 5)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per round")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument(
        "--concurrency", "-c", type=int, help="default: 8 for tiny, 32 for resnet50-onnx"
    )
    parser.add_argument("--scrape", type=float, default=5.0, help="seconds between scrapes")
    parser.add_argument("--log-level", default="info", choices=("info", "warning"))
    parser.add_argument(
        "--protocol", default="score", choices=("score", "v2", "grpc"), help="what to load"
    )
    parser.add_argument(
        "--arms",
        default="off,on",
        help="the A/B's arms, in order: off,on (default) or off,metrics,on",
    )
    args = parser.parse_args()
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    if args.ab and (arms[:1] != ["off"] or arms[-1:] != ["on"] or set(arms) - set(ARMS)):
        parser.error("--arms: off first, on last, and metrics between if wanted")
    if args.concurrency is None:
        args.concurrency = MODELS[args.model]
    trees = [args.after] if args.ab else [args.before, args.after]
    for tree in trees:
        if not (tree / "core" / "scorepack" / "__init__.py").is_file():
            parser.error(f"{tree} is not a scorepack source tree (no core/scorepack)")
    model, image = _model(args.model), _image(args.model)
    if args.ab:
        results: dict[str, list[dict[str, Any]]] = {name: [] for name in arms}
        for i in range(args.rounds):
            # forwards, then backwards: drift falls on every arm alike
            for name in arms if i % 2 == 0 else arms[::-1]:
                scrape = name != "off"  # /metrics exists (and is scraped) with metrics on
                outcome = one_round(args.after, model, image, args, ARMS[name], scrape)
                results[name].append(outcome)
                _report(i, name, outcome)
                time.sleep(1.0)
        summary = summarise(results, "on", "off", *arms[1:-1])
    else:
        results = {"before": [], "after": []}
        for i in range(args.rounds):
            for name in ("before", "after"):
                tree = args.before if name == "before" else args.after
                outcome = one_round(tree, model, image, args)
                results[name].append(outcome)
                _report(i, name, outcome)
                time.sleep(1.0)
        summary = summarise(results, "after", "before")
    summary["settings"] = {k: str(v) for k, v in vars(args).items()}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
