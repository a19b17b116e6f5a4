"""The servers a soak drives, each a real process: what they serve and how they start.

embedded: ``scorepack serve --repository DIR --model-control explicit --grpc-port 0`` over
three models: ``main``, a small ONNX image classifier (image [N, 3, 8, 8]) that takes
every protocol's traffic; ``slow``, the tests' echo fixture whose every call takes 20 ms
with batches of 4 and a queue of 8, for queue-full refusals, cancelled and expired calls;
and ``cycled``, an ONNX lookup table (16 MiB of weights) unloaded and loaded again and
again while the others serve. It runs under :mod:`benchmarks.soak.probe` (a census on
SIGUSR1).

azureml: the ``main`` model built into a package (``scorepack build``, a queue of 4) and
run as Azure ML runs it, under azmlinfsrv (``scorepack serve-azureml PKG``), with its
metrics on a port of their own.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from benchmarks.soak import ROOT, tests_on_path

tests_on_path()

SCOREPACK = [sys.executable, "-m", "scorepack", "--log-level", "info"]
#: the slow model: every call sleeps this long
SLOW_DELAY_S = 0.02
SLOW_QUEUE = 8
SLOW_BATCH = 4
#: the azureml package's queue: small, so that a burst of a few requests overflows it
PACKAGE_QUEUE = 4
CYCLED_TABLE_MB = 16


@dataclass
class Server:
    """A server process being soaked."""

    proc: subprocess.Popen[bytes]
    url: str
    log: Path
    metrics_url: str
    #: ``host:port`` of its V2 gRPC server (None: it has none)
    grpc: str | None = None
    #: where its census files appear (None: it answers no census)
    census_dir: Path | None = None

    def worker_pid(self) -> int:
        """The process that serves: the server itself, or azmlinfsrv's gunicorn worker."""
        import psutil

        children = psutil.Process(self.proc.pid).children(recursive=True)
        workers = [c for c in children if "gunicorn" in " ".join(c.cmdline()[:3])]
        return workers[-1].pid if workers else (children[-1].pid if children else self.proc.pid)


def _fixture_site(site: Path) -> Path:
    """``site`` holding the tests' fixture backends as an installed scorepack plugin."""
    from fixture_backends import write_entry_point

    write_entry_point(site)
    shutil.copyfile(ROOT / "tests" / "fixture_backends.py", site / "fixture_backends.py")
    return site


def repository(work: Path) -> Path:
    """The embedded server's model repository (see the module docstring)."""
    from onnx_models import conv_classifier, lookup_table

    repo = work / "repo"
    (repo / "main").mkdir(parents=True)
    conv_classifier(repo / "main" / "model.onnx")
    (repo / "cycled").mkdir()
    lookup_table(repo / "cycled" / "model.onnx", CYCLED_TABLE_MB)
    (repo / "slow").mkdir()
    (repo / "slow" / "model.slow").write_text("a slow echo\n")
    (repo / "slow" / "model-settings.yaml").write_text(
        f"options: {{delay: {SLOW_DELAY_S}, record: false}}\n"
        "scoring:\n"
        "  batching:\n"
        f"    max_batch_size: {SLOW_BATCH}\n"
        f"    max_queue_size: {SLOW_QUEUE}\n"
        "    max_delay_ms: 2\n"
    )
    return repo


def _wait_line(proc: subprocess.Popen[bytes], log: Path, pattern: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    regex = re.compile(pattern)
    while time.monotonic() < deadline:
        match = regex.search(log.read_text("utf-8", errors="replace"))
        if match:
            return match.group(1)
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited ({proc.returncode}); see {log}")
        time.sleep(0.1)
    raise TimeoutError(f"the server printed no {pattern!r} in {timeout:.0f} s; see {log}")


def _wait_ok(proc: subprocess.Popen[bytes], url: str, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited ({proc.returncode}); see {log}")
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer 200 in {timeout:.0f} s; see {log}")


def _stop(proc: subprocess.Popen[bytes]) -> int | None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    return proc.returncode


def _env(site: Path | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCOREPACK_")}
    if site is not None:
        env["PYTHONPATH"] = str(site)
    else:
        env.pop("PYTHONPATH", None)
    env.update(PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="3", PYTHONFAULTHANDLER="1", **extra)
    return env


@contextmanager
def embedded(
    work: Path, *, tracemalloc_frames: int = 0, gc_stress: bool = False
) -> Iterator[Server]:
    """The embedded server over :func:`repository`, with gRPC, under the census probe."""
    repo = repository(work)
    site = _fixture_site(work / "site")
    census = work / "census"
    census.mkdir()
    log = work / "embedded.log"
    env = _env(site, SOAK_CENSUS_DIR=str(census))
    if tracemalloc_frames:
        env["SOAK_TRACEMALLOC"] = str(tracemalloc_frames)
    if gc_stress:
        env["SOAK_GC_STRESS"] = "1"
    args = ["serve", "--repository", str(repo), "--model-control", "explicit"]
    args += ["--grpc-port", "0", "--port", "0", "--device", "cpu", "--decode-threads", "2"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.soak.probe", "--log-level", "info", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=env,
            start_new_session=True,
        )
    try:
        url = _wait_line(proc, log, r"at (http://\S+)/score", 120)
        grpc = _wait_line(proc, log, r"serving V2 gRPC at grpc://(\S+)", 120)
        _wait_ok(proc, url + "/v2/health/ready", log, 300)
        yield Server(proc, url, log, url + "/metrics", grpc, census)
    finally:
        _stop(proc)


@contextmanager
def azureml(work: Path) -> Iterator[Server]:
    """The ``main`` model as a package under azmlinfsrv (see the module docstring)."""
    from onnx_models import conv_classifier
    from packages import free_port

    model = conv_classifier(work / "model.onnx")
    package = work / "pkg"
    build = [*SCOREPACK, "build", str(model), "-o", str(package), "--device", "cpu", "--no-check"]
    subprocess.run(
        [*build, "--max-queue-size", str(PACKAGE_QUEUE), "--max-batch-size", "8"],
        check=True,
        capture_output=True,
        timeout=600,
        cwd=ROOT,
        env=_env(),
    )
    port, metrics_port = free_port(), free_port()
    log = work / "azureml.log"
    cmd = [*SCOREPACK, "serve-azureml", str(package), "--port", str(port)]
    cmd += ["--metrics-port", str(metrics_port), "--threads", "4"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=_env(), start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ok(proc, url + "/", log, 300)
        yield Server(proc, url, log, f"http://127.0.0.1:{metrics_port}/metrics")
    finally:
        _stop(proc)
