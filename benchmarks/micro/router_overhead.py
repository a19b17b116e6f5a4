"""Does Starlette's router cost the embedded server throughput? (issue 9: at most 2 %)

Serves a tiny model (y = x, float32 [batch, 4], no framework) behind the hand-written ASGI
app the server had before (legacy_asgi.py, a frozen copy) and behind today's Starlette app,
each in its own process on one uvicorn worker, and drives each with scorepack's load
generator at concurrency 32, alternating A/B rounds so drift hits both alike. Prints each
round and the median ratio starlette/legacy. Run it on a quiet machine:

    .venv/bin/python -m benchmarks.micro.router_overhead --seconds 20 --rounds 5

(``--seconds 2 --rounds 1`` is a quick check that it runs.)
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from scorepack import Backend, Scorer, Signature, TensorSpec
from scorepack.bench import BenchConfig, run_bench
from scorepack.config import ScoringConfig
from scorepack.device import Device

ROOT = Path(__file__).resolve().parents[2]
BODY = b'{"inputs": {"x": [[1.0, 2.0, 3.0, 4.0]]}}'


class Identity(Backend):
    """y = x for x float32 [batch, 4]: the model costs next to nothing."""

    def load(self) -> None:
        self.device = Device("cpu")
        self.signature = Signature(
            inputs=(TensorSpec("x", "float32", (None, 4)),),
            outputs=(TensorSpec("y", "float32", (None, 4)),),
        )

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"y": inputs["x"]}


def serve(variant: str) -> None:
    """Run one app in this process and print its URL (the parent reads it)."""
    import uvicorn

    from scorepack.server.run import bind_socket, url_of

    scorer = Scorer(Identity(Path("identity.model")), ScoringConfig())
    app: Any
    if variant == "legacy":
        from benchmarks.micro.legacy_asgi import ScoringApp as Legacy

        app = Legacy(scorer)
    else:
        from scorepack.server import ScoringApp

        app = ScoringApp(scorer)
    sock = bind_socket("127.0.0.1", 0)
    print(url_of(sock), flush=True)
    config = uvicorn.Config(app, lifespan="on", log_config=None, access_log=False)
    uvicorn.Server(config).run(sockets=[sock])


def _rate(variant: str, seconds: float, concurrency: int) -> float:
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.micro.router_overhead", "--serve", variant],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        import httpx

        deadline = time.monotonic() + 60
        while httpx.get(url + "/health/ready").status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{variant} server never became ready")
            time.sleep(0.1)
        config = BenchConfig(
            url=url + "/score",
            body=BODY,
            content_type="application/json",
            concurrency=concurrency,
            duration_s=seconds,
            warmup_s=min(2.0, seconds / 4),
        )
        result = run_bench(config)
        if result.errors:
            raise RuntimeError(f"{variant}: {result.errors} failed requests")
        return float(result.rps)
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", choices=("legacy", "starlette"))
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    ratios = []
    for index in range(args.rounds):
        legacy = _rate("legacy", args.seconds, args.concurrency)
        starlette = _rate("starlette", args.seconds, args.concurrency)
        ratios.append(starlette / legacy)
        print(
            f"round {index + 1}: legacy {legacy:.0f} req/s, starlette {starlette:.0f} req/s, "
            f"ratio {ratios[-1]:.3f}",
            flush=True,
        )
    print(f"median ratio starlette/legacy at c={args.concurrency}: {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
