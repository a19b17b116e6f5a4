"""The embedded server over real HTTP: routes, probes, request ids, logs, the queue-full,
timeout and not-ready paths, and errors that stay with their own request.

The fixture backends (tests/fixture_backends.py) let a test hold the model thread in
``load`` or ``predict`` with a closed gate, so the states these paths need are reached
structurally, never by sleeping.
"""

from __future__ import annotations

import logging
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from fixture_backends import EchoBackend, ErrorBackend, SlowBackend
from metrics_helpers import scrape, value
from serving_helpers import Served, error_of, scoring_config, serving, wait_for

ROW = {"x": [[1.0, 2.0]]}


def post_x(served: Served, *rows: list[float]) -> httpx.Response:
    """Score rows of x on an echo backend, asking for the raw outputs (y = x)."""
    return served.score_json({"x": [list(r) for r in rows]}, raw="true")


def in_threads(count: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(count, thread_name_prefix="test-client")


# --- routes ----------------------------------------------------------------------------


def test_routes(tmp_path: Path) -> None:
    with serving(EchoBackend(tmp_path / "m.echo")) as served:
        assert served.url.startswith("http://127.0.0.1:")  # loopback by default
        live = served.client.get("/")
        assert live.status_code == 200
        assert served.client.head("/").status_code == 200
        ready = served.client.get("/health/ready")
        assert ready.status_code == 200 and ready.json()["status"] == "ready"

        scored = post_x(served, [1.0, 2.0], [3.0, 4.0])
        assert scored.status_code == 200
        assert scored.headers["content-type"] == "application/json"
        body = scored.json()
        assert body["outputs"] == {"y": [[1.0, 2.0], [3.0, 4.0]]}
        # y looks like class scores, so top-k comes too, best first
        assert [p["top_k"][0]["index"] for p in body["predictions"]] == [1, 1]

        not_allowed = served.client.get("/score")
        assert not_allowed.status_code == 405
        assert not_allowed.headers["allow"] == "POST"
        assert error_of(not_allowed)["code"] == "method_not_allowed"
        assert served.client.put("/score", content=b"{}").status_code == 405
        assert served.client.post("/health/ready").status_code == 405

        missing = served.client.get("/v1/models")
        assert missing.status_code == 404
        assert error_of(missing)["code"] == "not_found"

        info = served.client.get("/info").json()
        assert info["signature"]["inputs"] == [
            {"name": "x", "dtype": "float32", "shape": [None, 2], "batched": True}
        ]
        assert info["ready"] is True

        metrics = scrape(served.client)
        assert value(metrics, "scorepack_requests_total", route="/score", status="200") == 1
        assert value(metrics, "scorepack_requests_total", route="other", status="404") == 1
        assert value(metrics, "scorepack_model_ready", model="m") == 1


def test_routes_answer_alike_every_time_they_are_asked(tmp_path: Path) -> None:
    # the router remembers its choice per method and path: asked again and again, in
    # turns, each request must land where it did the first time, with its own path
    # parameters, and unknown paths must stay 404s
    body = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [5, 6]}]}
    with serving(EchoBackend(tmp_path / "m.echo")) as served:
        for _ in range(3):
            assert post_x(served, [1.0, 2.0]).json()["outputs"] == {"y": [[1.0, 2.0]]}
            assert served.client.get("/score").status_code == 405
            assert served.client.head("/").status_code == 200
            infer = served.client.post("/v2/models/m/infer", json=body)
            assert infer.status_code == 200, infer.text
            assert infer.json()["model_name"] == "m"
            other = served.client.post("/v2/models/other/infer", json=body)
            assert other.status_code == 404, other.text
            assert "other" in other.json()["error"]
            assert served.client.get("/nowhere").status_code == 404
        metrics = scrape(served.client)
        assert value(metrics, "scorepack_requests_total", route="/score", status="200") == 3
        assert value(metrics, "scorepack_requests_total", route="/score", status="405") == 3
        infer_route = "/v2/models/{name}/infer"
        assert value(metrics, "scorepack_requests_total", route=infer_route, status="200") == 3
        assert value(metrics, "scorepack_requests_total", route=infer_route, status="404") == 3
        assert value(metrics, "scorepack_requests_total", route="other", status="404") == 3


