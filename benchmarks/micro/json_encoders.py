"""Which JSON encoder for responses: orjson or ujson (and the stdlib, for scale)?

Encodes what the server really sends for a ResNet50-sized classifier: the top-5 body, and
the body with raw outputs (1000 float32 scores), for one row and for 32 rows.

    .venv/bin/python benchmarks/micro/json_encoders.py
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import ujson

from scorepack.postprocess import OutputPlan, ScoreParams


def _bodies(rows: int) -> dict[str, dict[str, Any]]:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(rows, 1000)).astype(np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    plan = OutputPlan(classifier="probs", top_k=5, labels=None)
    out = {"probs": probs}
    return {
        "top-5": plan.build(out, ScoreParams()),
        "top-5 + raw": plan.build(out, ScoreParams(raw=True)),
    }


ENCODERS: dict[str, tuple[Callable[[Any], bytes], bool]] = {
    # name: (encode, takes NumPy arrays as they are)
    "orjson": (lambda d: orjson.dumps(d, option=orjson.OPT_SERIALIZE_NUMPY), True),
    "ujson": (lambda d: ujson.dumps(d).encode(), False),
    "json": (lambda d: json.dumps(d).encode(), False),
}


def _time(fn: Callable[[], object], seconds: float = 0.5) -> float:
    fn()
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        fn()
        calls += 1
    return (time.perf_counter() - started) / calls * 1e6


def main() -> None:
    print("| body | rows | encoder | µs per body | bytes |")
    print("| --- | --- | --- | --- | --- |")
    for rows in (1, 32):
        for name, body in _bodies(rows).items():
            for encoder, (encode, takes_numpy) in ENCODERS.items():

                def fn(
                    body: dict[str, Any] = body, encode: Any = encode, np_ok: bool = takes_numpy
                ) -> bytes:
                    if not np_ok and "outputs" in body:
                        # the .tolist() a NumPy-blind encoder needs is part of its cost
                        body = {
                            **body,
                            "outputs": {k: v.tolist() for k, v in body["outputs"].items()},
                        }
                    return bytes(encode(body))

                size = len(fn())
                print(f"| {name} | {rows} | {encoder} | {_time(fn):.1f} | {size} |")


if __name__ == "__main__":
    main()
