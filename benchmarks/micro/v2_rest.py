"""Issue 9's V2 REST targets, on one quiet machine:

1. ResNet50 (ONNX) at c=32: V2 REST with the binary extension (a JPEG as a BYTES input,
   outputs as binary) against ``/score`` with the same JPEG: target ratio >= 0.95.
2. Two ResNet50 models loaded in one server and driven at once: each >= 0.45 x its solo
   throughput.

Each measurement is ``scorepack``'s load generator (closed loop) against ``scorepack serve``
in a process of its own; the request bytes are built once. Prints one JSON document and a
summary. Record the numbers in benchmarks/RESULTS.md.

    .venv/bin/python -m benchmarks.micro.v2_rest --seconds 30            # the real run
    .venv/bin/python -m benchmarks.micro.v2_rest --tiny --seconds 2      # does it run?

``--tiny`` uses the suite's tiny TensorFlow model instead of ResNet50 (no ONNX export).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any
from urllib.parse import urlsplit

from benchmarks.suite import models, servers

from scorepack.bench import BenchConfig, run_bench
from scorepack.bench.http import HttpConnection, HttpTarget

CONCURRENCY = 32


def v2_binary_request(url: str, model: str, jpeg: bytes) -> HttpTarget:
    """POST /v2/models/MODEL/infer: a JSON header, then the JPEG as one BYTES element."""
    parts = urlsplit(url)
    element = len(jpeg).to_bytes(4, "little") + jpeg
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "datatype": "BYTES",
                    "shape": [1],
                    "parameters": {"binary_data_size": len(element)},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    body = header + element
    head = "\r\n".join(
        [
            f"POST /v2/models/{model}/infer HTTP/1.1",
            f"Host: {parts.netloc}",
            "Content-Type: application/octet-stream",
            f"Inference-Header-Content-Length: {len(header)}",
            f"Content-Length: {len(body)}",
            "Connection: keep-alive",
        ]
    )
    return HttpTarget(
        parts.hostname or "127.0.0.1", parts.port or 80, None, head.encode() + b"\r\n\r\n" + body
    )


def score_request(url: str, model: str | None, jpeg: bytes) -> HttpTarget:
    parts = urlsplit(url)
    path = "/score" + (f"?model={model}" if model else "")
    head = "\r\n".join(
        [
            f"POST {path} HTTP/1.1",
            f"Host: {parts.netloc}",
            "Content-Type: image/jpeg",
            f"Content-Length: {len(jpeg)}",
            "Connection: keep-alive",
        ]
    )
    return HttpTarget(
        parts.hostname or "127.0.0.1", parts.port or 80, None, head.encode() + b"\r\n\r\n" + jpeg
    )


def drive(
    url: str, target: HttpTarget, seconds: float, concurrency: int = CONCURRENCY
) -> dict[str, Any]:
    config = BenchConfig(
        url=url,
        body=b"",
        concurrency=concurrency,
        duration_s=seconds,
        warmup_s=min(5.0, seconds / 4),
    )
    result = run_bench(config, connect=lambda: HttpConnection(target))
    if result.errors:
        raise RuntimeError(f"{result.errors} failed requests against {url}")
    return {"rps": round(result.rps, 1), "latency_ms": result.latency_ms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--drive", nargs=2, metavar=("URL", "MODEL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    jpeg = (models.small_image() if args.tiny else models.SAMPLE).read_bytes()
    if args.drive:  # one load generator for the two-model run, in its own process
        url, name = args.drive
        print(json.dumps(drive(url, score_request(url, name, jpeg), args.seconds)))
        return
    model = models.tiny_tensorflow() if args.tiny else models.resnet50_onnx()
    out: dict[str, Any] = {"model": f"{model.label}/{model.name}", "concurrency": CONCURRENCY}

    # 1. /score against V2 binary REST, one model
    cmd = [*servers.SCOREPACK, "serve", f"m={model.path}", *model.serve_args, "--port", "0"]
    with servers.running(cmd, ready_path="/v2/health/ready") as server:
        url = server.url
        out["score"] = drive(url, score_request(url, "m", jpeg), args.seconds)
        out["v2_binary"] = drive(url, v2_binary_request(url, "m", jpeg), args.seconds)
        out["score_again"] = drive(url, score_request(url, "m", jpeg), args.seconds)
    score = (out["score"]["rps"] + out["score_again"]["rps"]) / 2
    out["v2_binary_over_score"] = round(out["v2_binary"]["rps"] / score, 3)

    # 2. two models in one server: solo, then both at once
    cmd = [
        *servers.SCOREPACK,
        "serve",
        f"a={model.path}",
        f"b={model.path}",
        *model.serve_args,
        "--port",
        "0",
    ]
    with servers.running(cmd, ready_path="/v2/health/ready") as server:
        url = server.url
        solo = {
            name: drive(url, score_request(url, name, jpeg), args.seconds) for name in ("a", "b")
        }
        # both at once, each load generator in a process of its own (one process's GIL
        # would otherwise be the bottleneck of both)
        drivers = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.micro.v2_rest",
                    "--drive",
                    url,
                    name,
                    "--seconds",
                    str(args.seconds),
                    *(["--tiny"] if args.tiny else []),
                ],
                stdout=subprocess.PIPE,
                text=True,
                cwd=servers.ROOT,
            )
            for name in ("a", "b")
        ]
        both = {
            name: json.loads(proc.communicate()[0])
            for name, proc in zip(("a", "b"), drivers, strict=True)
        }
    out["two_models"] = {
        name: {
            "solo": solo[name],
            "together": both[name],
            "ratio": round(both[name]["rps"] / solo[name]["rps"], 3),
        }
        for name in ("a", "b")
    }
    print(json.dumps(out, indent=2))
    print(
        f"V2 binary / score: {out['v2_binary_over_score']} (target >= 0.95); two models: "
        + ", ".join(f"{n} {v['ratio']}" for n, v in out["two_models"].items())
        + " (target >= 0.45 each)",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
