"""Graceful shutdown: ``scorepack serve`` gets SIGTERM with requests in flight; they all
finish with 200, the model unloads after them, and the process exits 0.

The server is the real CLI in its own process. Its model is the slow fixture backend,
installed as a plugin the way pip would (an entry point in a ``.dist-info`` on the
subprocess's PYTHONPATH), so it is found by the same discovery as any backend.
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
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from fixture_backends import write_entry_point
from metrics_helpers import scrape, value

TESTS = Path(__file__).resolve().parent
LISTENING = re.compile(r"serving .* at (http://127\.0\.0\.1:\d+)/score")
DELAY = 0.5  # seconds per model call: long enough to be caught in flight


class ServeProcess:
    """``scorepack serve`` in a subprocess; stderr is collected by a reader thread."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from scorepack.cli import main; main()", *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)
            self.lines.put(line)

    def url(self, timeout: float = 30.0) -> str:
        """The URL the server printed when it started listening."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            match = LISTENING.search(line)
            if match:
                return match.group(1)
        raise AssertionError(
            "scorepack serve never said where it listens:\n" + "".join(self.stderr)
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def serve_process(tmp_path: Path) -> Iterator[Callable[..., ServeProcess]]:
    site = tmp_path / "site"
    write_entry_point(site)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCOREPACK_")}
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(TESTS)])
    started: list[ServeProcess] = []

    def start(*args: str) -> ServeProcess:
        process = ServeProcess(list(args), env)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


def _marker_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split() if path.exists() else []


def _wait(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _queue_depth(client: httpx.Client) -> int:
    return int(value(scrape(client), "scorepack_queue_depth"))


def test_sigterm_lets_in_flight_requests_finish(
    tmp_path: Path, serve_process: Callable[..., ServeProcess]
) -> None:
    model = tmp_path / "model.slow"
    model.write_text("a model file for the slow fixture backend\n")
    marker = tmp_path / "calls.txt"
    server = serve_process(
        "serve",
        str(model),
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--max-batch-size",
        "4",
        "--graceful-timeout",
        "30",
        # a model that sleeps a fixed time a call has no batch size to measure (measuring
        # would add five calls, 2.5 s, to the warm-up): batches fill to 4
        "--preferred-batch-size",
        "off",
        "-O",
        f"delay={DELAY}",
        "-O",
        f"marker={marker}",
    )
    url = server.url()
    count = 4
    with httpx.Client(base_url=url, timeout=30) as client:
        _wait(lambda: client.get("/health/ready").status_code == 200, "the model to be ready")
        warmup = len(_marker_lines(marker))  # warm-up calls: batch 1 and batch 4
        assert warmup == 2

        def post(i: int) -> httpx.Response:
            return client.post(
                "/score", json={"inputs": {"x": [[float(i), 1.0]]}}, params={"raw": "true"}
            )

        with ThreadPoolExecutor(count) as pool:
            futures = [pool.submit(post, i) for i in range(count)]

            # in flight: every request is inside a model call or queued behind one
            def all_in() -> bool:
                scored = sum(int(n) for n in _marker_lines(marker)[warmup:])
                return scored >= 1 and scored + _queue_depth(client) == count

            _wait(all_in, "all requests to be in flight")
            assert not all(f.done() for f in futures)
            server.proc.send_signal(signal.SIGTERM)
            answers = [f.result(30) for f in futures]

    assert [a.status_code for a in answers] == [200] * count, [a.text for a in answers]
    assert [a.json()["outputs"]["y"] for a in answers] == [[[float(i), 1.0]] for i in range(count)]
    assert server.proc.wait(30) == 0, "".join(server.stderr)
    lines = _marker_lines(marker)
    # the model unloaded once, after the last of the requests was scored
    assert lines[-1] == "unload" and lines.count("unload") == 1
    assert sum(int(n) for n in lines[warmup:-1]) == count


def test_sigterm_on_an_idle_server_exits_0(
    tmp_path: Path, serve_process: Callable[..., ServeProcess]
) -> None:
    model = tmp_path / "model.echo"
    model.write_text("echo\n")
    server = serve_process("serve", str(model), "--port", "0")
    url = server.url()
    assert url.startswith("http://127.0.0.1:")  # loopback unless told otherwise
    with httpx.Client(base_url=url, timeout=30) as client:
        _wait(lambda: client.get("/health/ready").status_code == 200, "the model to be ready")
        assert client.post("/score", json={"inputs": {"x": [[1, 2]]}}).status_code == 200
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(30) == 0, "".join(server.stderr)
