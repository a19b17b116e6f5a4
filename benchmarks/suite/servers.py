"""Servers under load: each in its own process, loaded by ``scorepack bench`` in another.

Three kinds: scorepack's embedded server, a scorepack package under azmlinfsrv
(``serve-azureml PKG``), and the article-style baseline entry script under
azmlinfsrv (one request, one model call). Each is started, timed to ready, loaded at each
concurrency, has its peak resident memory read, and is stopped with SIGTERM.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from scorepack.azureml import launch

ROOT = Path(__file__).resolve().parents[2]
SCOREPACK = [sys.executable, "-m", "scorepack", "--log-level", "warning"]


@dataclass
class Running:
    """A server process being measured."""

    proc: subprocess.Popen[str]
    url: str
    ready_path: str
    started: float
    log: list[str] = field(default_factory=list)
    ready_s: float | None = None
    #: where its Prometheus metrics are (None: it has none, the article baseline)
    metrics_url: str | None = None

    def preferred_batch_size(self) -> int | None:
        """The batch size the server's batcher gathers (``scorepack_preferred_batch_size``,
        measured at warm-up unless set), or None where it has no metrics."""
        from prometheus_client.parser import text_string_to_metric_families

        if self.metrics_url is None:
            return None
        url = self.metrics_url or f"{self.url}/metrics"  # "": on the server's own port
        try:
            text = httpx.get(url, timeout=10).text
        except httpx.HTTPError:
            return None
        for family in text_string_to_metric_families(text):
            if family.name == "scorepack_preferred_batch_size":
                return next((int(s.value) for s in family.samples), None)
        return None

    def info(self) -> dict[str, Any]:
        """The server's ``/info`` (one model's metadata), or {} where it answers none."""
        try:
            reply = httpx.get(f"{self.url}/info", timeout=10)
            return dict(reply.json()) if reply.status_code == 200 else {}
        except (httpx.HTTPError, ValueError):
            return {}

    def peak_rss_mib(self) -> float:
        """The largest peak RSS (VmHWM) among the server's processes."""
        peaks = [_vm_hwm(pid) for pid in _tree(self.proc.pid)]
        return round(max([p for p in peaks if p is not None] or [0]) / 1024, 1)


def _tree(pid: int) -> list[int]:
    import psutil

    try:
        parent = psutil.Process(pid)
        return [pid] + [c.pid for c in parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _vm_hwm(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith("VmHWM"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running(
    cmd: list[str],
    *,
    ready_path: str,
    url: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 300.0,
    metrics_url: str | None = None,
    log: Path | None = None,
) -> Iterator[Running]:
    """Start a server, wait until ``ready_path`` answers 200, stop it afterwards.

    ``metrics_url``: where its metrics are; ``""``: at ``/metrics`` on its own port.
    ``log``: a file the server's output goes to, as a container's runtime takes it,
    instead of this process reading it (nothing of it on the measured cores); then
    ``url`` must be given (the printed one is not read)."""
    if log is not None and not url:
        raise ValueError("a server whose output goes to a file needs its url given")
    started = time.monotonic()
    with open(log, "w") if log is not None else nullcontext() as out:
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE if out is None else out,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
    server = Running(proc, url or "", ready_path, started, metrics_url=metrics_url)
    found = threading.Event()

    def drain() -> None:
        if proc.stdout is None:  # into the log file
            return
        for line in proc.stdout:
            server.log.append(line)
            if server.url:
                # searched only until found: an access line per request would otherwise
                # cost this process a regex each, on the cores the server is measured on
                continue
            match = re.search(r"at (http://\S+)/score", line)
            if match:
                server.url = match.group(1)
                found.set()

    threading.Thread(target=drain, daemon=True).start()
    if url:
        found.set()
    try:
        deadline = started + timeout
        found.wait(timeout)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{cmd[3:6]} exited early:\n{_tail(server, log)}")
            try:
                if server.url and httpx.get(server.url + ready_path, timeout=2).status_code == 200:
                    server.ready_s = round(time.monotonic() - started, 2)
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        else:
            raise RuntimeError(f"not ready in {timeout:.0f} s:\n{_tail(server, log)}")
        yield server
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _tail(server: Running, log: Path | None) -> str:
    """The server's last 30 lines of output, for an error."""
    lines = log.read_text().splitlines(keepends=True) if log is not None else server.log
    return "".join(lines[-30:])


def embedded_command(model: Any, *extra: str) -> list[str]:
    """``scorepack serve MODEL`` with the model's preprocessing, device and -O options."""
    return [*SCOREPACK, "serve", str(model.path), *model.serve_args, "--port", "0", *extra]


def embedded(model: Any, *extra: str, env: dict[str, str] | None = None) -> Any:
    return running(
        embedded_command(model, *extra), ready_path="/health/ready", env=env, metrics_url=""
    )


def package_command(package: Path, device: str = "cpu", metrics_port: int = 0) -> list[str]:
    """``scorepack serve-azureml PKG`` on ``device``.

    A CUDA package pins the CUDA builds an Azure image installs; the GPU machine running
    the suite has its own builds, so the version check is skipped there.
    """
    cmd = [*SCOREPACK, "serve-azureml", str(package), "--device", device]
    if device != "cpu":
        cmd.append("--no-env-check")
    if metrics_port:
        cmd += ["--metrics-port", str(metrics_port)]
    return [*cmd, "--port", str(free_port())]


def package_azureml(package: Path, device: str = "cpu") -> Any:
    metrics_port = free_port()
    return running(
        package_command(package, device, metrics_port),
        ready_path="/",
        metrics_url=f"http://127.0.0.1:{metrics_port}/metrics",
    )


def baseline_azureml(model_dir: Path) -> Any:
    """The article-style score.py under azmlinfsrv with its defaults (sync worker)."""
    port = free_port()
    entry_script = ROOT / "benchmarks" / "baseline" / "score.py"
    cmd = launch.command(sys.executable, entry_script, port, "--model_dir", str(model_dir))
    return running(
        cmd,
        ready_path="/",
        url=f"http://127.0.0.1:{port}",
        env={"GUNICORN_CMD_ARGS": "--no-control-socket"},
    )


def build_package(model: Any, out: Path) -> Path:
    """``scorepack build`` for a package of the model on its device (rebuilt every run)."""
    subprocess.run(
        [
            *SCOREPACK,
            "build",
            str(model.path),
            "-o",
            str(out),
            "--force",
            "--no-check",  # the benchmark measures serving; it needs no network
            *model.serve_args,
        ],
        check=True,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    return out


def load(
    url: str,
    image: Path,
    concurrency: int,
    duration: float,
    warmup: float,
    protocol: str = "score",
) -> dict[str, Any]:
    """One ``scorepack bench`` run, in its own process (``protocol``: score, v2 or grpc)."""
    out = subprocess.run(
        [
            *SCOREPACK,
            "bench",
            url,
            str(image),
            "-c",
            str(concurrency),
            "-d",
            str(duration),
            "--warmup",
            str(warmup),
            "--protocol",
            protocol,
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return json.loads(out.stdout)


def temp_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="scorepack-bench-"))
