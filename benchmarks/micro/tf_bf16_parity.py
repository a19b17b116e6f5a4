"""TensorFlow -O precision=bf16 against fp32 on ResNet50: speed and how far scores move.

Each precision runs in its own process (grappler's option is process-wide):

    .venv/bin/python benchmarks/micro/tf_bf16_parity.py

Uses the suite's cached ResNet50 (``scripts/bench`` builds it, or this script does).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def _run(precision: str, out: Path) -> float:
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    from benchmarks.suite.models import SAMPLE, resnet50_tensorflow

    import images
    from scorepack.codecs import decode_image
    from scorepack.preprocess import PreprocessConfig, plan_image
    from scorepack_tensorflow import TensorFlowBackend

    model = resnet50_tensorflow()
    backend = TensorFlowBackend(model.path, device="cpu", options={"precision": precision})
    backend.load()
    plan = plan_image(backend.signature, PreprocessConfig(preset="caffe"))
    assert plan is not None
    bodies = [SAMPLE.read_bytes()] + [images.jpeg(640, 480, seed=s) for s in range(31)]
    batch = np.concatenate([decode_image(b, plan).inputs[plan.input] for b in bodies])
    scores = next(iter(backend.predict({plan.input: batch}).values()))
    np.save(out, scores)
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < 8:
        backend.predict({plan.input: batch})
        calls += 1
    return calls * len(bodies) / (time.perf_counter() - started)


def main() -> None:
    if len(sys.argv) == 3:
        print(json.dumps(_run(sys.argv[1], Path(sys.argv[2]))))
        return
    tmp = Path("/tmp")
    speed = {}
    for precision in ("fp32", "bf16"):
        out = tmp / f"scorepack-{precision}.npy"
        done = subprocess.run(
            [sys.executable, __file__, precision, str(out)],
            capture_output=True,
            text=True,
            check=True,
        )
        speed[precision] = json.loads(done.stdout.strip().splitlines()[-1])
    a, b = np.load(tmp / "scorepack-fp32.npy"), np.load(tmp / "scorepack-bf16.npy")
    top1 = float((a.argmax(1) == b.argmax(1)).mean())
    top5 = float(
        np.mean(
            [
                len(set(np.argsort(-x)[:5]) & set(np.argsort(-y)[:5])) / 5
                for x, y in zip(a, b, strict=True)
            ]
        )
    )
    print(f"batch 32: fp32 {speed['fp32']:.1f} img/s, bf16 {speed['bf16']:.1f} img/s")
    print(
        f"top-1 agreement {top1:.3f}, top-5 overlap {top5:.3f}, max |dp| {np.abs(a - b).max():.4f}"
    )


if __name__ == "__main__":
    main()
