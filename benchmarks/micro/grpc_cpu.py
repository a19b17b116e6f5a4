"""CPU time per request of each protocol, server side and load-generator side.

On a small machine the load generator runs beside the server, so a protocol's rate is
bounded by the CPU one request costs on BOTH sides. CPU seconds are what contention barely
distorts (a busy machine stretches wall time, not the work done), so this measures them:
one ``scorepack serve MODEL --grpc-port P`` in a process of its own, loaded in this
process by ``scorepack bench``'s own connections (``/score``, V2 REST binary, V2 gRPC:
the same JPEG, the same concurrency), protocol after protocol, in rounds. For each
protocol it prints the server's CPU per request (all its threads, from /proc) and this
process's (the load generator's, getrusage), and their sum: the protocol's cost per
request on a machine where both share the cores.

    .venv/bin/python -m benchmarks.micro.grpc_cpu                      # tiny model, c=8
    .venv/bin/python -m benchmarks.micro.grpc_cpu --requests 300 --rounds 1   # does it run?
    .venv/bin/python -m benchmarks.micro.grpc_cpu --model resnet50-onnx -c 32 --requests 300

The req/s column is only meaningful on a quiet machine; the CPU columns are meaningful
anywhere (run it under ``nice`` on a shared one). ``--profile DIR`` also samples the server
with py-spy (``DIR/server-PROTOCOL.txt``, collapsed stacks of threads holding the GIL,
native frames included) and profiles the load generator with cProfile
(``DIR/client-PROTOCOL.prof``) during the last round's measured runs.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from benchmarks.suite import models, servers

from scorepack.bench import BenchConfig, run_bench
from scorepack.bench.http import HttpConnection, http_target
from scorepack.bench.protocols import connections, prepare_v2_load
from scorepack.bench.run import Connection

PROTOCOLS = ("score", "v2", "grpc")
_TICK = os.sysconf("SC_CLK_TCK")


def _server_cpu(pid: int) -> float:
    """User + system CPU seconds of every thread of process ``pid`` so far."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime (fields 14, 15)


def _server_switches(pid: int) -> int:
    """Context switches (voluntary and not) of every thread of process ``pid`` so far.

    A thread hand-off, a wait for the GIL and a wake-up by gRPC's poller each cost one:
    unlike CPU seconds, the count does not grow when other work slows the machine down,
    so it shows a change in how often a request changes threads where CPU time is noise.
    """
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            status = (task / "status").read_text()
        except OSError:  # the thread ended
            continue
        for line in status.splitlines():
            if "ctxt_switches:" in line:  # voluntary_ and nonvoluntary_
                total += int(line.split()[1])
    return total


