"""A package under the real azmlinfsrv against hostile clients, over real sockets.

Stalled uploads must not take gunicorn's threads (the liveness probe and /score keep
answering with 64 of them held open), malformed framing is a 4xx and never a crash in the
log, and after each a good request still succeeds.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from hostile import (
    BROKEN_FRAMING,
    address,
    broken,
    exchange,
    read_response,
    request,
    stalled_uploads,
    timed_get,
)
from images import HOSTILE_IMAGES, jpeg
from packages import AzmlinfsrvServer, backend_params, child_env, free_port, package_for
from scorepack.batching import BatchingConfig
from scorepack.config import ScoringConfig
from serving_helpers import wait_for

pytest.importorskip("azureml_inference_server_http")
pytest.importorskip("azureml.contrib.services")

#: a short read timeout, so that a stalled upload's 408 comes quickly
READ_TIMEOUT_S = 6
MAX_BODY = 300_000


@pytest.fixture(scope="module")
def azml(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzmlinfsrvServer]:
    work = tmp_path_factory.getbasetemp() / "packages"
    backend = next(p.values[0] for p in backend_params() if not p.marks)
    package = package_for(
        backend,
        work,
        config=ScoringConfig(batching=BatchingConfig(max_batch_size=8), max_body_bytes=MAX_BODY),
    )
    log = tmp_path_factory.mktemp("hostile-azml") / "azmlinfsrv.log"
    env = child_env(SCOREPACK_READ_TIMEOUT_S=str(READ_TIMEOUT_S))
    # the package's deployment gives 32 threads; 8 make the starvation easy to reach
    with AzmlinfsrvServer(package, "--threads", "8", log=log, env=env) as server:
        yield server


def good_request(url: str) -> None:
    """A valid image scored: the server is still serving."""
    got = httpx.post(
        url + "/score",
        content=jpeg(40, 30, seed=3),
        headers={"content-type": "image/jpeg"},
        timeout=60,
    )
    assert got.status_code == 200, got.text
    assert got.json()["predictions"]


def no_crash_in(log: str) -> None:
    for sign in ("Traceback", "Error handling request", "Exception in worker", " 500 "):
        assert sign not in log, log[-3000:]


def test_the_package_runs_scorepacks_worker(azml: AzmlinfsrvServer) -> None:
    assert "Using worker: scorepack.azureml.worker.BufferingThreadWorker" in azml.log


def test_64_stalled_uploads_leave_probes_and_scoring_answering(azml: AzmlinfsrvServer) -> None:
    with stalled_uploads(azml.url, count=64) as uploads:
        # more stalled uploads than threads (8), all still arriving
        for path in ("/", "/", "/swagger.json"):
            status, _ = timed_get(azml.url, path)
            assert status == 200
        for _ in range(3):
            good_request(azml.url)
        uploads.stop_trickling()
        # once they stop sending, each is answered 408 within the read timeout
        answers = uploads.answers(timeout=READ_TIMEOUT_S * 10)
    assert all(a is not None and a.status == 408 for a in answers), answers[:3]
    assert answers[0] is not None and answers[0].json()["error"]["code"] == "request_timeout"
    good_request(azml.url)


def test_a_request_whose_headers_never_end_gets_408(azml: AzmlinfsrvServer) -> None:
    host, port = azml.url.rsplit(":", 1)[0][7:], int(azml.url.rsplit(":", 1)[1])
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Ty")
        got = read_response(sock, timeout=READ_TIMEOUT_S * 10)
    assert got is not None and got.status == 408
    good_request(azml.url)


@pytest.mark.parametrize("case", sorted(BROKEN_FRAMING))
def test_malformed_framing_is_a_4xx_and_no_crash(case: str, azml: AzmlinfsrvServer) -> None:
    got = exchange(azml.url, broken(azml.url, case))
    assert got is not None, "closed without an answer"
    assert 400 <= got.status < 500, (got.status, got.body)
    assert got.headers["content-type"] == "application/json"
    assert got.json()["error"]["message"]
    good_request(azml.url)
    no_crash_in(azml.log)


def test_a_client_leaving_mid_body_costs_nothing(azml: AzmlinfsrvServer) -> None:
    for framing in (
        b"Content-Length: 5000\r\n\r\nabc",
        b"Transfer-Encoding: chunked\r\n\r\n5\r\nab",
    ):
        host, port = azml.url[7:].split(":")
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\n" + framing)
        good_request(azml.url)
    no_crash_in(azml.log)


def test_a_body_over_the_limit_is_413_before_it_is_read(azml: AzmlinfsrvServer) -> None:
    # declared too large: answered at once, with none of it sent
    got = exchange(azml.url, request(azml.url, headers={"Content-Length": str(MAX_BODY + 1)}))
    assert got is not None and got.status == 413
    assert got.json()["error"]["code"] == "body_too_large"
    # chunked, growing past the limit
    chunk = b"%x\r\n%s\r\n" % (100_000, b"x" * 100_000)
    got = exchange(
        azml.url,
        b"POST /score HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk * 4,
    )
    assert got is not None and got.status == 413
    good_request(azml.url)


def test_expect_100_continue_gets_one_interim_answer(azml: AzmlinfsrvServer) -> None:
    body = jpeg(40, 30, seed=4)
    host, port = azml.url[7:].split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(
            request(
                azml.url,
                body=b"",
                headers={
                    "Content-Length": str(len(body)),
                    "Content-Type": "image/jpeg",
                    "Expect": "100-continue",
                },
            )
        )
        sock.settimeout(30)
        interim = sock.recv(100)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(body)
        got = read_response(sock)
    assert got is not None and got.status == 200


def test_keep_alive_and_pipelined_requests_are_served(azml: AzmlinfsrvServer) -> None:
    body = jpeg(40, 30, seed=5)
    one = request(azml.url, body=body, headers={"Content-Type": "image/jpeg"})
    host, port = azml.url[7:].split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(one + one)  # two requests in one write
        first, second = read_response(sock), read_response(sock)
        sock.sendall(one[:50])
        time.sleep(0.2)  # not synchronisation: the request simply arrives in two pieces
        sock.sendall(one[50:])
        third = read_response(sock)
    assert [r.status if r else None for r in (first, second, third)] == [200, 200, 200]


# --- the runtime's own read deadline (for a package run under another gunicorn worker) ----


class _SocketRequest:
    """What run() uses of Flask's request, reading its body off a real socket."""

    method = "POST"
    args = None

    def __init__(self, sock: socket.socket, content_length: int | None) -> None:
        self.content_length = content_length
        self.headers = {"Content-Type": "image/jpeg"}
        self.stream = sock.makefile("rb")
        self.environ = {"gunicorn.socket": sock}


