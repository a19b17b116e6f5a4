"""Does decoding scale with cores? (issue 13: N workers ≥ 0.8 × N × one worker's rate)

Decode-only throughput of scorepack's own image path (``scorepack.codecs.decode_image``:
JPEG → 224x224 float32 with ImageNet normalisation, ``--resize stretch``) on one 640x480
JPEG, with 1, 2, … N workers, as threads in one process (what the server's decode pool
is) and as processes (what one would switch to if the GIL stopped threads scaling).
Each worker decodes in a loop for ``--seconds``; a warm-up pass comes first. Prints a table
with images/s and the ratio N workers / (N × one worker), for the reduced-size decode (the
default) and the exact full-size decode (``--exact-decode``). Run it on a quiet machine:

    .venv/bin/python -m benchmarks.micro.decode_scaling --seconds 5

(``--seconds 0.5 --workers 1,2`` is a quick check that it runs.) ``--json`` prints the
numbers as JSON instead; the benchmark suite uses :func:`measure` for its report.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import threading
import time
from pathlib import Path
from typing import Any

from scorepack.codecs import decode_image
from scorepack.decoding import usable_cores
from scorepack.preprocess import ImagePlan, PreprocessConfig, plan_image
from scorepack.signature import Signature, TensorSpec

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "examples" / "images" / "sample.jpg"


def _plan(exact: bool) -> ImagePlan:
    signature = Signature(
        inputs=(TensorSpec("image", "float32", (None, 224, 224, 3)),),
        outputs=(TensorSpec("probs", "float32", (None, 1000)),),
    )
    config = PreprocessConfig(preset="imagenet", resize="stretch", exact_decode=exact)
    plan = plan_image(signature, config)
    assert plan is not None
    return plan


def _loop(body: bytes, exact: bool, seconds: float, start: Any = None) -> int:
    plan = _plan(exact)
    decode_image(body, plan)  # warm: first call pays imports and allocations
    if start is not None:
        start.wait()
    done = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        decode_image(body, plan)
        done += 1
    return done


def _threads(body: bytes, exact: bool, workers: int, seconds: float) -> float:
    start = threading.Barrier(workers + 1)
    counts = [0] * workers

    def work(i: int) -> None:
        counts[i] = _loop(body, exact, seconds, start)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    start.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - began)


def _process_worker(args: tuple[bytes, bool, float, Any]) -> int:
    body, exact, seconds, start = args
    return _loop(body, exact, seconds, start)


def _processes(body: bytes, exact: bool, workers: int, seconds: float) -> float:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager:
        start = manager.Barrier(workers + 1)
        with ctx.Pool(workers) as pool:
            result = pool.map_async(_process_worker, [(body, exact, seconds, start)] * workers)
            start.wait()
            began = time.perf_counter()
            counts = result.get()
            elapsed = time.perf_counter() - began
    return sum(counts) / elapsed


def measure(
    workers: list[int] | None = None,
    seconds: float = 3.0,
    processes: bool = True,
    image: Path = SAMPLE,
) -> dict[str, Any]:
    """Decode-only images/s for each worker count, threads (and processes), both decodes."""
    body = image.read_bytes()
    counts = workers or list(range(1, usable_cores() + 1))
    rows = []
    for exact in (False, True):
        one: dict[str, float] = {}
        for n in counts:
            row: dict[str, Any] = {"decode": "exact" if exact else "reduced", "workers": n}
            kinds = ("threads", "processes") if processes else ("threads",)
            for kind in kinds:
                rate = (_threads if kind == "threads" else _processes)(body, exact, n, seconds)
                if n == 1:
                    one[kind] = rate
                row[kind] = round(rate, 1)
                base = one.get(kind)
                row[f"{kind}_scaling"] = round(rate / (n * base), 3) if base else None
            rows.append(row)
    return {"cores": usable_cores(), "seconds": seconds, "image": image.name, "rows": rows}


def table(result: dict[str, Any]) -> str:
    """The measurement as a Markdown table."""
    kinds = [k for k in ("threads", "processes") if k in result["rows"][0]]
    head = ["decode", "workers"]
    for kind in kinds:
        head += [f"{kind} img/s", f"{kind} N / (N × 1)"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for row in result["rows"]:
        cells = [row["decode"], str(row["workers"])]
        for kind in kinds:
            scaling = row[f"{kind}_scaling"]
            cells += [f"{row[kind]:.1f}", "" if scaling is None else f"{scaling:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--workers", default="", help="comma list (default: 1..the usable cores)")
    parser.add_argument("--no-processes", action="store_true", help="threads only")
    parser.add_argument("--image", type=Path, default=SAMPLE)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    workers = [int(w) for w in args.workers.split(",") if w] or None
    result = measure(workers, args.seconds, not args.no_processes, args.image)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['cores']} usable cores, {result['image']}, {args.seconds:g} s each")
        print(table(result))


if __name__ == "__main__":
    main()
