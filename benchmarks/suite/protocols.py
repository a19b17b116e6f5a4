"""The protocols compared on the same load: ``/score``, V2 REST (binary) and V2 gRPC.

One embedded server speaks all three (``scorepack serve MODEL --grpc-port P``); ``scorepack
bench --protocol score|v2|grpc`` loads it with the same image at the same concurrency, the
protocols taking turns at each level so a drifting machine does not favour one. Targets
(issue 9): a tiny model at c=8, V2 gRPC ≥ ``/score``; ResNet50 (ONNX) at c=32, V2 REST and
V2 gRPC each ≥ 0.95 x ``/score``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from . import servers

PROTOCOLS = ("score", "v2", "grpc")
NAMES = {"score": "/score", "v2": "V2 REST", "grpc": "V2 gRPC"}


def measure(
    model: Any, image: Path, levels: tuple[int, ...], duration: float, warmup: float, name: str
) -> list[dict[str, Any]]:
    """One server, every protocol at every level: one server entry per protocol."""
    grpc_port = servers.free_port()
    cmd = servers.embedded_command(model, "--grpc-port", str(grpc_port))
    print(f"  {name}: starting", file=sys.stderr, flush=True)
    with servers.running(cmd, ready_path="/health/ready") as server:
        runs: dict[str, list[dict[str, Any]]] = {p: [] for p in PROTOCOLS}
        for c in levels:
            for protocol in PROTOCOLS:
                url = f"grpc://127.0.0.1:{grpc_port}" if protocol == "grpc" else server.url
                result = servers.load(url, image, c, duration, warmup, protocol=protocol)
                print(
                    f"  {name} {NAMES[protocol]}: c={c} {result['rps']:.1f} req/s "
                    f"p50 {result['latency_ms'].get('p50', 0):.1f} ms errors {result['errors']}",
                    file=sys.stderr,
                    flush=True,
                )
                runs[protocol].append(result)
        return [
            {
                "server": "embedded",
                "label": f"{name} {NAMES[p]}",
                "protocol": p,
                "model": model.name,
                "device": model.device,
                "options": list(model.options),
                "ready_s": server.ready_s,
                "peak_rss_mib": server.peak_rss_mib(),
                "runs": runs[p],
            }
            for p in PROTOCOLS
        ]


def _rps(results: dict[str, Any], label: str, concurrency: int) -> float | None:
    for server in results.get("servers", []):
        if server["label"] == label:
            for run in server["runs"]:
                if run["concurrency"] == concurrency:
                    return float(run["rps"])
    return None


def targets(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(target, measured, needed, verdict) for the protocol targets the results allow."""
    rows = []
    checks = [
        ("tiny protocols", 8, "grpc", 1.0),
        ("onnx protocols", 32, "v2", 0.95),
        ("onnx protocols", 32, "grpc", 0.95),
    ]
    for name, c, protocol, needed in checks:
        base = _rps(results, f"{name} /score", c)
        other = _rps(results, f"{name} {NAMES[protocol]}", c)
        if base and other is not None:
            ratio = other / base
            model = "Tiny model" if name.startswith("tiny") else "ResNet50 onnx"
            rows.append(
                (
                    f"{model}: {NAMES[protocol]} / /score, c={c}",
                    f"{other:.1f} / {base:.1f} = **{ratio:.2f}**",
                    f"≥ {needed:g}",
                    "pass" if ratio >= needed else "FAIL",
                )
            )
    return rows