def test_the_runtime_answers_408_when_a_body_stalls_under_another_worker() -> None:
    from scorepack.azureml.runtime import AzureMLRuntime
    from scorepack.errors import RequestTimeoutError

    class _Scorer:
        name, version, started = "stub", None, True

        class config:
            max_body_bytes = 1000

    runtime = AzureMLRuntime(_Scorer(), read_timeout_s=0.5)  # type: ignore[arg-type]
    server, client = socket.socketpair()
    with server, client:
        client.sendall(b"abc")  # of the 100 bytes declared
        with pytest.raises(RequestTimeoutError) as caught:
            runtime._read_body(_SocketRequest(server, 100))
        assert server.gettimeout() is None  # the socket's own timeout is put back
    assert "0.5 s" in caught.value.message


def test_a_compressed_body_is_415(azml: AzmlinfsrvServer) -> None:
    import gzip

    got = httpx.post(
        azml.url + "/score",
        content=gzip.compress(jpeg(40, 30, seed=3)),
        headers={"content-type": "image/jpeg", "content-encoding": "gzip"},
        timeout=60,
    )
    assert got.status_code == 415, got.text
    assert got.json()["error"]["code"] == "unsupported_encoding"
    good_request(azml.url)


@pytest.mark.parametrize("case", list(HOSTILE_IMAGES))
def test_a_hostile_image_is_refused_as_on_the_embedded_server(
    case: str, azml: AzmlinfsrvServer
) -> None:
    # within the pixel limit, built to cost seconds of CPU or a gigabyte to decode
    # (imagelimits.py); test_hostile_images.py sends the same bodies to the embedded server
    body, status, words = HOSTILE_IMAGES[case]
    got = httpx.post(
        azml.url + "/score",
        content=body,
        headers={"content-type": "application/octet-stream"},
        timeout=60,
    )
    assert got.status_code == status, got.text
    error = got.json()["error"]
    assert error["code"] == ("image_too_large" if status == 413 else "invalid_image")
    for word in words:
        assert word in error["message"], (word, error)
    good_request(azml.url)
    no_crash_in(azml.log)


