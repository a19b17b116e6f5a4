"""Where the time goes at c=32: the embedded server under ``scorepack bench`` (ResNet50,
ONNX Runtime), sampled by py-spy (``--idle --threads``), summarised per thread role and
per activity (model call, decode, waiting, event loop, ...).

    .venv/bin/python -m benchmarks.micro.profile_c32 --seconds 20            # defaults
    .venv/bin/python -m benchmarks.micro.profile_c32 --seconds 20 --giveway  # as before

Needs ``py-spy`` (a dev dependency) and permission to ptrace the server (root, or
``kernel.yama.ptrace_scope=0``). Run on a quiet machine; record the tables in
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.suite import models, servers
from benchmarks.suite.__main__ import NO_GIVE_WAY

# What a sampled stack was doing, from the frames (first rule that matches wins). A
# thread whose leaf is one of WAITING is idle: it waits for work, a lock or the kernel.
WAITING = (
    "_worker (concurrent/futures/thread.py:81)",  # a pool thread waiting for work
    "Runner.run (asyncio/runners.py",  # the event loop in epoll (or in C code: see cpu)
    "Condition.wait (",
    "Event.wait (",
    "Queue.get (",
    "select (",
)
ACTIVITIES = (
    (
        "model call",
        ("Session.run (", ".predict (", "forward (", "_call_model", "__call__ (tensorflow"),
    ),
    ("decode", ("PIL/", "codecs.py", "preprocess.py", "Scorer.decode")),
    ("http", ("starlette/", "uvicorn/", "h11/", "httptools", "server/routes", "server/app.py")),
    ("batching", ("batching.py",)),
    ("hand-off to the event loop", ("asyncio/futures.py", "call_soon_threadsafe")),
    ("telemetry", ("telemetry/",)),
)


def classify(frames: list[str]) -> str:
    if any(frames[-1].startswith(w) for w in WAITING):
        return "idle"
    for name, needles in ACTIVITIES:
        if any(n in f for f in frames for n in needles):
            return name
    return "other"


def role(thread: str) -> str:
    name = thread.split(": ", 1)[-1].rstrip("_0123456789")
    if "decode" in name:
        return "decode threads"
    if name.startswith("scorepack-"):
        return "model thread"
    if name == "MainThread":
        return "event loop (main thread)"
    return name


def summarise(raw: Path) -> dict[str, dict[str, int]]:
    """py-spy --format raw: ``thread (TID): NAME;frame;...;leaf COUNT`` per line."""
    table: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for line in raw.read_text(encoding="utf-8", errors="replace").splitlines():
        stack_text, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack_text.split(";")
        table[role(frames[0])][classify(frames[1:] or frames)] += int(count)
    return {k: dict(v.most_common()) for k, v in table.items()}


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds so far per thread id (all threads: Python's and the frameworks' own)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        out[int(task.name)] = (int(fields[11]) + int(fields[12])) / tick
    return out


def thread_roles(raw: Path) -> dict[int, str]:
    """Thread id -> role, for the Python threads py-spy saw (``thread (TID): NAME``)."""
    roles = {}
    for line in raw.read_text(encoding="utf-8", errors="replace").splitlines():
        head = line.split(";", 1)[0]
        if head.startswith("thread (") and "): " in head:
            tid = head[len("thread (") : head.index(")")]
            if tid.isdigit():
                roles[int(tid)] = role(head)
    return roles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--giveway", action="store_true", help="the decode stage as before")
    parser.add_argument("--default-decode", action="store_true", help="not --exact-decode")
    parser.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="prof-")))
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    model = models.resnet50("onnx", "cpu")
    extra = () if args.default_decode else ("--exact-decode",)
    env = NO_GIVE_WAY if args.giveway else None
    raw = args.out / "c32.txt"
    with servers.embedded(model, *extra, env=env) as server:
        result: dict = {}

        def drive() -> None:
            result.update(
                servers.load(server.url, models.SAMPLE, args.concurrency, args.seconds + 6, 3)
            )

        loader = threading.Thread(target=drive)
        loader.start()
        threading.Event().wait(5)  # past the warm-up
        cpu_before, t0 = thread_cpu(server.proc.pid), time.monotonic()
        subprocess.run(
            [
                spy,
                "record",
                "--pid",
                str(server.proc.pid),
                "--idle",
                "--threads",
                "--nonblocking",
                "--rate",
                "200",
                "--duration",
                str(int(args.seconds)),
                "--format",
                "raw",
                "--output",
                str(raw),
            ],
            check=True,
            capture_output=True,
        )
        wall = time.monotonic() - t0
        cpu_after = thread_cpu(server.proc.pid)
        loader.join()
    # cores used per thread role over the sampled window (1.0 = one core all the time);
    # threads py-spy did not see run no Python: the framework's own pool (ONNX Runtime's)
    roles = thread_roles(raw)
    used: dict[str, float] = collections.defaultdict(float)
    for tid, seconds in cpu_after.items():
        name = roles.get(tid, "framework's native threads")
        used[name] += (seconds - cpu_before.get(tid, 0.0)) / wall
    cores = {k: round(v, 2) for k, v in sorted(used.items(), key=lambda kv: -kv[1])}
    summary = summarise(raw)
    total = sum(sum(v.values()) for v in summary.values())
    print(
        json.dumps(
            {
                "rps": result.get("rps"),
                "p50_ms": result.get("latency_ms", {}).get("p50"),
                "raw": str(raw),
                "samples": total,
                "cores_by_thread": cores,
                "by_thread": summary,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
