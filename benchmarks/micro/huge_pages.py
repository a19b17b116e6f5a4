"""The model call with and without glibc's huge pages (scorepack/hugepages.py), per backend.

Each arm runs in fresh processes (glibc reads ``GLIBC_TUNABLES`` only at start): ``off``
(``glibc.malloc.hugetlb=0``) and ``on`` (``=1``, what scorepack's services run with), and
for PyTorch also ``torch`` (PyTorch's own ``THP_MEM_ALLOC_ENABLE=1``, which asks for huge
pages for its own large tensors only). A process loads ResNet50 with the backend (no
server), times batch-1 and batch-8 calls on one random batch for ``--seconds`` each, and
reports the medians, its resident memory and how much of it is on huge pages
(``AnonHugePages``). Arms alternate within each round and swap order every round; the
summary is the median over rounds.

    .venv/bin/python -m benchmarks.micro.huge_pages                        # ~6 min
    .venv/bin/python -m benchmarks.micro.huge_pages --rounds 1 --seconds 1 --backends onnx
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parents[2]
ARMS = {
    "off": {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"},
    "on": {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"},
    "torch": {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0", "THP_MEM_ALLOC_ENABLE": "1"},
}


def _proc_kib(pid: int, path: str, key: str) -> int:
    with open(f"/proc/{pid}/{path}", encoding="ascii") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key))


def child(backend: str, seconds: float) -> dict[str, Any]:
    """In this process: load ResNet50 with ``backend``, time batch 1 and 8."""
    import numpy as np
    from benchmarks.suite import models

    from scorepack.loading import resolve_backend
    from scorepack.openmp import bound_idle_spin

    bound_idle_spin()  # as the server does before a model loads
    path = str(models.resnet50(backend).path)
    model = resolve_backend(path).create(path, device="cpu", options=None)
    model.load()
    spec = model.signature.inputs[0]
    out: dict[str, Any] = {}
    for batch in (1, 8):
        shape = (batch, *(int(d) for d in spec.shape[1:]))  # type: ignore[arg-type]
        x = {spec.name: np.random.default_rng(0).random(shape, dtype=np.float32)}
        for _ in range(3):
            model.predict(x)
        times = []
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            began = time.perf_counter()
            model.predict(x)
            times.append(time.perf_counter() - began)
        out[f"b{batch}_ms"] = 1000 * statistics.median(times)
    out["rss_mib"] = _proc_kib(os.getpid(), "status", "VmRSS") // 1024
    out["huge_mib"] = _proc_kib(os.getpid(), "smaps_rollup", "AnonHugePages") // 1024
    return out


def run(backend: str, arm: str, seconds: float) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    cmd = [sys.executable, "-m", "benchmarks.micro.huge_pages", "--child", backend]
    done = subprocess.run(
        [*cmd, "--seconds", str(seconds)],
        env={**env, **ARMS[arm]},
        capture_output=True,
        text=True,
        cwd=HERE,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{backend} {arm} failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="pytorch,onnx,tensorflow")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0, help="per batch size")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.seconds)))
        return
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for round_ in range(args.rounds):
        for backend in args.backends.split(","):
            arms = ["off", "on", *(["torch"] if backend == "pytorch" else [])]
            for arm in arms if round_ % 2 == 0 else arms[::-1]:
                outcome = run(backend, arm, args.seconds)
                runs.setdefault(backend, {}).setdefault(arm, []).append(outcome)
                print(f"round {round_ + 1} {backend} {arm}: {outcome}", file=sys.stderr)
    summary: dict[str, Any] = {}
    for backend, arms_run in runs.items():
        summary[backend] = {
            arm: {
                key: round(statistics.median(r[key] for r in rs), 2)
                for key in ("b1_ms", "b8_ms", "rss_mib", "huge_mib")
            }
            for arm, rs in arms_run.items()
        }
        off = summary[backend]["off"]
        for arm, row in summary[backend].items():
            if arm != "off":
                row["b1_over_off"] = round(row["b1_ms"] / off["b1_ms"], 3)
                row["b8_over_off"] = round(row["b8_ms"] / off["b8_ms"], 3)
        print(
            "  ".join(
                f"{backend} {arm}: b1 {row['b1_ms']:.2f} b8 {row['b8_ms']:.2f} ms "
                f"rss {row['rss_mib']:.0f} huge {row['huge_mib']:.0f} MiB"
                for arm, row in summary[backend].items()
            ),
            file=sys.stderr,
        )
    print(json.dumps({"summary": summary, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