def test_json_too_deep_for_the_duplicate_key_check_is_400(azml: AzmlinfsrvServer) -> None:
    """A colon in a key sends the body to the standard library's parser (loads_json's
    duplicate-key check), which recursed past Python's limit on 1,000 nested lists (orjson
    takes them): a RecursionError, a 500."""
    body = b'{"a:b": 1, "inputs": ' + b"[" * 1000 + b"]" * 1000 + b"}"
    got = httpx.post(
        azml.url + "/score",
        content=body,
        headers={"content-type": "application/json"},
        timeout=60,
    )
    assert got.status_code == 400, got.text
    assert "nested too deeply" in got.json()["error"]["message"]
    good_request(azml.url)


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("raw=true&raw=nope", "given twice"),
        ("top_k=1&top_k=2", "given twice"),
        # a blank value is kept (Werkzeug), as on the embedded server
        ("top_k=", "top_k"),
    ],
)
def test_a_query_parameter_given_twice_or_blank_is_400(
    azml: AzmlinfsrvServer, query: str, words: str
) -> None:
    """Werkzeug keeps the first of two equal names, the embedded server's Starlette the
    last: refused on both, so one request never means two things."""
    got = httpx.post(
        azml.url + "/score?" + query,
        content=jpeg(40, 30, seed=3),
        headers={"content-type": "image/jpeg"},
        timeout=60,
    )
    assert got.status_code == 400, got.text
    assert words in got.json()["error"]["message"]
    good_request(azml.url)


def test_every_405_says_what_is_allowed(azml: AzmlinfsrvServer) -> None:
    for method, path, allow in (
        ("PUT", "/score", "POST"),
        ("DELETE", "/score", "POST"),
        ("GET", "/score", "POST"),
        ("POST", "/", "GET, HEAD"),
    ):
        got = httpx.request(method, azml.url + path, timeout=60)
        assert got.status_code == 405, (method, path)
        assert got.headers["allow"] == allow, (method, path)
        assert got.json()["error"]["code"] == "method_not_allowed"
    good_request(azml.url)


# --- a client that leaves while its request is served -------------------------------------

LEAVER_ROW = [7.0, 7.0]

#: azmlinfsrv's entry script for the echo fixture backend, held by a file (TEST_HOLD)
ENTRY_SCRIPT = """
import os

from azureml.contrib.services.aml_request import rawhttp

from fixture_backends import EchoBackend
from scorepack.azureml import runtime
from scorepack.batching import BatchingConfig
from scorepack.config import ScoringConfig
from scorepack.scorer import Scorer


def init():
    options = {"marker": os.environ["TEST_MARKER"], "hold": os.environ["TEST_HOLD"]}
    backend = EchoBackend(os.environ["TEST_MODEL"], options=options)
    batching = BatchingConfig(max_batch_size=1, max_delay_ms=0)
    scorer = Scorer(backend, ScoringConfig(warmup=False, batching=batching))
    made = runtime.use(runtime.AzureMLRuntime(scorer.start(wait=True)))
    made.serve_metrics(int(os.environ["SCOREPACK_METRICS_PORT"]), "127.0.0.1")


@rawhttp
def run(request):
    return runtime.run(request)
"""


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split() if path.exists() else []


def _held_echo_app(tmp_path: Path, threads: int) -> tuple[Path, Path, Path, dict[str, str], int]:
    """An app folder serving the echo model under azmlinfsrv with the package's server
    settings for ``threads`` scoring threads and a metrics port: the model call notes
    each batch in ``marker`` and waits while ``hold`` exists."""
    from scorepack.azureml.settings import server_environment
    from scorepack.generator.spec import DeploymentSettings

    app = tmp_path / "app"
    app.mkdir()
    (app / "score.py").write_text(ENTRY_SCRIPT, encoding="utf-8")
    model, marker, hold = tmp_path / "model.echo", tmp_path / "calls.txt", tmp_path / "hold"
    model.write_text("echo\n")
    metrics_port = free_port()
    env = child_env(
        **{
            **server_environment(DeploymentSettings(threads=threads)),
            "SCOREPACK_METRICS_PORT": str(metrics_port),
        },
        AML_APP_ROOT=str(app),
        PYTHONPATH=str(Path(__file__).parent),
        TEST_MODEL=str(model),
        TEST_MARKER=str(marker),
        TEST_HOLD=str(hold),
    )
    return app, marker, hold, env, metrics_port


