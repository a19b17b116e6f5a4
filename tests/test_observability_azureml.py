"""Observability of a package under azmlinfsrv: metrics on their own port, JSON logs, the
package's OpenAPI documents at azmlinfsrv's /swagger.json, and azmlinfsrv's CORS setting.

azmlinfsrv lets a package add no routes, so the runtime serves Prometheus metrics from
``init()`` on ``SCOREPACK_METRICS_PORT``. The counting is checked in-process with real
Flask requests and a gated fixture backend (served, batched, rejected, timed out), then
end to end with azmlinfsrv itself.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from fixture_backends import SlowBackend
from metrics_helpers import parse, scrape, value
from packages import AzmlinfsrvServer, backend_params, child_env, free_port, package_for
from scorepack.scorer import Scorer
from scorepack.telemetry.metrics import INFLIGHT_GAUGE
from serving_helpers import scoring_config, wait_for

pytest.importorskip("azureml_inference_server_http")
pytest.importorskip("azureml.contrib.services")

from scorepack.azureml.runtime import AzureMLRuntime

ORIGIN = "https://app.example"


def flask_post(runtime: AzureMLRuntime, body: bytes, **headers: str) -> int:
    """One request through ``runtime.run`` as azmlinfsrv makes it: a real Flask request."""
    from flask import Flask

    app = Flask("test")
    with app.test_request_context(
        "/score", method="POST", data=body, headers={"content-type": "application/json", **headers}
    ):
        from flask import request

        return int(runtime.run(request).status_code)


def test_the_runtime_counts_served_batched_rejected_and_timed_out(tmp_path: Path) -> None:
    backend = SlowBackend(tmp_path / "pkg.slow")
    config = scoring_config(max_batch_size=4, max_queue_size=2, max_delay_ms=0, timeout_ms=1500)
    scorer = Scorer(backend, config).start()
    runtime = AzureMLRuntime(scorer)
    port = runtime.serve_metrics(0, "127.0.0.1")
    assert port
    row = b'{"inputs": {"x": [[1.0, 2.0]]}}'
    try:
        with ThreadPoolExecutor(3) as pool, httpx.Client(timeout=30) as client:
            url = f"http://127.0.0.1:{port}/metrics"
            backend.gate.clear()
            backend.entered.clear()
            try:
                held = pool.submit(flask_post, runtime, row)
                assert backend.entered.wait(20)
                queued = [pool.submit(flask_post, runtime, row) for _ in range(2)]
                # queued means decoded: then the two share the next model call
                wait_for(lambda: scorer.batcher.queued == 2, "two queued requests")
                assert flask_post(runtime, row) == 503  # the queue (bound 2) is full
                during = scrape(client, url)
                # the held call outlives the 1.5 s timeout: its request gets a 504
                assert held.result(30) == 504
            finally:
                backend.gate.set()
            # each queued one is scored, or answered 504 if its time ran out in the queue
            assert {f.result(30) for f in queued} <= {200, 504}
            wait_for(lambda: scorer.batcher.inflight == 0, "every request answered")
            after = scrape(client, url)
    finally:
        runtime.close()
    model = {"model": "pkg"}
    assert value(during, INFLIGHT_GAUGE, **model) == 3
    assert value(during, "scorepack_rejected_requests_total", **model) == 1
    assert value(during, "scorepack_requests_total", protocol="azureml", status="503") == 1
    assert value(after, "scorepack_timed_out_requests_total", **model) >= 1
    statuses = {s: value(after, "scorepack_requests_total", status=s) for s in ("200", "504")}
    assert statuses["200"] + statuses["504"] == 3
    assert value(after, "scorepack_request_duration_seconds_count", protocol="azureml") == 4
    # the held call, then the queued ones whose time had not run out, in one batch (they
    # were admitted a moment after the held one, so their deadlines are a moment later);
    # on a loaded machine a queued request may also run out of time DURING that call: it
    # was scored but answered 504, so the rows can outnumber the 200s
    served = statuses["200"]
    calls = value(after, "scorepack_model_calls_total", **model)
    rows = value(after, "scorepack_batch_size_sum", **model)
    assert (calls, rows) in {(1, 1), (2, 2), (2, 3)}
    assert served <= rows - 1
    assert value(after, "scorepack_timed_out_requests_total", **model) == 3 - served
    assert value(after, "process_cpu_seconds_total") > 0


def test_a_taken_metrics_port_is_a_warning_not_a_failure(tmp_path: Path) -> None:
    scorer = Scorer(SlowBackend(tmp_path / "a.slow"), scoring_config(warmup=False)).start()
    first, second = AzureMLRuntime(scorer), AzureMLRuntime(scorer)
    try:
        port = first.serve_metrics(0, "127.0.0.1")
        assert port
        # a second worker on the same port: no metrics server, and no crash
        assert second.serve_metrics(port, "127.0.0.1") is None
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
        assert value(parse(text), "scorepack_model_ready", model="a") == 1
    finally:
        first.close()
        second._stop_metrics_server()


@pytest.fixture(scope="module")
def azml(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AzmlinfsrvServer, int]]:
    backend = next((p.values[0] for p in backend_params() if not p.marks), None)
    if backend is None:
        pytest.skip("no backend installed")
    work = tmp_path_factory.getbasetemp() / "packages"
    package = package_for(str(backend), work)
    port = free_port()
    log = tmp_path_factory.mktemp("azml-obs") / "azmlinfsrv.log"
    server = AzmlinfsrvServer(
        package,
        "--metrics-port",
        str(port),
        "--cors-origin",
        ORIGIN,
        log=log,
        env=child_env(SCOREPACK_LOG_FORMAT="json"),
    )
    with server:
        yield server, port


def test_metrics_logs_swagger_and_cors_under_azmlinfsrv(
    azml: tuple[AzmlinfsrvServer, int],
) -> None:
    from images import jpeg

    server, port = azml
    with httpx.Client(timeout=60) as client:
        before = scrape(client, f"http://127.0.0.1:{port}/metrics")
        for i in range(3):
            ok = client.post(
                server.url + "/score",
                content=jpeg(40, 40, seed=i),
                headers={"x-request-id": f"az-{i}"},
            )
            assert ok.status_code == 200, ok.text
        bad = client.post(
            server.url + "/score", content=b"nope", headers={"content-type": "text/plain"}
        )
        assert bad.status_code == 415
        after = scrape(client, f"http://127.0.0.1:{port}/metrics")

        default = client.get(server.url + "/swagger.json")
        three = client.get(server.url + "/swagger.json", params={"version": "3"})
        preflight = client.options(
            server.url + "/score",
            headers={"origin": ORIGIN, "access-control-request-method": "POST"},
        )
    assert value(before, "scorepack_model_ready") == 1
    scored = value(after, "scorepack_requests_total", protocol="azureml", status="200")
    assert scored - value(before, "scorepack_requests_total", protocol="azureml", status="200") == 3
    assert value(after, "scorepack_requests_total", protocol="azureml", status="415") >= 1
    rows = value(after, "scorepack_inference_rows_total") - value(
        before, "scorepack_inference_rows_total"
    )
    assert rows == 3
    assert value(after, INFLIGHT_GAUGE) == 0

    # the package's own documents, not azmlinfsrv's generic one
    assert default.json() == json.loads((server.package / "swagger.json").read_text())
    assert three.json() == json.loads((server.package / "swagger3.json").read_text())
    assert "ScoreRequest" in three.json()["components"]["schemas"]

    # AML_CORS_ORIGINS, through azmlinfsrv's own flask-cors setup
    assert preflight.headers.get("access-control-allow-origin") == ORIGIN

    # scorepack's lines are JSON, one access line per scoring request, with its fields
    # (access lines are written in batches, every 100 ms: wait for them)
    def access_lines() -> dict[str, dict[str, object]]:
        lines = [json.loads(line) for line in server.log.splitlines() if line.startswith("{")]
        return {d.get("request_id"): d for d in lines if d.get("logger") == "scorepack.access"}

    wait_for(lambda: {"az-0", "az-1", "az-2"} <= set(access_lines()), "the access lines", 60)
    access = access_lines()
    for i in range(3):
        line = access[f"az-{i}"]
        assert (line["status"], line["protocol"], line["batch_size"]) == (200, "azureml", 1)
        assert line["queue_ms"] >= 0 and line["latency_ms"] > 0
