"""gRPC calls in ``/metrics``, in the access log and in traces, as HTTP requests are.

tritonclient.grpc drives the server; ``/metrics`` is read with prometheus-client's own
parser; access lines are the JSON the ``--log-format json`` formatter writes. A closed gate
in the slow backend holds the model thread, so cancelled and expired calls are made at
states reached structurally, never by sleeping.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest

from cli_process import ServerProcess, cli_env
from fixture_backends import EchoBackend, SlowBackend, write_entry_point
from grpc_helpers import GrpcServed, grpc_serving
from metrics_helpers import Samples, scrape, value
from scorepack.telemetry import tracing
from scorepack.telemetry.logs import ACCESS_LOGGER, JsonFormatter
from serving_helpers import scoring_config, wait_for

tritonclient_grpc = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402

TESTS = Path(__file__).resolve().parent
TIMEOUT = 30.0
INFER = "/inference.GRPCInferenceService/ModelInfer"
GRPC = {"protocol": "grpc"}


def triton(served: GrpcServed) -> Any:
    return tritonclient_grpc.InferenceServerClient(served.grpc_address)


def fp32(x: np.ndarray, name: str = "x") -> Any:
    tensor = tritonclient_grpc.InferInput(name, list(x.shape), "FP32")
    tensor.set_data_from_numpy(x.astype(np.float32))
    return tensor


def metrics(served: GrpcServed) -> Samples:
    with httpx.Client(base_url=served.url, timeout=TIMEOUT) as client:
        return scrape(client)


class AccessLines(logging.Handler):
    """The access lines, as the JSON formatter writes them, parsed back."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(JsonFormatter())
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))

    def by_id(self, request_id: str) -> dict[str, Any]:
        wait_for(
            lambda: any(d["request_id"] == request_id for d in self.lines),
            f"the access line of {request_id}",
        )
        (line,) = [d for d in self.lines if d["request_id"] == request_id]
        return line


@pytest.fixture
def access() -> Iterator[AccessLines]:
    logger = logging.getLogger(ACCESS_LOGGER)
    handler, level = AccessLines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.fixture
def echo(tmp_path: Path) -> Iterator[GrpcServed]:
    with grpc_serving({"echo": EchoBackend(tmp_path / "e.echo")}) as served:
        yield served