def test_a_client_that_leaves_while_queued_costs_no_model_call(tmp_path: Path) -> None:
    """Under the real azmlinfsrv and scorepack's worker: the worker sees the socket close
    while a thread waits on the request, and the runtime drops its queued work before any
    model call, counted in scorepack_cancelled_requests_total."""
    from metrics_helpers import parse, value

    app, marker, hold, env, metrics_port = _held_echo_app(tmp_path, threads=4)
    log = tmp_path / "azmlinfsrv.log"
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"

    def metric(name: str, **labels: str) -> float:
        return value(parse(httpx.get(metrics_url, timeout=30).text), name, **labels)

    row = {"inputs": {"x": [[1.0, 2.0]]}}
    with (
        AzmlinfsrvServer(app, log=log, env=env, entry_script=app / "score.py") as azml,
        ThreadPoolExecutor(1) as pool,
    ):
        hold.touch()
        held = pool.submit(httpx.post, azml.url + "/score", json=row, timeout=120)
        wait_for(lambda: len(_lines(marker)) == 1, "the model call to begin", 60)
        body = json.dumps({"inputs": {"x": [LEAVER_ROW]}}).encode()
        leaver = socket.create_connection(address(azml.url), timeout=30)
        leaver.sendall(request(azml.url, body=body, headers={"Content-Type": "application/json"}))
        wait_for(lambda: metric("scorepack_queue_depth") == 1, "the request to queue", 60)
        leaver.close()
        wait_for(
            lambda: metric("scorepack_cancelled_requests_total") == 1, "the cancel to land", 60
        )
        hold.unlink()
        assert held.result(60).status_code == 200
        after = httpx.post(azml.url + "/score", json=row, params={"raw": "true"}, timeout=60)
        assert after.status_code == 200, after.text
        assert after.json()["outputs"]["y"] == [[1.0, 2.0]]
        samples = parse(httpx.get(metrics_url, timeout=30).text)
        server_log = azml.log
    # two model calls: the held request and the one after, never the one whose client left
    assert _lines(marker) == ["1", "1"]
    assert value(samples, "scorepack_cancelled_requests_total") == 1
    assert value(samples, "scorepack_model_calls_total") == 2
    # its access line and count say 499 (nginx's "client closed request"); nobody read it
    assert value(samples, "scorepack_requests_total", protocol="azureml", status="499") == 1
    no_crash_in(server_log)


def test_the_runtime_drops_the_work_of_a_cancelled_request(tmp_path: Path) -> None:
    """In-process: what the worker's cancel does to a request queued, and to one whose
    client left before a thread took it (not even decoded)."""
    from flask import Flask

    from fixture_backends import SlowBackend
    from scorepack.azureml.runtime import AzureMLRuntime
    from scorepack.cancellation import Cancellation, bound
    from scorepack.scorer import Scorer
    from serving_helpers import scoring_config

    backend = SlowBackend(tmp_path / "m.slow")
    scorer = Scorer(backend, scoring_config(warmup=False, max_batch_size=1, max_delay_ms=0))
    runtime = AzureMLRuntime(scorer.start())
    app = Flask("test")

    def post(row: list[float], cancellation: Cancellation | None = None) -> Any:
        body = json.dumps({"inputs": {"x": [row]}}).encode()
        with (
            app.test_request_context(
                "/score", method="POST", data=body, content_type="application/json"
            ),
            bound(cancellation),
        ):
            from flask import request as flask_request

            return runtime.run(flask_request)

    try:
        with ThreadPoolExecutor(2) as pool:
            backend.gate.clear()
            held = pool.submit(post, [1.0, 2.0])
            assert backend.entered.wait(30)
            gone = Cancellation()
            queued = pool.submit(post, LEAVER_ROW, gone)
            wait_for(lambda: scorer.batcher.queued == 1, "the second request to queue")
            gone.cancel()
            answer = queued.result(30)
            backend.gate.set()
            assert held.result(30).status_code == 200
        assert answer.status_code == 499
        assert json.loads(answer.get_data())["error"]["code"] == "client_closed_request"
        left_before = Cancellation()
        left_before.cancel()
        assert post(LEAVER_ROW, left_before).status_code == 499
        assert post([3.0, 4.0]).status_code == 200
    finally:
        backend.gate.set()
        runtime.close()
    assert tuple(LEAVER_ROW) not in backend.seen
    assert backend.calls == [1, 1]
    assert scorer.stats.cancelled == 2