def test_keys_are_required_when_set(tmp_path: Path) -> None:
    with serving(EchoBackend(tmp_path / "m.echo"), auth_keys=("k1", "k2")) as served:
        body = b'{"inputs": {"x": [[1, 2]]}}'
        headers = {"content-type": "application/json"}
        assert served.client.post("/score", content=body, headers=headers).status_code == 401
        wrong = served.client.post(
            "/score", content=body, headers={**headers, "authorization": "Bearer nope"}
        )
        assert wrong.status_code == 401 and error_of(wrong)["code"] == "unauthorized"
        assert wrong.headers["www-authenticate"].startswith("Bearer")
        for key in ("k1", "k2"):
            ok = served.client.post(
                "/score", content=body, headers={**headers, "authorization": f"Bearer {key}"}
            )
            assert ok.status_code == 200
        # probes stay open, as on Azure ML
        assert served.client.get("/health/ready").status_code == 200


# --- request ids and the log line ------------------------------------------------------


def test_request_id_is_echoed_or_created(tmp_path: Path) -> None:
    with serving(EchoBackend(tmp_path / "m.echo")) as served:
        sent = post_x(served, [1.0, 2.0]).request  # no id: one is made
        made = served.client.post("/score", content=sent.content, headers=dict(sent.headers))
        created = made.headers["x-request-id"]
        assert uuid.UUID(created)
        assert made.headers["x-ms-request-id"] == created

        again = served.client.post(
            "/score",
            content=sent.content,
            headers={"content-type": "application/json", "x-request-id": "abc-123"},
        )
        assert again.headers["x-request-id"] == "abc-123"
        assert again.headers["x-ms-request-id"] == "abc-123"

        # errors carry it too
        bad = served.client.get("/score", headers={"x-request-id": "err-1"})
        assert bad.status_code == 405 and bad.headers["x-request-id"] == "err-1"
        # two requests without ids get two ids
        other = served.client.get("/")
        assert other.headers["x-request-id"] != created


def test_one_log_line_per_request(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="scorepack.access")
    with serving(EchoBackend(tmp_path / "m.echo")) as served:
        ids = {"ok": "log-ok", "bad": "log-bad", "probe": "log-probe"}
        served.client.post(
            "/score",
            content=b'{"inputs": {"x": [[1, 2], [3, 4]]}}',
            headers={
                "content-type": "application/json",
                "x-request-id": ids["ok"],
                "authorization": "Bearer not-logged",
            },
        )
        served.client.post(
            "/score",
            content=b"nope",
            headers={"content-type": "text/plain", "x-request-id": ids["bad"]},
        )
        served.client.get("/health/ready", headers={"x-request-id": ids["probe"]})
    lines = {
        name: [
            r.getMessage()
            for r in caplog.records
            if r.name == "scorepack.access" and f"id={rid}" in r.getMessage()
        ]
        for name, rid in ids.items()
    }
    assert all(len(found) == 1 for found in lines.values()), lines
    ok = log_fields(lines["ok"][0])
    assert (ok["method"], ok["path"], ok["status"], ok["batch"]) == ("POST", "/score", "200", "2")
    assert (ok["model"], ok["protocol"]) == ("m", "azureml")
    assert float(ok["latency"]) >= 0 and float(ok["queue"]) >= 0
    bad = log_fields(lines["bad"][0])
    assert (bad["status"], bad["batch"], bad["queue"]) == ("415", "-", None)
    probe = log_fields(lines["probe"][0])
    assert (probe["path"], probe["status"], probe["model"]) == ("/health/ready", "200", None)
    assert not any("not-logged" in r.getMessage() for r in caplog.records)


def log_fields(line: str) -> dict[str, str | None]:
    """The fields of an access line (text format)."""
    match = re.match(
        r"^(?P<method>\S+) (?P<path>\S+) (?P<status>\d{3}) (?P<latency>[\d.]+)ms"
        r"(?: model=(?P<model>\S+))?(?: version=(?P<version>\S+))?(?: protocol=(?P<protocol>\S+))?"
        r" batch=(?P<batch>\S+)(?: queue=(?P<queue>[\d.]+)ms)? id=(?P<id>\S+)$",
        line,
    )
    assert match, line
    return match.groupdict()


# --- readiness -------------------------------------------------------------------------


