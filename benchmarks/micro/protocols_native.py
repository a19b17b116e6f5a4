"""The protocols compared under one native load generator: h2load drives them all.

``grpc_cpu`` loads the server with scorepack's own Python connections; on a small machine
the load generator shares the server's cores, and a Python gRPC client costs about four
times the CPU of the httptools ``/score`` client, so gRPC is penalised by its client. The
field compares protocols with native load generators (Triton's perf_analyzer, ghz,
h2load). This drives ``/score``, V2 REST (binary tensors) and V2 gRPC with the SAME tool,
nghttp2's ``h2load``, at the same concurrency, each of ``-c`` connections keeping one
request in flight (a closed loop, as ``scorepack bench``):

* ``/score``: HTTP/1.1 keep-alive (``--h1``), the JPEG as the body;
* V2 REST: HTTP/1.1, the binary-tensor body tritonclient sends;
* V2 gRPC: HTTP/2, one unary ``ModelInfer`` per stream: a file holding the 5-byte gRPC
  frame prefix and the serialised ``ModelInferRequest`` (``content-type:
  application/grpc``, ``te: trailers``).

h2load sees only HTTP statuses (a gRPC error is an HTTP 200 with ``grpc-status`` in its
trailers), so every run is checked on the server: its ``/metrics`` counters
(``scorepack_requests_total`` by protocol, route and status) must have moved by exactly the
requests sent, all with success (``200``/``OK``), and nothing else may have moved. A few
calls with scorepack's own clients then check that the three protocols give the same
answer for the body h2load sent.

For each protocol it reports req/s and h2load's mean latency (meaningful only on a quiet
machine), the server's CPU per request (all its threads, from /proc: meaningful anywhere)
and h2load's, the server's context switches per request (thread hand-offs, GIL waits,
poller wake-ups: a count that a busy machine barely changes) and the rows per model
call. ``--python-client`` also measures each
protocol with ``grpc_cpu``'s Python connections in the same rounds, so both load
generators are reported side by side.
Protocols (and, with ``--compare``, servers) alternate within each round, so a machine
that drifts favours none, and the two servers swap places every round (use an even number
of rounds), so neither always goes first; the summary is the median of the rounds and,
per round, each protocol's rate over ``/score``'s.

h2load comes from Debian's ``nghttp2-client``: when it is missing and apt-get is there
(as root), this installs it and says so; otherwise it stops and says what to install.

    .venv/bin/python -m benchmarks.micro.protocols_native          # tiny model, c=8
    .venv/bin/python -m benchmarks.micro.protocols_native --requests 300 --rounds 1  # runs?
    .venv/bin/python -m benchmarks.micro.protocols_native --python-client --compare main
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from benchmarks.micro.grpc_cpu import _connect, _server_cpu, _server_switches, measure, serving
from benchmarks.suite import models
from prometheus_client.parser import text_string_to_metric_families

from scorepack.bench.protocols import prepare_v2_load, rest_target
from scorepack.client_grpc import grpc_infer_request

PROTOCOLS = ("score", "v2", "grpc")
#: the label scorepack_requests_total gives each protocol, and its success status
_LABEL = {"score": ("azureml", "200"), "v2": ("v2", "200"), "grpc": ("grpc", "OK")}
Counts = dict[tuple[str, str, str, str], float]


def ensure_h2load() -> str:
    """The path of h2load, installing Debian's nghttp2-client first when it is missing."""
    found = shutil.which("h2load")
    if found:
        return found
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        sys.exit(
            "h2load is missing: install nghttp2 (Debian/Ubuntu: apt-get install "
            "nghttp2-client; macOS: brew install nghttp2) and run this again"
        )
    print("h2load is missing: installing nghttp2-client with apt-get", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [apt, "install", "-y", "--no-install-recommends", "nghttp2-client"]
    if subprocess.run(install, env=env, stdout=subprocess.DEVNULL).returncode != 0:
        # the package lists may be missing or stale (a fresh container has none)
        subprocess.run([apt, "update"], env=env, stdout=subprocess.DEVNULL, check=True)
        subprocess.run(install, env=env, stdout=subprocess.DEVNULL, check=True)
    found = shutil.which("h2load")
    if not found:
        sys.exit("nghttp2-client was installed but h2load is not on PATH")
    return found


@dataclass(frozen=True)
class Target:
    """One protocol's request as h2load sends it: URL, headers, body file, HTTP/1.1 or 2."""

    protocol: str
    url: str
    headers: tuple[str, ...]
    body: Path
    h1: bool

    def args(self) -> list[str]:
        args = ["--h1"] if self.h1 else []
        for header in self.headers:
            args += ["-H", header]
        return [*args, "-d", str(self.body), self.url]


def targets(url: str, grpc_url: str, image: bytes, folder: Path) -> dict[str, Target]:
    """The three protocols' requests for ``image``, their bodies written into ``folder``."""
    score = folder / "score.bin"
    score.write_bytes(image)
    rest = prepare_v2_load("v2", url, image)
    head, _, body = rest_target(rest).request.partition(b"\r\n\r\n")
    v2 = folder / "v2.bin"
    v2.write_bytes(body)
    length = re.search(rb"Inference-Header-Content-Length: (\d+)", head)
    assert length is not None
    load = prepare_v2_load("grpc", grpc_url, image)
    message = grpc_infer_request(load.model, load.inputs).SerializeToString()
    grpc = folder / "grpc.bin"
    # a gRPC message on the wire: not compressed (0), its length (4 bytes, big-endian)
    grpc.write_bytes(b"\0" + struct.pack(">I", len(message)) + message)
    port = grpc_url.rsplit(":", 1)[1]
    return {
        "score": Target("score", f"{url}/score", ("content-type: image/jpeg",), score, True),
        "v2": Target(
            "v2",
            f"{url}/v2/models/{rest.model}/infer",
            (
                "content-type: application/octet-stream",
                f"inference-header-content-length: {int(length.group(1))}",
            ),
            v2,
            True,
        ),
        "grpc": Target(
            "grpc",
            f"http://127.0.0.1:{port}/inference.GRPCInferenceService/ModelInfer",
            ("content-type: application/grpc", "te: trailers"),
            grpc,
            False,
        ),
    }


def counts(url: str) -> Counts:
    """The server's request counts, (protocol, route, status, model) → count, and rows
    and model calls under ("rows",) and ("calls",)."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    out: Counts = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "scorepack_requests_total":
                key = (labels["protocol"], labels["route"], labels["status"], labels["model"])
                out[key] = sample.value
            elif sample.name == "scorepack_inference_rows_total":
                out[("rows", "", "", "")] = out.get(("rows", "", "", ""), 0.0) + sample.value
            elif sample.name == "scorepack_model_calls_total":
                out[("calls", "", "", "")] = out.get(("calls", "", "", ""), 0.0) + sample.value
    return out


def checked(before: Counts, after: Counts, protocol: str, sent: int) -> float:
    """Check that exactly ``sent`` requests of ``protocol`` succeeded and nothing else was
    answered; return the rows per model call."""
    label, ok = _LABEL[protocol]
    moved = {
        k: after[k] - before.get(k, 0.0)
        for k in after
        if k[0] not in ("rows", "calls") and after[k] != before.get(k, 0.0)
    }
    good = sum(v for k, v in moved.items() if k[0] == label and k[2] == ok)
    other = {k: v for k, v in moved.items() if not (k[0] == label and k[2] == ok)}
    # /metrics itself is counted (the scrape before this check)
    other = {k: v for k, v in other.items() if k[1] != "/metrics"}
    if good != sent or other:
        raise SystemExit(
            f"{protocol}: the server counted {good:.0f} successful requests of {sent} sent, "
            f"and also {other}: h2load's 2xx are not all successes"
        )
    calls = after[("calls", "", "", "")] - before.get(("calls", "", "", ""), 0.0)
    rows = after[("rows", "", "", "")] - before.get(("rows", "", "", ""), 0.0)
    return rows / calls if calls else 0.0


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def h2load(
    tool: str, target: Target, concurrency: int, requests: int, timeout: float
) -> dict[str, Any]:
    """One closed-loop h2load run: its req/s, its own CPU, and what it counted."""
    cmd = [tool, "-n", str(requests), "-c", str(concurrency), "-m", "1", "-t", "1"]
    cpu0 = _children_cpu()
    done = subprocess.run(
        [*cmd, *target.args()], capture_output=True, text=True, timeout=timeout, check=False
    )
    cpu = _children_cpu() - cpu0
    out = done.stdout
    rate = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out)
    ok = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded", out)
    codes = re.search(r"status codes: (\d+) 2xx", out)
    if done.returncode != 0 or not (rate and ok and codes):
        raise SystemExit(f"h2load failed ({done.returncode}):\n{out}\n{done.stderr}")
    if int(ok.group(1)) != requests or int(codes.group(1)) != requests:
        raise SystemExit(f"h2load: not every request succeeded:\n{out}")
    # time for request: min, max, mean, sd (each with its unit), +/- sd
    latency = re.search(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)", out)
    mean_ms = _ms(latency.group(3)) if latency else float("nan")
    max_ms = _ms(latency.group(2)) if latency else float("nan")
    return {"rps": float(rate.group(1)), "client_cpu": cpu, "mean_ms": mean_ms, "max_ms": max_ms}


def _ms(value: str) -> float:
    """h2load's duration (``812us``, ``3.21ms``, ``1.02s``) in milliseconds."""
    number = re.match(r"[\d.]+", value)
    if number is None:
        return float("nan")
    unit = value[number.end() :]
    return float(number.group()) * {"us": 0.001, "ms": 1.0, "s": 1000.0}.get(unit, float("nan"))


def run_native(
    tool: str, pid: int, url: str, target: Target, concurrency: int, requests: int
) -> dict[str, Any]:
    """h2load on ``target``; CPU per request on both sides; every answer checked."""
    before = counts(url)
    server0, switches0 = _server_cpu(pid), _server_switches(pid)
    run = h2load(tool, target, concurrency, requests, timeout=600)
    server = _server_cpu(pid) - server0
    switches = _server_switches(pid) - switches0
    rows = checked(before, counts(url), target.protocol, requests)
    return {
        "requests": requests,
        "server_ms": 1000 * server / requests,
        "client_ms": 1000 * run["client_cpu"] / requests,
        "switches": switches / requests,
        "rows_per_call": rows,
        "rps": run["rps"],
        "mean_ms": run["mean_ms"],
        "max_ms": run["max_ms"],
    }


def same_answers(url: str, grpc_url: str, image: bytes) -> None:
    """The body h2load sends gives the same answer over the three protocols (scorepack's
    own clients): a wrong request file would show here, not only as a count."""
    from scorepack.client_v2 import v2_client

    scores = {}
    for protocol, where in (("v2", url), ("grpc", grpc_url)):
        load = prepare_v2_load(protocol, where, image)
        with v2_client(where, protocol, timeout=60) as client:
            answer = client.infer(load.model, load.inputs)
        scores[protocol] = {k: np.asarray(v) for k, v in answer.outputs.items()}
    raw = httpx.post(
        f"{url}/score?raw=true", content=image, headers={"content-type": "image/jpeg"}, timeout=60
    ).json()["outputs"]
    assert scores["grpc"] and set(scores["grpc"]) == set(scores["v2"]) == set(raw), raw.keys()
    for name, value in scores["grpc"].items():
        np.testing.assert_allclose(value, scores["v2"][name], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(
            value.reshape(-1), np.asarray(raw[name], np.float64).reshape(-1), rtol=1e-4, atol=1e-5
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("tiny", "resnet50-onnx"), default="tiny")
    parser.add_argument("-c", "--concurrency", type=int, default=8)
    parser.add_argument("--requests", type=int, default=3000, help="measured, per run")
    parser.add_argument("--warmup", type=int, default=300, help="requests before each run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--protocols", default=",".join(PROTOCOLS))
    parser.add_argument(
        "--python-client", action="store_true", help="also load with scorepack bench's clients"
    )
    parser.add_argument(
        "--compare", metavar="GIT_REF", help="also serve the core as of GIT_REF (e.g. main)"
    )
    parser.add_argument("--json", action="store_true", help="print every run as JSON too")
    args = parser.parse_args()
    tool = ensure_h2load()
    protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]
    model = models.tiny_tensorflow() if args.model == "tiny" else models.resnet50("onnx")
    image = (models.small_image() if args.model == "tiny" else models.SAMPLE).read_bytes()
    runs: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    with serving(model, args.compare) as found, tempfile.TemporaryDirectory() as tmp:
        plans: list[tuple[str, str, str, Callable[[int], dict[str, Any]]]] = []
        for label, (pid, url, grpc_url) in found.items():
            same_answers(url, grpc_url, image)
            folder = Path(tmp) / str(pid)
            folder.mkdir()
            native = targets(url, grpc_url, image, folder)
            for protocol in protocols:
                target = native[protocol]

                def go(n: int, pid: int = pid, url: str = url, target: Target = target) -> Any:
                    return run_native(tool, pid, url, target, args.concurrency, n)

                plans.append((label, "h2load", protocol, go))
                if args.python_client:
                    connect = _connect(protocol, url, grpc_url, image)

                    def py(n: int, pid: int = pid, url: str = url, connect: Any = connect) -> Any:
                        return measure(pid, connect, url, args.concurrency, n)

                    plans.append((label, "python", protocol, py))
        servers = list(dict.fromkeys(plan[0] for plan in plans))
        for round_ in range(args.rounds):
            # interleaved: protocols, load generators and servers take turns in each round,
            # and the servers swap places every round: on a shared machine two servers of
            # the same core, in fixed places, differed by 0.16 ms a gRPC request (median)
            order = servers if round_ % 2 == 0 else servers[::-1]
            for label, loader, protocol, go in sorted(plans, key=lambda p: order.index(p[0])):
                go(args.warmup)
                run = go(args.requests)
                runs.setdefault((label, loader, protocol), []).append(run)
                print(
                    f"round {round_ + 1} {label} {loader:6} {protocol:5} "
                    f"server {run['server_ms']:.3f} ms  client {run['client_ms']:.3f} ms/req  "
                    f"{run['rows_per_call']:.2f} rows/call  {run['rps']:.0f} req/s"
                    + (f"  {run['switches']:.1f} switches/req" if "switches" in run else "")
                    + (f"  latency mean {run['mean_ms']:.2f} ms" if "mean_ms" in run else ""),
                    file=sys.stderr,
                    flush=True,
                )
    print(f"\n{args.model}, c={args.concurrency}: median of {args.rounds} rounds")
    print(
        f"{'server':12} {'load gen':8} {'protocol':8} {'server ms':>9} {'client ms':>9} "
        f"{'rows/call':>9} {'switches':>8} {'mean ms':>7} {'req/s':>7} {'/ score':>7}  per round"
    )
    for (label, loader, protocol), done in runs.items():
        med = {
            k: sorted(r[k] for r in done)[len(done) // 2]
            for k in ("server_ms", "client_ms", "rows_per_call", "rps")
        }
        # the server's context switches per request (h2load runs only)
        switches = sorted(r.get("switches", float("nan")) for r in done)[len(done) // 2]
        # latency: h2load's mean time per request (the Python client's runs have none)
        means = sorted(r.get("mean_ms", float("nan")) for r in done)
        mean = means[len(means) // 2]
        base = runs.get((label, loader, "score"))
        ratios = [r["rps"] / b["rps"] for r, b in zip(done, base, strict=True)] if base else []
        ratio = sorted(ratios)[len(ratios) // 2] if ratios else float("nan")
        print(
            f"{label:12} {loader:8} {protocol:8} {med['server_ms']:9.3f} {med['client_ms']:9.3f} "
            f"{med['rows_per_call']:9.2f} {switches:8.1f} {mean:7.2f} {med['rps']:7.0f} "
            f"{ratio:7.2f}  " + " ".join(f"{r:.2f}" for r in ratios)
        )
    print(
        "(req/s and its ratio mean something only on a quiet machine; CPU columns anywhere;"
        " switches: the server's context switches per request)"
    )
    if args.json:
        print(json.dumps({" ".join(k): v for k, v in runs.items()}, indent=1))


if __name__ == "__main__":
    main()