def test_grpc_calls_are_counted_by_method_and_status_code(echo: GrpcServed) -> None:
    client = triton(echo)
    assert client.is_server_live()
    for i in range(2):
        result = client.infer("echo", [fp32(np.full((1, 2), float(i)))])
        np.testing.assert_array_equal(result.as_numpy("y"), [[i, i]])
    with pytest.raises(InferenceServerException) as bad:
        client.infer("echo", [fp32(np.ones((1, 3)))])  # the model takes [N, 2]
    assert str(bad.value.status()) == "StatusCode.INVALID_ARGUMENT"
    with pytest.raises(InferenceServerException) as unknown:
        client.infer("nope", [fp32(np.ones((1, 2)))])
    assert str(unknown.value.status()) == "StatusCode.NOT_FOUND"
    # the same model over V2 REST: its own protocol label beside gRPC's
    rest = httpx.post(
        echo.url + "/v2/models/echo/infer",
        json={"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [5, 5]}]},
        timeout=TIMEOUT,
    )
    assert rest.status_code == 200, rest.text

    after = metrics(echo)
    echo_grpc = {"model": "echo", "version": "", **GRPC}
    assert value(after, "scorepack_requests_total", route=INFER, status="OK", **echo_grpc) == 2
    assert value(after, "scorepack_requests_total", status="INVALID_ARGUMENT", **echo_grpc) == 1
    # an unknown model is not a model: counted without one (as over HTTP)
    missing = {"model": "", "route": INFER, "status": "NOT_FOUND", **GRPC}
    assert value(after, "scorepack_requests_total", **missing) == 1
    live = {"route": "/inference.GRPCInferenceService/ServerLive", "status": "OK", **GRPC}
    assert value(after, "scorepack_requests_total", **live) == 1
    rest_ok = {"model": "echo", "protocol": "v2", "status": "200"}
    assert value(after, "scorepack_requests_total", **rest_ok) == 1
    # every call with a model is timed end to end, refusals too; the unknown one is not
    assert value(after, "scorepack_request_duration_seconds_count", **echo_grpc) == 3
    assert value(after, "scorepack_request_duration_seconds_sum", **echo_grpc) > 0
    assert value(after, "scorepack_request_duration_seconds_count", protocol="v2") == 1
    # the scorer's own histograms count every protocol: 2 gRPC + 1 REST scored
    assert value(after, "scorepack_queue_wait_seconds_count", model="echo") == 3
    assert value(after, "scorepack_decode_seconds_count", model="echo") == 3
    assert value(after, "scorepack_model_calls_total", model="echo") == 3


@pytest.fixture
def held(tmp_path: Path) -> Iterator[GrpcServed]:
    config = scoring_config(warmup=False, max_batch_size=1, max_delay_ms=0, max_queue_size=2)
    with grpc_serving({"slow": SlowBackend(tmp_path / "s.slow")}, config=config) as served:
        yield served


def test_cancelled_expired_and_refused_calls_are_counted(held: GrpcServed) -> None:
    backend, batcher = held.backend("slow"), held.scorer("slow").batcher
    slow = {"model": "slow", "route": INFER, **GRPC}

    def cancelled_count() -> float:
        return value(metrics(held), "scorepack_cancelled_requests_total", model="slow")

    backend.gate.clear()
    backend.entered.clear()
    try:
        first = held.future_infer("slow", np.full((1, 2), 1.0, np.float32))
        assert backend.entered.wait(TIMEOUT), "the model never got the first request"
        # two calls fill the queue (2 places) behind the held one; a third is refused
        cancelled = held.future_infer("slow", np.full((1, 2), 2.0, np.float32))
        queued = held.future_infer("slow", np.full((1, 2), 3.0, np.float32))
        wait_for(lambda: batcher.inflight == 3, "two calls queued")
        with pytest.raises(grpc.RpcError) as refused:
            held.future_infer("slow", np.ones((1, 2), np.float32)).result(timeout=TIMEOUT)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        during = metrics(held)
        assert cancelled.cancel()
        wait_for(lambda: cancelled_count() == 1, "the server to give up the cancelled call")
        # the cancelled call's place is free again: this one queues, then its deadline passes
        late = held.future_infer("slow", np.full((1, 2), 4.0, np.float32), timeout=3.0)
        with pytest.raises(grpc.RpcError) as expired:
            late.result(timeout=TIMEOUT)
        assert expired.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        wait_for(lambda: cancelled_count() == 2, "the server to give up the expired call")
    finally:
        backend.gate.set()
    first.result(timeout=TIMEOUT)
    queued.result(timeout=TIMEOUT)
    after = metrics(held)

    assert value(during, "scorepack_inflight_requests", model="slow") == 3
    assert value(during, "scorepack_queue_depth", model="slow") == 2
    assert value(during, "scorepack_rejected_requests_total", model="slow") == 1
    assert value(during, "scorepack_requests_total", status="UNAVAILABLE", **slow) == 1
    # a client's cancel and its deadline passing: cancelled (the client left first), not
    # the server's own timeout; the status says which
    assert value(after, "scorepack_timed_out_requests_total", model="slow") == 0
    assert value(after, "scorepack_requests_total", status="CANCELLED", **slow) == 1
    assert value(after, "scorepack_requests_total", status="DEADLINE_EXCEEDED", **slow) == 1
    assert value(after, "scorepack_requests_total", status="OK", **slow) == 2
    timed = {"model": "slow", **GRPC}
    assert value(after, "scorepack_request_duration_seconds_count", **timed) == 5
    assert value(after, "scorepack_inflight_requests", model="slow") == 0
    # neither given-up call reached the model
    assert value(after, "scorepack_model_calls_total", model="slow") == 2
    assert value(after, "scorepack_queue_wait_seconds_count", model="slow") == 2
    assert (2.0, 2.0) not in backend.seen and (4.0, 4.0) not in backend.seen


def test_the_servers_own_timeout_is_counted_as_timed_out(tmp_path: Path) -> None:
    config = scoring_config(warmup=False, max_delay_ms=0, timeout_ms=300)
    with grpc_serving({"slow": SlowBackend(tmp_path / "s.slow")}, config=config) as served:
        backend = served.backend("slow")
        backend.gate.clear()
        try:
            call = served.future_infer("slow", np.ones((1, 2), np.float32))
            with pytest.raises(grpc.RpcError) as late:
                call.result(timeout=TIMEOUT)
        finally:
            backend.gate.set()
        assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "SCOREPACK_TIMEOUT_MS" in late.value.details()
        wait_for(lambda: served.scorer("slow").batcher.queue_depth == 0, "an empty queue")
        # the server goes on: the next call is answered
        np.testing.assert_array_equal(served.infer("slow", np.full((1, 2), 3.0, np.float32)), 3)
        after = metrics(served)
    assert value(after, "scorepack_timed_out_requests_total", model="slow") == 1
    assert value(after, "scorepack_cancelled_requests_total", model="slow") == 0
    slow = {"model": "slow", "route": INFER, "status": "DEADLINE_EXCEEDED", **GRPC}
    assert value(after, "scorepack_requests_total", **slow) == 1


def test_grpc_and_v2_rest_access_lines(echo: GrpcServed, access: AccessLines) -> None:
    client = triton(echo)
    client.infer("echo", [fp32(np.ones((3, 2)))], headers={"x-request-id": "grpc-ok"})
    client.infer("echo", [fp32(np.ones((1, 2)))], request_id="v2-id")  # the request's id
    with pytest.raises(InferenceServerException):
        client.infer("echo", [fp32(np.ones((1, 3)))], headers={"x-request-id": "grpc-bad"})
    with pytest.raises(InferenceServerException):
        client.infer("nope", [fp32(np.ones((1, 2)))], headers={"x-request-id": "grpc-404"})
    client.infer(
        "echo",
        [fp32(np.ones((1, 2)))],
        headers={"x-request-id": "grpc-key", "authorization": "Bearer secret-key"},
    )
    client.infer("echo", [fp32(np.ones((1, 2)))], request_id="x" * 101)  # overlong
    rest = httpx.post(
        echo.url + "/v2/models/echo/infer",
        json={"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 2], "data": [1] * 4}]},
        headers={"x-request-id": "rest-ok"},
        timeout=TIMEOUT,
    )
    assert rest.status_code == 200, rest.text
    rest_bad = httpx.post(
        echo.url + "/v2/models/echo/infer",
        content=b"{",
        headers={"x-request-id": "rest-bad"},
        timeout=TIMEOUT,
    )
    assert rest_bad.status_code == 400

    ok = access.by_id("grpc-ok")
    assert (ok["method"], ok["path"], ok["protocol"]) == ("POST", INFER, "grpc")
    assert (ok["status"], ok["grpc_status"]) == (200, "OK")
    assert (ok["model"], ok["version"], ok["batch_size"]) == ("echo", None, 3)
    assert ok["latency_ms"] > 0 and ok["queue_ms"] >= 0
    assert ok["logger"] == ACCESS_LOGGER and ok["message"].startswith(f"POST {INFER} 200 ")
    assert access.by_id("v2-id")["batch_size"] == 1
    bad = access.by_id("grpc-bad")
    assert (bad["status"], bad["grpc_status"], bad["model"]) == (400, "INVALID_ARGUMENT", "echo")
    assert bad["batch_size"] is None and bad["queue_ms"] is None
    missing = access.by_id("grpc-404")
    assert (missing["status"], missing["grpc_status"], missing["model"]) == (404, "NOT_FOUND", None)
    # a key is never logged
    assert access.by_id("grpc-key")["status"] == 200
    assert "secret-key" not in json.dumps(access.lines)
    # an overlong id is replaced by a new one, as over HTTP
    known = {"grpc-ok", "v2-id", "grpc-bad", "grpc-404", "grpc-key", "rest-ok", "rest-bad"}
    wait_for(lambda: len(access.lines) == len(known) + 1, "every access line")
    (replaced,) = [d for d in access.lines if d["request_id"] not in known]
    assert len(replaced["request_id"]) == 36 and replaced["grpc_status"] == "OK"

    # V2 REST lines carry the batch size and the queue wait, as /score's do
    rest_line = access.by_id("rest-ok")
    assert (rest_line["path"], rest_line["status"], rest_line["protocol"]) == (
        "/v2/models/echo/infer",
        200,
        "v2",
    )
    assert (rest_line["model"], rest_line["batch_size"]) == ("echo", 2)
    assert rest_line["queue_ms"] >= 0 and rest_line["grpc_status"] is None
    rest_bad_line = access.by_id("rest-bad")
    assert (rest_bad_line["status"], rest_bad_line["batch_size"]) == (400, None)


def test_a_grpc_call_is_traced_under_the_callers_trace(echo: GrpcServed) -> None:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    caller = "00f067aa0ba902b7"
    exporter = InMemorySpanExporter()
    tracing.configure(exporter=exporter, batch=False, service_name="test")
    try:
        client = triton(echo)
        traceparent = {"traceparent": f"00-{trace_id}-{caller}-01"}
        client.infer("echo", [fp32(np.ones((2, 2)))], headers=traceparent)
        with pytest.raises(InferenceServerException):
            client.infer("nope", [fp32(np.ones((1, 2)))], headers=traceparent)
        assert client.is_server_ready()  # a probe: no span
    finally:
        tracing.disable()
    spans = exporter.get_finished_spans()
    servers = [s for s in spans if s.kind == SpanKind.SERVER]
    assert [s.name for s in servers] == ["inference.GRPCInferenceService/ModelInfer"] * 2
    scored, missing = servers
    for server in servers:
        assert format(server.context.trace_id, "032x") == trace_id
        assert format(server.parent.span_id, "016x") == caller
        assert server.attributes["rpc.system"] == "grpc"
        assert server.attributes["rpc.method"] == "ModelInfer"
    assert scored.attributes["rpc.grpc.status_code"] == 0
    assert missing.attributes["rpc.grpc.status_code"] == int(grpc.StatusCode.NOT_FOUND.value[0])
    children = {s.name: s for s in spans if s.kind != SpanKind.SERVER}
    assert set(children) == {"scorepack.decode", "scorepack.queue", "scorepack.model"}
    for child in children.values():
        assert child.parent.span_id == scored.context.span_id
        assert scored.start_time <= child.start_time <= child.end_time <= scored.end_time
    assert children["scorepack.model"].attributes["scorepack.batch_size"] == 2


def test_serve_counts_and_logs_grpc_in_its_json_log(tmp_path: Path) -> None:
    """``scorepack serve --grpc-port`` wires gRPC into the HTTP server's metrics and log."""
    site = tmp_path / "site"
    write_entry_point(site)
    model = tmp_path / "m.echo"
    model.write_text("an echo model\n")
    env = {**cli_env([site, TESTS]), "SCOREPACK_LOG_FORMAT": "json"}
    with ServerProcess([str(model), "--grpc-port", "0"], env=env) as server:
        wait_for(lambda: any("grpc://" in line for line in server.log), "the gRPC address", TIMEOUT)
        (address,) = [
            m.group(1)
            for line in server.log
            if (m := re.search(r"grpc://(127\.0\.0\.1:\d+)", line))
        ]
        client = tritonclient_grpc.InferenceServerClient(address)
        client.infer("m", [fp32(np.ones((2, 2)))], headers={"x-request-id": "cli-grpc"})
        with httpx.Client(base_url=server.url, timeout=TIMEOUT) as http:
            after = scrape(http)
    ok = {"model": "m", "route": INFER, "status": "OK", **GRPC}
    assert value(after, "scorepack_requests_total", **ok) == 1
    logged = [json.loads(line) for line in server.log if line.startswith("{")]
    (line,) = [d for d in logged if d.get("request_id") == "cli-grpc"]
    assert line["logger"] == ACCESS_LOGGER
    assert (line["status"], line["grpc_status"], line["batch_size"]) == (200, "OK", 2)
    assert (line["model"], line["protocol"], line["path"]) == ("m", "grpc", INFER)