def test_a_scoring_request_no_thread_may_take_is_503_at_once(tmp_path: Path) -> None:
    """Under the real azmlinfsrv with scorepack's worker and a deployment of 3 threads
    (gunicorn gets 4): 3 scoring requests held in the model take every thread scoring may
    have; the 4th is answered 503 with Retry-After at once (gthread would queue it for a
    thread without bound), and the liveness probe still gets the thread kept for it. Then
    everything is served."""
    from metrics_helpers import parse, value

    app, marker, hold, env, metrics_port = _held_echo_app(tmp_path, threads=3)
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    row = {"inputs": {"x": [[1.0, 2.0]]}}
    with (
        AzmlinfsrvServer(
            app, log=tmp_path / "azmlinfsrv.log", env=env, entry_script=app / "score.py"
        ) as azml,
        ThreadPoolExecutor(3) as pool,
    ):
        hold.touch()
        held = [
            pool.submit(httpx.post, azml.url + "/score", json=row, timeout=120) for _ in range(3)
        ]
        # one in the (held) model call, two queued behind it: three threads busy scoring
        wait_for(lambda: len(_lines(marker)) == 1, "the model call to begin", 60)
        wait_for(
            lambda: (
                value(parse(httpx.get(metrics_url, timeout=30).text), "scorepack_queue_depth") == 2
            ),
            "two requests to queue",
            60,
        )
        refused = httpx.post(azml.url + "/score", json=row, timeout=30)
        probe = httpx.get(azml.url + "/", timeout=30)
        # counted where an operator looks for refusals, as the runtime's own 503s are
        samples = parse(httpx.get(metrics_url, timeout=30).text)
        assert value(samples, "scorepack_requests_total", route="/score", status="503") == 1
        hold.unlink()
        answers = [f.result(120) for f in held]
        after = httpx.post(azml.url + "/score", json=row, params={"raw": "true"}, timeout=60)
        server_log = azml.log
    assert refused.status_code == 503, refused.text
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["code"] == "threads_busy"
    assert "3 requests in flight" in refused.json()["error"]["message"]
    assert probe.status_code == 200
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert after.status_code == 200 and after.json()["outputs"]["y"] == [[1.0, 2.0]]
    # the refused request never reached the model: three held calls and the one after
    assert _lines(marker) == ["1", "1", "1", "1"]
    assert "503 Every scoring thread is busy" in server_log
    no_crash_in(server_log)


#: requests h11 lets through and gunicorn's own parser refuses, and the status gunicorn
#: gives each; the answer is that status with scorepack's JSON error, not gunicorn's HTML
GUNICORN_REFUSALS: dict[str, tuple[bytes, int]] = {
    "request line over 4094 bytes": (
        b"GET /?" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        414,
    ),
    "header field over 8190 bytes": (
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",
        431,
    ),
    "over 100 header fields": (
        b"GET / HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-N%d: 1\r\n" % i for i in range(120))
        + b"\r\n",
        431,
    ),
    "a lower-case method": (b"get /nothing HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "an expectation other than 100-continue": (
        b"GET / HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\n\r\n",
        417,
    ),
    "a control character in a header value": (
        b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n",
        400,
    ),
}


@pytest.mark.parametrize("case", sorted(GUNICORN_REFUSALS))
def test_what_gunicorns_parser_refuses_is_a_json_error(case: str, azml: AzmlinfsrvServer) -> None:
    raw, status = GUNICORN_REFUSALS[case]
    got = exchange(azml.url, raw)
    assert got is not None, "closed without an answer"
    assert got.status == status, (got.status, got.body)
    assert got.headers["content-type"] == "application/json", got.body
    assert got.json()["error"]["message"]
    good_request(azml.url)
    no_crash_in(azml.log)