def _threads_cpu(pid: int) -> dict[str, float]:
    """CPU seconds so far of each thread of ``pid``, summed by thread name."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended
            continue
        # numbered pool threads (decode_0, ThreadPoolExecutor-0_1) count as one name
        key = name.rstrip("0123456789_-")
        out[key] = out.get(key, 0.0) + (int(fields[11]) + int(fields[12])) / _TICK
    return out


def _rows_per_call(batch_sizes: dict[int, int]) -> float:
    calls = sum(requests / size for size, requests in batch_sizes.items() if size)
    return sum(batch_sizes.values()) / calls if calls else 0.0


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _connect(protocol: str, url: str, grpc_url: str, body: bytes) -> Callable[[], Connection]:
    if protocol == "score":
        target = http_target(url, body)
        return lambda: HttpConnection(target)
    load = prepare_v2_load(protocol, grpc_url if protocol == "grpc" else url, body)
    return connections(load, 60.0)


def measure(
    pid: int, connect: Callable[[], Connection], url: str, concurrency: int, requests: int
) -> dict[str, Any]:
    """One closed-loop run of ``requests`` requests; CPU per request on each side."""
    config = BenchConfig(
        url=url, body=b"", concurrency=concurrency, duration_s=3600, max_requests=requests
    )
    threads0 = _threads_cpu(pid)
    server0, client0, wall0 = _server_cpu(pid), _own_cpu(), time.perf_counter()
    result = run_bench(config, connect=connect)
    wall = time.perf_counter() - wall0
    server, client = _server_cpu(pid) - server0, _own_cpu() - client0
    done = max(1, result.requests)
    threads = {
        name: round(1000 * (cpu - threads0.get(name, 0.0)) / done, 3)
        for name, cpu in _threads_cpu(pid).items()
    }
    return {
        "requests": result.requests,
        "errors": result.errors,
        "server_ms": 1000 * server / done,
        "client_ms": 1000 * client / done,
        "total_ms": 1000 * (server + client) / done,
        "rps": result.requests / wall,
        "batch_sizes": result.batch_sizes,
        # rows per model call, from the batch each request says it rode in (a call of
        # n rows answers n requests): fragmented batches cost model calls
        "rows_per_call": _rows_per_call(result.batch_sizes),
        "server_threads_ms": {k: v for k, v in sorted(threads.items()) if v > 0},
    }


@contextmanager
def profiling(pid: int, out: Path | None, protocol: str) -> Iterator[None]:
    """py-spy on the server and cProfile here while the block runs (nothing if no ``out``)."""
    if out is None:
        yield
        return
    out.mkdir(parents=True, exist_ok=True)
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy"
    cmd = [spy, "record", "-p", str(pid), "-r", "250", "-f", "raw", "--gil", "--threads"]
    sampler = subprocess.Popen(
        [*cmd, "-o", str(out / f"server-{protocol}.txt")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)  # py-spy attaches
    profile = cProfile.Profile()
    profile.enable()
    try:
        yield
    finally:
        profile.disable()
        profile.dump_stats(out / f"client-{protocol}.prof")
        sampler.send_signal(signal.SIGINT)
        sampler.wait(30)


@contextmanager
def serving(
    model: models.BenchModel, compare: str | None
) -> Iterator[dict[str, tuple[int, str, str]]]:
    """This tree's server (and ``compare``'s, from git): label → (pid, HTTP URL, gRPC URL)."""
    with ExitStack() as stack:
        found = {}
        trees: list[tuple[str, dict[str, str] | None]] = [("this tree", None)]
        if compare:
            # the core as it was at COMPARE, ahead of this tree's on the server's path
            old = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="grpc-cpu-")))
            archive = subprocess.run(
                ["git", "archive", compare, "core/scorepack"],
                check=True,
                capture_output=True,
                cwd=servers.ROOT,
            ).stdout
            subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
            trees.append((compare, {"PYTHONPATH": str(old / "core")}))
        for label, env in trees:
            port = servers.free_port()
            server = stack.enter_context(servers.embedded(model, "--grpc-port", str(port), env=env))
            found[label] = (server.proc.pid, server.url, f"grpc://127.0.0.1:{port}")
        yield found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("tiny", "resnet50-onnx"), default="tiny")
    parser.add_argument("-c", "--concurrency", type=int, default=8)
    parser.add_argument("--requests", type=int, default=2000, help="measured, per run")
    parser.add_argument("--warmup", type=int, default=200, help="requests before each run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--protocols", default=",".join(PROTOCOLS))
    parser.add_argument(
        "--compare", metavar="GIT_REF", help="also serve the core as of GIT_REF (e.g. main)"
    )
    parser.add_argument("--json", action="store_true", help="print every run as JSON too")
    parser.add_argument("--threads", action="store_true", help="server CPU by thread too")
    parser.add_argument("--profile", type=Path, help="profile the last round into this folder")
    args = parser.parse_args()
    protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]
    model = models.tiny_tensorflow() if args.model == "tiny" else models.resnet50("onnx")
    body = models.small_image().read_bytes() if args.model == "tiny" else models.SAMPLE.read_bytes()
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    with serving(model, args.compare) as found:
        connect = {
            (label, p): _connect(p, url, grpc_url, body)
            for label, (_, url, grpc_url) in found.items()
            for p in protocols
        }
        for round_ in range(args.rounds):
            # interleaved, so a machine that drifts favours no protocol and no tree
            for (label, protocol), conn in connect.items():
                pid, url, _ = found[label]
                measure(pid, conn, url, args.concurrency, args.warmup)
                last = round_ == args.rounds - 1 and label == "this tree"
                with profiling(pid, args.profile if last else None, protocol):
                    run = measure(pid, conn, url, args.concurrency, args.requests)
                runs.setdefault((label, protocol), []).append(run)
                print(
                    f"round {round_ + 1} {label} {protocol:5} server {run['server_ms']:.3f} ms  "
                    f"client {run['client_ms']:.3f} ms  total {run['total_ms']:.3f} ms/req  "
                    f"({run['rps']:.0f} req/s, errors {run['errors']})",
                    file=sys.stderr,
                    flush=True,
                )
                if args.threads:
                    print(f"    server threads: {run['server_threads_ms']}", file=sys.stderr)
    print(f"\n{args.model}, c={args.concurrency}: CPU ms per request (median of {args.rounds})")
    print(
        f"{'server':12} {'protocol':9} {'server':>8} {'client':>8} {'total':>8} "
        f"{'rows/call':>9} {'req/s':>7}"
    )
    for (label, protocol), done in runs.items():
        server, client, rows, rps = (
            sorted(r[k] for r in done)[len(done) // 2]
            for k in ("server_ms", "client_ms", "rows_per_call", "rps")
        )
        print(
            f"{label:12} {protocol:9} {server:8.3f} {client:8.3f} {server + client:8.3f} "
            f"{rows:9.2f} {rps:7.0f}"
        )
    print("(req/s means something only on a quiet machine; the CPU columns anywhere)")
    if args.json:
        print(json.dumps({f"{k[0]} {k[1]}": v for k, v in runs.items()}, indent=1))


if __name__ == "__main__":
    main()
