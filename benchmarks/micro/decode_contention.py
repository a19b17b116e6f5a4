"""Does decoding slow the model down? The options of issue 13, side by side.

One ResNet50 (the suite's, ``--backend onnx|tensorflow|pytorch``, built on first use) is
called at ``--batch`` in a loop on one thread, the way the batcher calls it, while decode
threads (scorepack's :class:`~scorepack.decoding.DecodeStage`) decode a 640x480 JPEG with
``--exact-decode`` as fast as they can. Each row is one arrangement:

* ``model alone``: no decoding at all (the model's own ceiling);
* ``N threads, nice 0``: decode threads at the model's priority (before issue 13: up to
  min(8, cores + 2) threads);
* ``N threads, nice 10``: the default now, decode threads lower their priority;
* ``cores - 1 threads, nice 0``: decoding bounded by cores minus one model thread.

It prints model images/s, decoded images/s, and the model's rate as a fraction of its rate
alone. The server wants both rates high: decoding that never slows the model and still
keeps up. Run it on a quiet machine (per backend, about a minute):

    .venv/bin/python -m benchmarks.micro.decode_contention --backend onnx --seconds 10

(``--seconds 1`` is a quick check that it runs.)
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from typing import Any

import numpy as np

from scorepack.codecs import decode_image
from scorepack.decoding import DecodeSettings, DecodeStage, usable_cores
from scorepack.loading import resolve_backend
from scorepack.preprocess import PreprocessConfig, plan_image

from ..suite import models


def _arrangements(cores: int) -> list[tuple[str, int, int]]:
    """(label, decode threads, nice) for each row."""
    rows = [
        ("model alone", 0, 0),
        (f"{min(8, cores + 2)} threads, nice 0 (before)", min(8, cores + 2), 0),
        (f"{cores} threads, nice 0", cores, 0),
        (f"{cores} threads, nice 10 (default now)", cores, 10),
    ]
    if cores > 1:
        rows.append((f"{cores - 1} threads, nice 0 (cores - 1)", cores - 1, 0))
    return rows


class _Counter:
    def __init__(self) -> None:
        self.value = 0
        self.lock = threading.Lock()


def _decode_until(stop: threading.Event, done: _Counter, body: bytes, plan: Any) -> None:
    while not stop.is_set():
        decode_image(body, plan)
        with done.lock:
            done.value += 1


def measure(backend: str, batch: int, seconds: float) -> dict[str, Any]:
    """Model and decode images/s under each arrangement."""
    model = models.resnet50(backend)
    spec = resolve_backend(model.path, model.backend)
    instance = spec.create(model.path, device="cpu", options={})
    instance.load()
    config = PreprocessConfig(preset=model.preset, resize="stretch", exact_decode=True)
    plan = plan_image(instance.signature, config)
    assert plan is not None
    body = models.SAMPLE.read_bytes()
    inputs = {plan.input: np.concatenate([decode_image(body, plan).inputs[plan.input]] * batch)}
    instance.predict(inputs)  # warm-up
    cores = usable_cores()
    rows = []
    for label, threads, nice in _arrangements(cores):
        stop = threading.Event()
        decoded = _Counter()
        stage = DecodeStage(DecodeSettings(threads=max(1, threads), nice=nice))
        futures = [
            stage.pool().submit(_decode_until, stop, decoded, body, plan) for _ in range(threads)
        ]
        calls, started = 0, time.perf_counter()
        while calls < 2 or time.perf_counter() - started < seconds:
            instance.predict(inputs)
            calls += 1
        elapsed = time.perf_counter() - started
        stop.set()
        for future in futures:
            future.result()
        stage.close()
        rows.append(
            {
                "arrangement": label,
                "model_images_per_s": round(calls * batch / elapsed, 1),
                "decoded_per_s": round(decoded.value / elapsed, 1),
            }
        )
    alone = rows[0]["model_images_per_s"]
    for row in rows:
        row["model_vs_alone"] = round(row["model_images_per_s"] / alone, 3)
    instance.unload()
    return {"backend": backend, "batch": batch, "cores": cores, "seconds": seconds, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="onnx", choices=sorted(models.RESNET50))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0, help="per arrangement")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = measure(args.backend, args.batch, args.seconds)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"ResNet50 {result['backend']}, batch {result['batch']}, {result['cores']} usable "
        f"cores, {args.seconds:g} s each"
    )
    print("| arrangement | model img/s | model / alone | decoded img/s |")
    print("| --- | --- | --- | --- |")
    for r in result["rows"]:
        print(
            f"| {r['arrangement']} | {r['model_images_per_s']:.1f} | "
            f"{r['model_vs_alone']:.2f} | {r['decoded_per_s']:.1f} |"
        )


if __name__ == "__main__":
    main()