def test_not_ready_until_loaded_and_warmed_up(tmp_path: Path) -> None:
    backend = SlowBackend(tmp_path / "m.slow")
    backend.load_gate.clear()
    backend.gate.clear()  # warm-up calls predict: hold it there too
    with serving(backend, wait_ready=False) as served:
        try:
            assert backend.load_entered.wait(20)
            # loading: alive, not ready, and scoring says so
            assert served.client.get("/").status_code == 200
            loading = served.client.get("/health/ready")
            assert loading.status_code == 503
            assert error_of(loading)["code"] == "not_ready"
            assert "loading" in error_of(loading)["message"]
            assert loading.headers["retry-after"] == "1"
            early = post_x(served, [1.0, 2.0])
            assert early.status_code == 503 and error_of(early)["code"] == "not_ready"
            assert value(scrape(served.client), "scorepack_model_ready", model="m") == 0

            # loaded, warming up: still not ready
            backend.load_gate.set()
            assert backend.entered.wait(20)
            assert backend.loaded and backend.calls == []
            assert served.client.get("/health/ready").status_code == 503
        finally:
            backend.load_gate.set()
            backend.gate.set()
        served.scorer.wait_ready(20)
        assert served.client.get("/health/ready").status_code == 200
        # warmed up at batch 1 and at the max batch size (then the batch sizes measured)
        assert backend.calls[:2] == [1, 32]
        assert post_x(served, [1.0, 2.0]).status_code == 200


def test_failed_load_is_reported_by_the_probe(tmp_path: Path) -> None:
    backend = EchoBackend(tmp_path / "m.echo", options={"load_delay": "not a number"})
    with serving(backend, wait_ready=False) as served:
        wait_for(lambda: served.scorer.batcher.failure is not None, "the load to fail")
        probe = served.client.get("/health/ready")
        assert probe.status_code == 503
        assert "failed to load" in error_of(probe)["message"]
        assert served.client.get("/").status_code == 200
        assert post_x(served, [1.0, 2.0]).status_code == 503


# --- the queue -------------------------------------------------------------------------


def test_queue_full_is_503_at_once_and_probes_still_answer(tmp_path: Path) -> None:
    backend = SlowBackend(tmp_path / "m.slow")
    config = scoring_config(max_batch_size=1, max_queue_size=2, max_delay_ms=0)
    with serving(backend, config) as served, in_threads(3) as pool:
        backend.gate.clear()
        backend.entered.clear()
        try:
            first = pool.submit(post_x, served, [1.0, 1.0])
            assert backend.entered.wait(20)  # the model thread holds request 1
            queued = [pool.submit(post_x, served, [float(i), 0.0]) for i in (2, 3)]
            wait_for(lambda: served.scorer.batcher.queue_depth == 2, "two queued requests")

            # the gate is still closed, so these answers cannot have waited on the model
            full = post_x(served, [4.0, 4.0])
            assert full.status_code == 503
            assert error_of(full)["code"] == "queue_full"
            assert int(full.headers["retry-after"]) >= 1
            assert served.client.get("/").status_code == 200
            assert served.client.get("/health/ready").status_code == 200
            assert value(scrape(served.client), "scorepack_queue_depth", model="m") == 2
            assert not first.done()
        finally:
            backend.gate.set()
        assert first.result(20).status_code == 200
        assert [f.result(20).json()["outputs"]["y"] for f in queued] == [[[2.0, 0.0]], [[3.0, 0.0]]]
        assert served.scorer.batcher.stats.rejected == 1
        assert post_x(served, [5.0, 5.0]).status_code == 200


def test_request_waiting_past_its_timeout_is_504(tmp_path: Path) -> None:
    backend = SlowBackend(tmp_path / "m.slow")
    config = scoring_config(max_batch_size=1, timeout_ms=300)
    with serving(backend, config) as served, in_threads(2) as pool:
        backend.gate.clear()
        backend.entered.clear()
        try:
            held = pool.submit(post_x, served, [1.0, 1.0])
            assert backend.entered.wait(20)
            # the gate stays closed well past 300 ms: this one can only time out
            waiting = post_x(served, [2.0, 2.0])
            assert waiting.status_code == 504
            error = error_of(waiting)
            assert error["code"] == "timeout" and "300 ms" in error["message"]
            # so does the one the model holds: the timeout bounds the whole wait
            assert held.result(20).status_code == 504
        finally:
            backend.gate.set()
        # the timed-out request is dropped, never scored; the server goes on
        wait_for(lambda: served.scorer.batcher.queue_depth == 0, "an empty queue")
        assert post_x(served, [3.0, 3.0]).json()["outputs"]["y"] == [[3.0, 3.0]]
        assert (1.0, 1.0) in backend.seen and (2.0, 2.0) not in backend.seen


