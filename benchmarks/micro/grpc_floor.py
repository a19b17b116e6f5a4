"""The floor under a Python gRPC server: what grpcio costs per call with no work at all.

``protocols_native`` measures the whole V2 gRPC path (service, codec, decode, batcher,
model) against ``/score``. This measures what is left when all of scorepack is taken away:
servers that answer every call with fixed bytes, driven by the same native load generator
(h2load, ``-c`` connections each keeping one call in flight) and measured the same way
(the server's CPU and context switches per call, all its threads, from /proc). Each server
runs in a process of its own (this file, ``--serve VARIANT``):

* ``asgi``: uvicorn (httptools, uvloop when installed, as ``scorepack serve``) with a bare
  ASGI app over HTTP/1.1: the HTTP layer under ``/score``, for scale;
* ``sync``: ``grpc.server`` on a thread pool, as scorepack's (a registered method,
  identity (de)serialisers: no protobuf);
* ``sync-hop``: the same, and each call hands a no-op to another thread and waits for it,
  as a call waits for its decode thread and its model call: what one thread hop costs;
* ``sync-nofork``: ``sync`` with ``GRPC_ENABLE_FORK_SUPPORT=0``;
* ``sync-poll``: ``sync`` with ``GRPC_POLL_STRATEGY=poll``;
* ``sync-throughput``: ``sync`` with ``grpc.optimization_target=throughput``;
* ``sync-no-cbcq``: ``sync`` with gRPC core's ``event_engine_callback_cq`` experiment
  (on by default in grpcio 1.85) turned off (``GRPC_EXPERIMENTS``);
* ``aio``: ``grpc.aio.server`` with an async handler (one event loop, no pool).

    .venv/bin/python -m benchmarks.micro.grpc_floor                          # all, 3 rounds
    .venv/bin/python -m benchmarks.micro.grpc_floor --requests 1000 --rounds 1   # runs?

The variants take turns within each round; the summary is each one's median. CPU per call
is meaningful on a busy machine too (run it under ``nice``); req/s only on a quiet one.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks.micro.grpc_cpu import _server_cpu, _server_switches
from benchmarks.micro.protocols_native import Target, ensure_h2load, h2load
from benchmarks.suite import servers

VARIANTS = (
    "asgi",
    "sync",
    "sync-hop",
    "sync-nofork",
    "sync-poll",
    "sync-throughput",
    "sync-no-cbcq",
    "aio",
)
#: the environment each variant's server process gets on top of this one's
_ENV = {
    "sync-nofork": {"GRPC_ENABLE_FORK_SUPPORT": "0"},
    "sync-poll": {"GRPC_POLL_STRATEGY": "poll"},
    "sync-no-cbcq": {"GRPC_EXPERIMENTS": "-event_engine_callback_cq"},
}
METHOD = "/inference.GRPCInferenceService/ModelInfer"
#: about the size of a tiny model's ModelInferResponse (ten FP32 scores and their names)
ANSWER = b"\n\x04tiny" + b"\0" * 80
#: about the size of the ModelInferRequest holding a 64x64 JPEG
REQUEST = b"\0" * 2200


def _serve(variant: str, port: int) -> None:
    """Run one variant's server on ``port`` until killed (the child process's whole life)."""
    if variant == "asgi":
        import uvicorn

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return
            more = True
            while more:
                more = (await receive()).get("more_body", False)
            headers = [(b"content-type", b"application/json")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": ANSWER})

        uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
        return
    import grpc

    if variant == "aio":

        async def answer_async(request: bytes, context: Any) -> bytes:
            return ANSWER

        async def run() -> None:
            server = grpc.aio.server()
            handler = grpc.unary_unary_rpc_method_handler(answer_async)
            service, method = METHOD.strip("/").split("/")
            server.add_registered_method_handlers(service, {method: handler})
            server.add_insecure_port(f"127.0.0.1:{port}")
            await server.start()
            await server.wait_for_termination()

        asyncio.run(run())
        return
    hop = ThreadPoolExecutor(1, thread_name_prefix="hop") if variant == "sync-hop" else None

    def answer(request: bytes, context: Any) -> bytes:
        if hop is not None:
            done: Future[None] = Future()
            hop.submit(done.set_result, None)
            done.result()
        return ANSWER

    options: list[tuple[str, Any]] = [("grpc.so_reuseport", 0)]
    if variant == "sync-throughput":
        options.append(("grpc.optimization_target", "throughput"))
    server = grpc.server(ThreadPoolExecutor(1024), options=options)
    service, method = METHOD.strip("/").split("/")
    server.add_registered_method_handlers(
        service, {method: grpc.unary_unary_rpc_method_handler(answer)}
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    threading.Event().wait()


@contextmanager
def serving(variant: str) -> Iterator[tuple[int, Target]]:
    """One variant's server process, ready: its pid and h2load's target."""
    port = servers.free_port()
    env = {**os.environ, **_ENV.get(variant, {})}
    cmd = [sys.executable, "-m", "benchmarks.micro.grpc_floor", "--serve", variant]
    proc = subprocess.Popen([*cmd, "--port", str(port)], env=env, cwd=servers.ROOT)
    folder = Path(tempfile.mkdtemp(prefix="grpc-floor-"))
    try:
        if variant == "asgi":
            body = folder / "body.bin"
            body.write_bytes(REQUEST)
            target = Target(variant, f"http://127.0.0.1:{port}/score", (), body, True)
        else:
            body = folder / "call.bin"
            # one uncompressed gRPC message: flag 0, its length, the bytes
            body.write_bytes(b"\0" + struct.pack(">I", len(REQUEST)) + REQUEST)
            headers = ("content-type: application/grpc", "te: trailers")
            target = Target(variant, f"http://127.0.0.1:{port}{METHOD}", headers, body, False)
        _wait_listening(port, proc)
        yield proc.pid, target
    finally:
        proc.terminate()
        proc.wait(30)
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()


def _wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    import socket

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited ({proc.returncode})")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"nothing listens on {port} after 120 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("-c", "--concurrency", type=int, default=8)
    parser.add_argument("--requests", type=int, default=5000, help="measured, per run")
    parser.add_argument("--warmup", type=int, default=500, help="calls before each run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    if args.serve:
        _serve(args.serve, args.port)
        return
    tool = ensure_h2load()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    runs: dict[str, list[tuple[float, float, float]]] = {}
    for round_ in range(args.rounds):
        for variant in variants:
            with serving(variant) as (pid, target):
                h2load(tool, target, args.concurrency, args.warmup, timeout=600)
                cpu0, switches0 = _server_cpu(pid), _server_switches(pid)
                run = h2load(tool, target, args.concurrency, args.requests, timeout=600)
                server_ms = 1000 * (_server_cpu(pid) - cpu0) / args.requests
                switches = (_server_switches(pid) - switches0) / args.requests
            runs.setdefault(variant, []).append((server_ms, run["rps"], switches))
            print(
                f"round {round_ + 1} {variant:16} server {server_ms:.3f} ms/call  "
                f"{switches:.1f} switches/call  {run['rps']:.0f} calls/s",
                file=sys.stderr,
                flush=True,
            )
    print(f"\nno work per call, c={args.concurrency}: median of {args.rounds} rounds")
    print(
        f"{'variant':16} {'server ms/call':>14} {'switches':>8} {'calls/s':>8}  server ms per round"
    )
    for variant, done in runs.items():
        cpu, rps, switches = (sorted(run[i] for run in done)[len(done) // 2] for i in range(3))
        rounds = " ".join(f"{run[0]:.3f}" for run in done)
        print(f"{variant:16} {cpu:14.3f} {switches:8.1f} {rps:8.0f}  {rounds}")
    print(
        "(calls/s means something only on a quiet machine; CPU per call anywhere; switches:"
        " the server's context switches per call)"
    )


if __name__ == "__main__":
    main()
