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
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from benchmarks.suite import models, servers
from benchmarks.suite.__main__ import NO_GIVE_WAY

# (activity, substrings of a frame "function (file:line)"), first match from the leaf wins
ACTIVITIES = (
    ("model call", ("onnxruntime", "run_model", "InferenceSession", "_call_model", ".run (")),
    ("decode", ("PIL", "decode", "Image", "resize", "preprocess", "numpy")),
    ("event loop", ("uvloop", "asyncio", "selectors", "_run_once", "run_forever")),
    ("http", ("h11", "httptools", "uvicorn", "starlette")),
    ("batching", ("batch", "Batcher")),
)


def classify(stack: list[str], idle: bool) -> str:
    for frame in reversed(stack):
        for name, needles in ACTIVITIES:
            if any(n in frame for n in needles):
                return name if not idle else f"waiting in {name}"
    return "waiting (other)" if idle else "other"


def role(thread: str) -> str:
    t = thread.lower()
    for key in ("decode", "model", "batch", "mainthread", "asyncio", "uvicorn"):
        if key in t:
            return key
    return thread.split(" ", 1)[0][:30]


def summarise(raw: Path) -> dict[str, dict[str, int]]:
    """py-spy --format raw: ``thread (idle)?;frame;frame... count`` per line."""
    table: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for line in raw.read_text(encoding="utf-8", errors="replace").splitlines():
        stack_text, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack_text.split(";")
        head = frames[0]
        idle = False
        # py-spy puts "process ...;thread (0x..) ..." first with --threads; idle frames are
        # marked by a trailing " (idle)" on the thread or leaf with --idle
        if frames and frames[-1].endswith("(idle)"):
            idle = True
        thread_name = next((f for f in frames[:2] if f.startswith("thread")), head)
        table[role(thread_name)][classify(frames, idle)] += int(count)
    return {k: dict(v.most_common()) for k, v in table.items()}


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
        subprocess.run(
            [spy, "record", "--pid", str(server.proc.pid), "--idle", "--threads",
             "--nonblocking", "--rate", "200", "--duration", str(int(args.seconds)),
             "--format", "raw", "--output", str(raw)],
            check=True, capture_output=True,
        )
        loader.join()
    summary = summarise(raw)
    total = sum(sum(v.values()) for v in summary.values())
    print(json.dumps({"rps": result.get("rps"), "p50_ms": result.get("latency_ms", {}).get("p50"),
                      "raw": str(raw), "samples": total, "by_thread": summary}, indent=2))


if __name__ == "__main__":
    main()