def test_timed_out_requests_give_back_their_places_in_the_queue(tmp_path: Path) -> None:
    backend = SlowBackend(tmp_path / "m.slow")
    config = scoring_config(max_batch_size=1, max_queue_size=1, timeout_ms=200)
    with serving(backend, config) as served, in_threads(1) as pool:
        backend.gate.clear()
        backend.entered.clear()
        try:
            held = pool.submit(post_x, served, [1.0, 1.0])
            assert backend.entered.wait(20)
            assert post_x(served, [2.0, 2.0]).status_code == 504  # held the one place
            # the model is still busy, but the place is free again: admitted, then 504,
            # not refused with 503 for a request that is no longer waiting
            assert post_x(served, [3.0, 3.0]).status_code == 504
            assert served.scorer.batcher.stats.rejected == 0
        finally:
            backend.gate.set()
        assert held.result(20).status_code == 504
        assert post_x(served, [4.0, 4.0]).status_code == 200


def test_one_bad_request_does_not_fail_its_batch_mates(tmp_path: Path) -> None:
    backend = ErrorBackend(tmp_path / "m.error")
    config = scoring_config(max_batch_size=8, max_delay_ms=0)
    rows = [[1.0, 1.0], [2.0, 2.0], [-1.0, 0.0], [3.0, 3.0], [4.0, 4.0]]
    with serving(backend, config) as served, in_threads(6) as pool:
        warm = len(backend.calls)  # the warm-up's and the batch-size measuring's calls
        backend.gate.clear()
        backend.entered.clear()
        try:
            blocker = pool.submit(post_x, served, [0.0, 0.0])
            assert backend.entered.wait(20)
            futures = [pool.submit(post_x, served, row) for row in rows]
            # queued means decoded: queue_depth also counts requests still being decoded,
            # and with max_delay_ms=0 the batcher would not wait for those
            wait_for(lambda: len(served.scorer.batcher._queue) == len(rows), "a full batch queued")
        finally:
            backend.gate.set()
        assert blocker.result(20).status_code == 200
        answers = [f.result(20) for f in futures]
    for row, answer in zip(rows, answers, strict=True):
        if row[0] < 0:
            assert answer.status_code == 400, answer.text
            assert "poisoned" in error_of(answer)["message"]
        else:
            assert answer.status_code == 200, answer.text
            assert answer.json()["outputs"]["y"] == [row]
    # the five went to the model together once, then one by one
    calls = backend.calls[warm:]
    assert calls[:2] == [1, 5], calls
    assert sorted(calls[2:]) == [1, 1, 1, 1, 1]


def test_python_errors_in_a_backend_are_500_without_details_lost(tmp_path: Path) -> None:
    class Broken(EchoBackend):
        def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            if inputs["x"][0, 0] == 7:
                raise ZeroDivisionError("boom")
            return super().predict(inputs)

    with serving(Broken(tmp_path / "m.echo")) as served:
        failed = post_x(served, [7.0, 0.0])
        assert failed.status_code == 500
        error = error_of(failed)
        assert error["code"] == "predict_error" and "ZeroDivisionError" in error["message"]
        assert post_x(served, [1.0, 0.0]).status_code == 200


def test_backend_breaking_the_batch_contract_is_named(tmp_path: Path) -> None:
    class Short(EchoBackend):
        def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            out = super().predict(inputs)
            return {"y": out["y"][:1]} if len(out["y"]) == 3 else out

    with serving(Short(tmp_path / "m.echo")) as served:
        broken = post_x(served, [1.0, 0.0], [2.0, 0.0], [3.0, 0.0])
        assert broken.status_code == 500
        assert error_of(broken)["code"] == "backend_contract"
        assert "1 rows for 3 input rows" in error_of(broken)["message"]
        assert post_x(served, [1.0, 0.0]).status_code == 200
