"""Prometheus metrics of the embedded server, read with prometheus-client's own parser.

A closed gate in the fixture backend holds the model thread, so the in-flight, queue and
batch numbers are checked at states reached structurally, never by sleeping.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)

from fixture_backends import EchoBackend, SlowBackend
from hostile import address, request
from metrics_helpers import labelled, scrape, total, value
from scorepack import Scorer
from scorepack.telemetry.gpu import nvml_collector
from scorepack.telemetry.logs import ACCESS_LOGGER, AccessLine
from scorepack.telemetry.metrics import INFLIGHT_GAUGE, Metrics
from serving_helpers import Served, scoring_config, serving, wait_for


def post_x(served: Served, x: float) -> httpx.Response:
    return served.score_json({"x": [[x, 0.0]]}, raw="true")


def test_numbers_move_as_requests_are_served_and_batched(tmp_path: Path) -> None:
    backend = SlowBackend(tmp_path / "held.slow")
    config = scoring_config(max_batch_size=4, max_delay_ms=0)
    with serving(backend, config) as served, ThreadPoolExecutor(4) as pool:
        before = scrape(served.client)
        assert value(before, "scorepack_model_ready", model="held") == 1
        assert value(before, "scorepack_model_load_seconds", model="held") > 0
        assert value(before, "scorepack_max_batch_size", model="held") == 4
        assert value(before, INFLIGHT_GAUGE, model="held") == 0
        backend.gate.clear()
        backend.entered.clear()
        try:
            first = pool.submit(post_x, served, 1.0)
            assert backend.entered.wait(20)
            rest = [pool.submit(post_x, served, float(i)) for i in (2, 3, 4)]
            # queued means decoded (queue_depth also counts requests still being decoded)
            wait_for(lambda: served.scorer.batcher.queued == 3, "three queued requests")
            held = scrape(served.client)
            # one in the model call, three queued: all four in flight
            assert value(held, INFLIGHT_GAUGE, model="held", version="") == 4
            assert value(held, "scorepack_queue_depth", model="held") == 3
        finally:
            backend.gate.set()
        assert [f.result(30).status_code for f in (first, *rest)] == [200] * 4
        after = scrape(served.client)

    assert value(after, INFLIGHT_GAUGE, model="held") == 0
    assert value(after, "scorepack_queue_depth", model="held") == 0
    # two model calls (the held one, then the three queued behind it), four rows
    assert value(after, "scorepack_model_calls_total", model="held") == 2
    assert value(after, "scorepack_inference_rows_total", model="held") == 4
    assert value(after, "scorepack_model_call_seconds_count", model="held") == 2
    assert value(after, "scorepack_batch_size_count", model="held") == 2
    assert value(after, "scorepack_batch_size_sum", model="held") == 4
    assert value(after, "scorepack_batch_size_bucket", model="held", le="1.0") == 1
    assert value(after, "scorepack_batch_size_bucket", model="held", le="4.0") == 2
    # fill: 1/4 and 3/4 of the most a call takes
    assert value(after, "scorepack_batch_fill_ratio_bucket", model="held", le="0.25") == 1
    assert value(after, "scorepack_batch_fill_ratio_bucket", model="held", le="0.75") == 2
    assert value(after, "scorepack_batch_fill_ratio_sum", model="held") == pytest.approx(1.0)
    # every request was decoded, queued and timed end to end
    for histogram in ("scorepack_decode_seconds", "scorepack_queue_wait_seconds"):
        assert value(after, f"{histogram}_count", model="held") == 4
    latency = {"model": "held", "protocol": "azureml"}
    assert value(after, "scorepack_request_duration_seconds_count", **latency) == 4
    assert value(after, "scorepack_request_duration_seconds_sum", **latency) > 0
    assert value(after, "scorepack_requests_total", route="/score", status="200") == 4
    # the three queued ones waited at least until the held call ended: a positive sum
    assert value(after, "scorepack_queue_wait_seconds_sum", model="held") > 0
    # and the buckets are cumulative, ending at +Inf with the count
    buckets = sorted(
        (float(labels["le"]), value(after, "scorepack_decode_seconds_bucket", **labels))
        for labels in labelled(after, "scorepack_decode_seconds_bucket")
    )
    assert [count for _, count in buckets] == sorted(count for _, count in buckets)
    assert buckets[-1] == (math.inf, 4)


def test_rejected_requests_are_counted(tmp_path: Path) -> None:
    backend = SlowBackend(tmp_path / "full.slow")
    config = scoring_config(max_batch_size=1, max_queue_size=1, max_delay_ms=0)
    with serving(backend, config) as served, ThreadPoolExecutor(2) as pool:
        backend.gate.clear()
        backend.entered.clear()
        try:
            held = pool.submit(post_x, served, 1.0)
            assert backend.entered.wait(20)
            queued = pool.submit(post_x, served, 2.0)
            wait_for(lambda: served.scorer.batcher.queue_depth == 1, "a queued request")
            # the queue (bound 1) is full: refused at once
            assert post_x(served, 3.0).status_code == 503
            during = scrape(served.client)
        finally:
            backend.gate.set()
        assert [held.result(30).status_code, queued.result(30).status_code] == [200, 200]
        after = scrape(served.client)
    assert value(during, "scorepack_rejected_requests_total", model="full") == 1
    assert value(during, "scorepack_requests_total", route="/score", status="503") == 1
    assert value(during, INFLIGHT_GAUGE, model="full") == 2
    assert value(after, "scorepack_requests_total", route="/score", status="200") == 2
    assert value(after, INFLIGHT_GAUGE, model="full") == 0
    # refusals are timed end to end too
    latency = {"model": "full", "protocol": "azureml"}
    assert value(after, "scorepack_request_duration_seconds_count", **latency) == 3


def test_timed_out_requests_are_counted(tmp_path: Path) -> None:
    backend = SlowBackend(tmp_path / "late.slow")
    config = scoring_config(max_batch_size=1, max_delay_ms=0, timeout_ms=200)
    with serving(backend, config) as served:
        backend.gate.clear()
        try:
            # the gate stays closed until the answer came: the model call outlives 200 ms
            assert post_x(served, 1.0).status_code == 504
            during = scrape(served.client)
        finally:
            backend.gate.set()
        wait_for(lambda: served.scorer.batcher.inflight == 0, "the held call to end")
        after = scrape(served.client)
    assert value(during, "scorepack_timed_out_requests_total", model="late") == 1
    assert value(during, "scorepack_requests_total", route="/score", status="504") == 1
    assert value(after, INFLIGHT_GAUGE, model="late") == 0


def test_a_cancelled_request_is_counted_and_leaves_the_inflight_gauge(tmp_path: Path) -> None:
    backend = SlowBackend(tmp_path / "gone.slow")
    scorer = Scorer(backend, scoring_config(max_batch_size=1, max_delay_ms=0)).start()
    metrics = Metrics(lambda: (scorer,), process=False, gpu=False)
    try:
        backend.gate.clear()
        backend.entered.clear()

        async def go() -> None:
            # the first request holds the model; the second waits in the queue and is
            # cancelled there, as a host cancels the task of a client that went away
            first = asyncio.ensure_future(scorer.handle_async(b'{"inputs": [[1, 2]]}'))
            await asyncio.get_running_loop().run_in_executor(None, backend.entered.wait, 20)
            second = asyncio.ensure_future(scorer.handle_async(b'{"inputs": [[3, 4]]}'))
            while scorer.batcher.inflight < 2:
                await asyncio.sleep(0.005)
            second.cancel()
            with pytest.raises(asyncio.CancelledError):
                await second
            backend.gate.set()
            await first

        asyncio.run(asyncio.wait_for(go(), 60))
        text, _ = metrics.render()
        from metrics_helpers import parse

        samples = parse(text.decode())
        assert value(samples, "scorepack_cancelled_requests_total", model="gone") == 1
        assert value(samples, INFLIGHT_GAUGE, model="gone") == 0
        assert value(samples, "scorepack_timed_out_requests_total", model="gone") == 0
    finally:
        backend.gate.set()
        scorer.close()


def test_a_client_that_leaves_is_counted_and_logged_as_499(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    backend = SlowBackend(tmp_path / "left.slow")
    config = scoring_config(warmup=False, max_batch_size=1, max_delay_ms=0)
    with serving(backend, config) as served:
        backend.gate.clear()
        backend.entered.clear()
        held = threading.Thread(target=post_x, args=(served, 1.0))
        held.start()
        try:
            assert backend.entered.wait(30), "the model never got the first request"
            body = b'{"inputs": {"x": [[7.0, 7.0]]}}'
            headers = {"Content-Type": "application/json", "x-request-id": "leaver"}
            with socket.create_connection(address(served.url), timeout=30) as leaver:
                leaver.sendall(request(served.url, body=body, headers=headers))
                wait_for(lambda: served.scorer.batcher.queued == 1, "the request to queue")
            wait_for(
                lambda: any(
                    isinstance(r.msg, AccessLine) and r.msg.request_id == "leaver"
                    for r in caplog.records
                ),
                "the access line of the request whose client left",
            )
        finally:
            backend.gate.set()
        held.join(30)
        after = scrape(served.client)
    (line,) = [
        r.msg
        for r in caplog.records
        if isinstance(r.msg, AccessLine) and r.msg.request_id == "leaver"
    ]
    assert (line.status, line.model, line.protocol, line.batch_size) == (
        499,
        "left",
        "azureml",
        None,
    )
    left = {"model": "left", "protocol": "azureml", "route": "/score"}
    assert value(after, "scorepack_requests_total", status="499", **left) == 1
    assert value(after, "scorepack_requests_total", status="200", **left) == 1
    assert value(after, "scorepack_cancelled_requests_total", model="left") == 1
    assert (7.0, 7.0) not in backend.seen


def test_each_server_has_its_own_registry(tmp_path: Path) -> None:
    with (
        serving(EchoBackend(tmp_path / "one.echo")) as one,
        serving(EchoBackend(tmp_path / "two.echo")) as two,
    ):
        for _ in range(3):
            assert post_x(one, 1.0).status_code == 200
        assert post_x(two, 1.0).status_code == 200
        first, second = scrape(one.client), scrape(two.client)
    assert labelled(first, "scorepack_model_ready") == [{"model": "one", "version": ""}]
    assert labelled(second, "scorepack_model_ready") == [{"model": "two", "version": ""}]
    assert total(first, "scorepack_requests_total", route="/score") == 3
    assert total(second, "scorepack_requests_total", route="/score") == 1


def test_process_metrics_openmetrics_and_gpu_metrics_only_with_a_gpu(tmp_path: Path) -> None:
    with serving(EchoBackend(tmp_path / "m.echo")) as served:
        samples = scrape(served.client)
        open_metrics = served.client.get(
            "/metrics", headers={"accept": "application/openmetrics-text; version=1.0.0"}
        )
    assert value(samples, "process_cpu_seconds_total") > 0
    assert value(samples, "process_resident_memory_bytes") > 0
    assert labelled(samples, "python_info")
    assert value(samples, "scorepack_model_info", model="m", backend="EchoBackend") == 1
    assert open_metrics.headers["content-type"].startswith("application/openmetrics-text")
    names = {f.name for f in openmetrics_families(open_metrics.text)}
    assert {"scorepack_requests", "scorepack_queue_wait_seconds"} <= names
    gpu = [name for name, _ in samples if name.startswith("scorepack_gpu_")]
    if nvml_collector() is None:
        assert gpu == []  # no driver here: no GPU metrics, and nothing failed
    else:
        assert value(samples, "scorepack_gpu_memory_total_bytes", gpu="0") > 0


@pytest.mark.gpu
def test_gpu_memory_and_utilisation_through_nvml() -> None:
    collector = nvml_collector()
    if collector is None:
        pytest.skip("no NVIDIA driver here")
    metrics = Metrics(lambda: (), process=False)
    from metrics_helpers import parse

    samples = parse(metrics.render()[0].decode())
    assert value(samples, "scorepack_gpu_memory_total_bytes", gpu="0") > 0
    assert 0 <= value(samples, "scorepack_gpu_utilization_ratio", gpu="0") <= 1


def test_the_autoscaler_scales_on_a_gauge_the_server_has(tmp_path: Path) -> None:
    from scorepack.targets import kubernetes_manifests

    assert kubernetes_manifests.INFLIGHT_METRIC == INFLIGHT_GAUGE
    with serving(EchoBackend(tmp_path / "m.echo")) as served:
        assert labelled(scrape(served.client), INFLIGHT_GAUGE) == [{"model": "m", "version": ""}]


def test_v2_requests_are_counted_under_their_protocol(tmp_path: Path) -> None:
    with serving(EchoBackend(tmp_path / "m.echo")) as served:
        body = {
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 2], "data": [1, 2, 3, 4]}]
        }
        assert served.client.post("/v2/models/m/infer", json=body).status_code == 200
        assert post_x(served, 1.0).status_code == 200
        samples = scrape(served.client)
    v2 = {"model": "m", "protocol": "v2", "status": "200"}
    assert value(samples, "scorepack_requests_total", **v2) == 1
    assert value(samples, "scorepack_requests_total", model="m", protocol="azureml") == 1
    assert value(samples, "scorepack_request_duration_seconds_count", protocol="v2") == 1
    # both went through the one batcher
    assert value(samples, "scorepack_inference_rows_total", model="m") == 3


def test_answers_before_a_model_is_picked_count_under_their_routes_protocol(
    tmp_path: Path,
) -> None:
    """An unknown model over V2 or /score, and V2 metadata, are counted with protocol v2 or
    azureml (a dashboard's error rate by protocol saw them under ""); a package under
    azmlinfsrv counts every /score answer as azureml, gRPC every call as grpc."""
    with serving(EchoBackend(tmp_path / "m.echo")) as served:
        client = served.client
        assert client.post("/v2/models/nope/infer", json={"inputs": []}).status_code == 404
        assert client.get("/v2/models/m").status_code == 200
        assert client.post("/score?model=nope", json={"inputs": {"x": [[1, 2]]}}).status_code == 404
        assert client.get("/score").status_code == 405
        assert client.get("/").status_code == 200
        samples = scrape(client)
    count = "scorepack_requests_total"
    v2_infer = {"route": "/v2/models/{name}/infer", "status": "404"}
    assert value(samples, count, protocol="v2", model="", **v2_infer) == 1
    assert value(samples, count, protocol="v2", route="/v2/models/{name}", status="200") == 1
    assert value(samples, count, protocol="azureml", route="/score", status="404") == 1
    assert value(samples, count, protocol="azureml", route="/score", status="405") == 1
    assert value(samples, count, protocol="", route="/", status="200") == 1
