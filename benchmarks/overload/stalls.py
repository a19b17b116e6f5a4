"""Stalled uploads: do probes and scoring keep answering while N uploads hang?

For each host (the embedded server; the package under azmlinfsrv with scorepack's worker;
and, for comparison, the package under azmlinfsrv with gunicorn's stock gthread worker),
it measures the latency of ``GET /`` and of ``POST /score`` (one small image) alone, then
with ``--stalls`` uploads held open (each kept barely alive by one byte every 0.5 s), and
reports the ratio of the medians and the requests that got no answer within ``--timeout``.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
from benchmarks.overload import tests_on_path

tests_on_path()

from benchmarks.suite.servers import SCOREPACK, running  # noqa: E402

from hostile import stalled_uploads  # noqa: E402
from images import jpeg  # noqa: E402
from packages import package_for  # noqa: E402

HOSTS = ("embedded", "azureml", "azureml-gthread")


def _measure(url: str, rounds: int, timeout: float) -> dict[str, Any]:
    image = jpeg(40, 30, seed=1)
    out: dict[str, Any] = {}
    for name, send in (
        ("probe", lambda c: c.get(url + "/")),
        (
            "score",
            lambda c: c.post(url + "/score", content=image, headers={"content-type": "image/jpeg"}),
        ),
    ):
        times, failed = [], 0
        for _ in range(rounds):
            # a new connection each time: a kept-alive one would dodge the accept path
            with httpx.Client(timeout=timeout) as client:
                start = time.perf_counter()
                try:
                    ok = send(client).status_code == 200
                except httpx.HTTPError:
                    ok = False
                elapsed = time.perf_counter() - start
            if ok:
                times.append(elapsed)
            else:
                failed += 1
        out[name] = {
            "median_ms": round(statistics.median(times) * 1000, 2) if times else None,
            "max_ms": round(max(times) * 1000, 2) if times else None,
            "failed": failed,
        }
    return out


def _server(host: str, package: Path, pythonpath: str | None = None) -> AbstractContextManager[Any]:
    from benchmarks.suite.servers import free_port

    from scorepack.azureml.host import AzureMLServe, server_command, server_env
    from scorepack.azureml.layout import make_model_dir
    from scorepack.manifest import load_manifest

    if host == "embedded":
        return running(
            [*SCOREPACK, "serve", str(package), "--port", "0"], ready_path="/health/ready"
        )
    spec = load_manifest(package)
    port = free_port()
    options = AzureMLServe(package=package, port=port)
    model_dir = make_model_dir(spec, package, Path(tempfile.mkdtemp(prefix="overload-")))
    env = server_env(spec, options, model_dir)
    if host == "azureml-gthread":
        # gunicorn's own threaded worker, as before scorepack's: the comparison
        env["GUNICORN_CMD_ARGS"] = f"--threads {spec.deployment.threads}"
    # nothing of this checkout on the server's path but what the package needs (a test
    # fixture's backend, for the overload burst)
    env.pop("PYTHONPATH", None)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return running(
        server_command(sys.executable, options),
        ready_path="/",
        url=f"http://127.0.0.1:{port}",
        env=env,
    )


def run(hosts: list[str], stalls: int, rounds: int, timeout: float) -> dict[str, Any]:
    """The stalled-upload measurement for each host; JSON-ready."""
    work = Path(tempfile.mkdtemp(prefix="overload-pkg-"))
    package = package_for("onnx", work)
    results: dict[str, Any] = {"stalls": stalls, "rounds": rounds, "timeout_s": timeout}
    for host in hosts:
        with _server(host, package) as server:
            alone = _measure(server.url, rounds, timeout)
            with stalled_uploads(server.url, count=stalls):
                loaded = _measure(server.url, rounds, timeout)
        ratios = {
            k: (
                round(loaded[k]["median_ms"] / alone[k]["median_ms"], 2)
                if loaded[k]["median_ms"] and alone[k]["median_ms"]
                else None
            )
            for k in ("probe", "score")
        }
        results[host] = {"alone": alone, "with_stalls": loaded, "ratio": ratios}
        print(f"{host}: alone {alone}\n  with {stalls} stalls {loaded}\n  ratio {ratios}")
    return results
