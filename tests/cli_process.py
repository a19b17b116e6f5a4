"""The scorepack CLI run as a user runs it: in a subprocess, with its own environment.

Also installs small packages the way a user would (``pip install``), but into a folder
of the test's own (``--target``), so the shared virtualenv is never touched: a plugin is
then discovered through the entry points in that folder's ``*.dist-info``.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent

#: top-level modules of the ML frameworks the core must never import on its own
FRAMEWORKS = frozenset({"tensorflow", "keras", "tf_keras", "torch", "onnxruntime", "jax"})

# the banner as text ("scorepack: serving ...") or, with --log-format json, as a record
_LISTENING = re.compile(r"(?:scorepack: |\"message\":\")serving .* at (?P<url>http://\S+?)/score")


def pip_install(source: Path, target: Path) -> Path:
    """``pip install --no-deps --no-build-isolation --target target source``; returns target."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--no-build-isolation",
            "--no-cache-dir",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return target


def cli_env(pythonpath: Iterable[Path | str] = (), **extra: str) -> dict[str, str]:
    """This environment without any SCOREPACK_* setting, plus ``pythonpath`` and ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCOREPACK_")}
    env.pop("PYTHONPATH", None)
    paths = [str(p) for p in pythonpath]
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(paths)
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"  # keep TensorFlow's C++ chatter out of stderr
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def scorepack_cmd(*args: str) -> list[str]:
    """The command line of ``scorepack ARGS`` (the console script's own entry point)."""
    return [sys.executable, "-m", "scorepack.cli", *args]


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``scorepack ARGS`` to completion; stdout and stderr are captured as text."""
    return subprocess.run(
        scorepack_cmd(*args),
        env=env or cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


def run_python(
    code: str, *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``python -c CODE ARGS`` in a fresh interpreter (``sys.argv[1:]`` is ``ARGS``)."""
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env=env or cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


class ServerProcess:
    """``scorepack serve ... --port 0`` in a subprocess: its URL, its log, and a stop.

    The URL is parsed from the line the command prints on stderr; stderr is drained on a
    thread (so the server never blocks on a full pipe) and kept in :attr:`log`.
    """

    def __init__(self, args: Sequence[str], env: dict[str, str] | None = None) -> None:
        self.args = list(args)
        self.proc = subprocess.Popen(
            scorepack_cmd("serve", *args, "--host", "127.0.0.1", "--port", "0"),
            env=env or cli_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        self.log: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.url = ""

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line.rstrip("\n"))
            self._lines.put(line)
        self._lines.put(None)

    @property
    def log_text(self) -> str:
        return "\n".join(self.log)

    def wait_listening(self, timeout: float = 60) -> str:
        """The base URL (``http://127.0.0.1:PORT``) the server printed."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"the server printed no URL:\n{self.log_text}") from None
            if line is None:
                raise RuntimeError(f"the server exited ({self.proc.wait()}):\n{self.log_text}")
            match = _LISTENING.search(line)
            if match:
                self.url = match.group("url")
                return self.url

    def wait_ready(self, timeout: float = 90) -> str:
        """Wait until ``GET /health/ready`` answers 200; returns the base URL."""
        url = self.url or self.wait_listening(timeout)
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=5) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    code = self.proc.returncode
                    raise RuntimeError(f"the server exited ({code}):\n{self.log_text}")
                try:
                    if client.get(url + "/health/ready").status_code == 200:
                        return url
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        raise TimeoutError(f"the server did not become ready:\n{self.log_text}")

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM (a graceful shutdown), then SIGKILL if it hangs; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._reader.join(10)
        return self.proc.returncode

    def __enter__(self) -> ServerProcess:
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def imported_frameworks(modules: Iterable[str]) -> list[str]:
    """The framework modules among ``modules`` (dotted names included)."""
    return sorted(m for m in modules if m.split(".", 1)[0] in FRAMEWORKS)
