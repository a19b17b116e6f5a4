"""In-process limits: decode + preprocess + model, no HTTP, one image after another.

Run in its own process per backend (``python -m benchmarks.suite.inprocess ...``), so one
framework's thread pools never share a process with another's.

Two decode paths are measured:

* ``article`` — plain Pillow as the article's readers write it: open, convert to RGB,
  resize to the model's size, then normalise in NumPy;
* ``scorepack`` — the decode the server runs (``scorepack.codecs.decode_image``; for a
  backend that decodes JPEGs itself, e.g. ``-O gpu_decode=true``, the header check of
  ``scorepack.codecs.encoded_image`` here and the decode inside the model call).

Each batch decodes its images one after another, stacks them and calls the model once.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from scorepack.codecs import decode_image, encoded_image
from scorepack.loading import resolve_backend
from scorepack.preprocess import ImagePlan, PreprocessConfig, plan_image


def article_decode(body: bytes, plan: ImagePlan) -> np.ndarray:
    """Plain Pillow decode and resize, then normalisation in NumPy: one row."""
    image = Image.open(io.BytesIO(body)).convert("RGB").resize((plan.width, plan.height))
    pixels = np.asarray(image, dtype=np.float32)
    if plan.color == "BGR":
        pixels = pixels[:, :, ::-1]
    pixels = (pixels * plan.scale - np.asarray(plan.mean, np.float32)) / np.asarray(
        plan.std, np.float32
    )
    if plan.layout == "NCHW":
        pixels = pixels.transpose(2, 0, 1)
    return np.ascontiguousarray(pixels, dtype=plan.dtype)[None]


def scorepack_decode(body: bytes, plan: ImagePlan) -> np.ndarray:
    """What the server does with the same bytes: one row."""
    return decode_image(body, plan).inputs[plan.input]


def scorepack_encoded(body: bytes, plan: ImagePlan) -> np.ndarray:
    """What the server does for a backend that decodes JPEGs itself: the checked bytes."""
    return encoded_image(body, plan).inputs[plan.input]


Decoder = Callable[[bytes, ImagePlan], np.ndarray]


def measure(
    backend: str,
    model: Path,
    preset: str,
    image: Path,
    batches: list[int],
    seconds: float,
    options: dict[str, str],
    label: str,
    device: str = "cpu",
) -> list[dict[str, object]]:
    spec = resolve_backend(model, backend)
    instance = spec.create(model, device=device, options=options)
    instance.load()
    plan = plan_image(instance.signature, PreprocessConfig(preset=preset, resize="stretch"))
    assert plan is not None
    # asked once, as the Scorer does: the backend may then take JPEG bytes
    encoded = instance.accepts_encoded_images(plan)
    decoders: dict[str, Decoder] = {
        "article": article_decode,
        "scorepack": scorepack_encoded if encoded else scorepack_decode,
    }
    body = image.read_bytes()
    results = []
    for variant, decode in decoders.items():
        for batch in batches:

            def one_batch(decode: Decoder = decode, batch: int = batch) -> None:
                rows = [decode(body, plan) for _ in range(batch)]
                instance.predict({plan.input: np.concatenate(rows)})

            one_batch()  # warm-up at this batch size
            calls, started = 0, time.perf_counter()
            while calls < 2 or time.perf_counter() - started < seconds:
                one_batch()
                calls += 1
            elapsed = time.perf_counter() - started
            results.append(
                {
                    "backend": label,
                    "device": device,
                    "options": [f"{k}={v}" for k, v in sorted(options.items())],
                    "decode": variant,
                    "image_decode": "backend" if encoded and variant == "scorepack" else "cpu",
                    "batch": batch,
                    "images_per_s": round(calls * batch / elapsed, 2),
                    "batch_latency_ms": round(elapsed / calls * 1000, 2),
                    "calls": calls,
                }
            )
    instance.unload()
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--preset", required=True)
    parser.add_argument("--image", type=Path, required=True)
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("-O", "--option", action="append", default=[], help="KEY=VALUE")
    parser.add_argument("--label", default="")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    options = dict(item.split("=", 1) for item in args.option)
    print(
        json.dumps(
            measure(
                args.backend,
                args.model,
                args.preset,
                args.image,
                batches,
                args.seconds,
                options,
                args.label or args.backend,
                args.device,
            )
        )
    )


if __name__ == "__main__":
    main()
