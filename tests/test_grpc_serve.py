"""``scorepack serve --grpc-port``: HTTP and V2 gRPC from one process, over the same model and
batcher, stopped together by SIGTERM with calls in flight that still finish.

The server is the real CLI in its own process, its model the slow fixture backend installed
as a plugin (as in test_shutdown.py); the client is NVIDIA's tritonclient.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from fixture_backends import write_entry_point
from test_shutdown import TESTS, ServeProcess

tritonclient_grpc = pytest.importorskip("tritonclient.grpc")

GRPC_LISTENING = re.compile(r"serving V2 gRPC at grpc://(127\.0\.0\.1:\d+)")
DELAY = 0.5  # seconds per model call: long enough to be caught in flight


@pytest.fixture
def serve_process(tmp_path: Path) -> Iterator[Callable[..., ServeProcess]]:
    """Start ``scorepack ARGS`` with the fixture backends installed as a plugin."""
    site = tmp_path / "site"
    write_entry_point(site)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCOREPACK_")}
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(TESTS)])
    started: list[ServeProcess] = []

    def start(*args: str) -> ServeProcess:
        started.append(ServeProcess(list(args), env))
        return started[-1]

    yield start
    for process in started:
        process.stop()


def _grpc_address(server: ServeProcess, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in list(server.stderr):
            match = GRPC_LISTENING.search(line)
            if match:
                return match.group(1)
        if server.proc.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError("serve never said where gRPC listens:\n" + "".join(server.stderr))


def _calls(marker: Path) -> list[str]:
    return marker.read_text(encoding="utf-8").split() if marker.exists() else []


def _wait(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_serve_speaks_grpc_beside_http_and_stops_with_it(
    tmp_path: Path, serve_process: Callable[..., ServeProcess]
) -> None:
    model = tmp_path / "model.slow"
    model.write_text("a model file for the slow fixture backend\n")
    marker = tmp_path / "calls.txt"
    server = serve_process(
        "serve", str(model), "--host", "127.0.0.1", "--port", "0", "--grpc-port", "0",
        "--max-batch-size", "4", "--graceful-timeout", "30",
        # a fixed sleep a call: nothing to measure (it would add 2.5 s to the warm-up)
        "--preferred-batch-size", "off",
        "-O", f"delay={DELAY}", "-O", f"marker={marker}",
    )  # fmt: skip
    url = server.url()
    address = _grpc_address(server)
    triton = tritonclient_grpc.InferenceServerClient(address)
    with httpx.Client(base_url=url, timeout=30) as http:
        _wait(lambda: http.get("/health/ready").status_code == 200, "the model to be ready")
        assert triton.is_server_ready() and triton.is_model_ready("model")
        warmup = len(_calls(marker))

        def over_grpc(i: int) -> np.ndarray:
            x = tritonclient_grpc.InferInput("x", [1, 2], "FP32")
            x.set_data_from_numpy(np.array([[float(i), 2.0]], dtype=np.float32))
            return triton.infer("model", [x], client_timeout=30).as_numpy("y")

        def over_http(i: int) -> httpx.Response:
            body = {"inputs": {"x": [[float(i), 2.0]]}}
            return http.post("/score", json=body, params={"raw": "true"})

        with ThreadPoolExecutor(4) as pool:
            grpc_calls = [pool.submit(over_grpc, i) for i in (0, 1)]
            http_calls = [pool.submit(over_http, i) for i in (2, 3)]
            # every request is in a model call or queued behind one: all four in flight
            _wait(lambda: len(_calls(marker)) > warmup, "a model call to start")
            server.proc.send_signal(signal.SIGTERM)
            grpc_answers = [f.result(30) for f in grpc_calls]
            http_answers = [f.result(30) for f in http_calls]

    for i, answer in zip((0, 1), grpc_answers, strict=True):
        np.testing.assert_array_equal(answer, [[float(i), 2.0]])
    assert [a.status_code for a in http_answers] == [200, 200], [a.text for a in http_answers]
    assert server.proc.wait(30) == 0, "".join(server.stderr)
    calls = _calls(marker)
    # one batcher for both protocols: the four rows went through the one model thread
    assert calls[-1] == "unload" and sum(int(n) for n in calls[warmup:-1]) == 4
    host, port = address.rsplit(":", 1)
    with pytest.raises(OSError), socket.create_connection((host, int(port)), timeout=5):
        pass  # the gRPC port closed with the process


def test_serve_refuses_grpc_under_azmlinfsrv(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from scorepack.cli import build_cli

    package = tmp_path / "pkg"
    package.mkdir()
    (package / "scorepack.yaml").write_text("name: x\n")
    result = CliRunner().invoke(
        build_cli(), ["serve", str(package), "--runtime", "azureml", "--grpc-port", "8001"]
    )
    assert result.exit_code != 0
    assert "--grpc-port does not apply to --runtime azureml" in result.output, result.output
