"""Traces exported over OTLP/HTTP by the real exporter to a real receiver, end to end.

The exporter of azmlinfsrv's OpenTelemetry release (1.33.0) needs protobuf<6, which the dev
environment (TensorFlow 2.21, onnx) cannot have, so scripts/bootstrap installs it into a
folder of its own, ``.venv/otlp`` (requirements/otlp.txt says why). Here the servers run
with that folder ahead of the dev environment, which is the environment of an ONNX or
PyTorch package with tracing; the receiver (``otlp_receiver.py``) decodes what arrives with
opentelemetry-proto's ``ExportTraceServiceRequest``, as a collector does.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from cli_process import ServerProcess, cli_env
from fixture_backends import write_entry_point
from otlp_receiver import Receiver
from serving_helpers import wait_for

TESTS = Path(__file__).resolve().parent
#: where scripts/bootstrap installs requirements/otlp.txt (the venv running the tests)
OTLP = Path(sys.prefix) / "otlp"
if not (OTLP / "opentelemetry" / "exporter" / "otlp" / "proto" / "http").is_dir():
    pytest.skip(f"{OTLP} is missing: run scripts/bootstrap", allow_module_level=True)

BODY = b'{"inputs": {"x": [[1, 2], [3, 4]]}}'
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER = "00f067aa0ba902b7"
SERVER_KIND = 2  # opentelemetry.proto.trace.v1.Span.SpanKind.SPAN_KIND_SERVER
CHILDREN = {"scorepack.decode", "scorepack.queue", "scorepack.model"}
#: the dev-set distributions that need protobuf>=6: the only ones the folder leaves unmet
PROTOBUF_6_USERS = {"tensorflow-cpu", "onnx", "kserve", "grpcio-tools"}


def otlp_env(*paths: Path | str, **extra: str) -> dict[str, str]:
    """The environment of a process that exports: the exporter's folder first, then
    ``paths``; spans leave in 0.1 s batches rather than the default 5 s."""
    return cli_env([OTLP, *paths], OTEL_BSP_SCHEDULE_DELAY="100", **extra)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver(otlp_env()) as running:
        yield running


def traceparent(trace_id: str) -> str:
    return f"00-{trace_id}-{CALLER}-01"


def trace_of(spans: list[dict[str, Any]], trace_id: str) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in spans if s["trace_id"] == trace_id}


def check_trace(spans: dict[str, dict[str, Any]], server_name: str, model: str) -> dict[str, Any]:
    """The server span is the caller's child; decode, queue and model are the server span's,
    inside it, each naming the model; returns the server span."""
    assert set(spans) == {server_name, *CHILDREN}, sorted(spans)
    server = spans[server_name]
    assert server["kind"] == SERVER_KIND
    assert server["parent_span_id"] == CALLER
    assert server["scope"] == "scorepack"
    assert server["attributes"]["scorepack.model"] == model
    for name in CHILDREN:
        child = spans[name]
        assert child["parent_span_id"] == server["span_id"]
        assert server["start"] <= child["start"] <= child["end"] <= server["end"]
        assert child["attributes"]["scorepack.model"] == model
    assert spans["scorepack.decode"]["end"] <= spans["scorepack.model"]["start"]
    assert spans["scorepack.queue"]["end"] <= spans["scorepack.model"]["start"]
    return server


def test_the_exporter_folder_meets_azmlinfsrvs_pins() -> None:
    """The folder holds the exporter of the SDK release azmlinfsrv pins, and with it ahead
    of the dev environment every requirement is met but protobuf>=6 (pip says so)."""
    from importlib.metadata import requires, version

    pins = [r for r in requires("azureml-inference-server-http") or () if "opentelemetry-sdk" in r]
    assert pins == [f"opentelemetry-sdk=={version('opentelemetry-sdk')}"], pins
    code = (
        "from importlib.metadata import version;"
        "from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter;"
        "print(version('opentelemetry-exporter-otlp-proto-http'), version('protobuf'))"
    )
    shown = subprocess.run(
        [sys.executable, "-c", code], env=otlp_env(), capture_output=True, text=True, timeout=120
    )
    assert shown.returncode == 0, shown.stderr
    exporter, protobuf = shown.stdout.split()
    assert exporter == version("opentelemetry-sdk")
    assert protobuf.startswith("5.")
    checked = subprocess.run(
        [sys.executable, "-m", "pip", "check", "--disable-pip-version-check"],
        env=otlp_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    unmet = checked.stdout.strip().splitlines()
    expected = r"(\S+) \S+ has requirement protobuf\S+, but you have protobuf 5\.\S+"
    assert unmet, "pip check passed: the exporter could join the dev set now"
    for line in unmet:
        match = re.fullmatch(expected, line)
        assert match is not None and match.group(1) in PROTOBUF_6_USERS, line


def test_build_tracing_pins_the_exporter_folders_set() -> None:
    """``scorepack build --tracing`` pins, for a package, the set the dev environment's
    exporter folder holds (requirements/otlp.txt): one set, tested end to end here."""
    from scorepack.generator.tracing import tracing_requirements

    folder = {
        line.split("==")[0]: line
        for line in (TESTS.parent / "requirements" / "otlp.txt").read_text().splitlines()
        if line and not line.startswith("#")
    }
    pinned = {line.split("==")[0]: line for line in tracing_requirements(["protobuf==6.33.6"])}
    assert {name: pinned.get(name) for name in folder} == folder
    # and the SDK of azmlinfsrv's pin, which the exporter requires to the minor release
    assert pinned["opentelemetry-sdk"] == "opentelemetry-sdk==1.33.0"


def test_the_embedded_server_exports_http_and_grpc_traces(
    tmp_path: Path, receiver: Receiver
) -> None:
    import tritonclient.grpc as grpcclient

    site = tmp_path / "site"
    write_entry_point(site)
    model = tmp_path / "m.echo"
    model.write_text("an echo model\n")
    grpc_trace = TRACE_ID[::-1]
    args = [str(model), "--grpc-port", "0", "--otlp-endpoint", receiver.url]
    with ServerProcess(args, env=otlp_env(site, TESTS)) as server:
        response = httpx.post(
            server.url + "/score",
            content=BODY,
            headers={"content-type": "application/json", "traceparent": traceparent(TRACE_ID)},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        wait_for(lambda: any("grpc://" in line for line in server.log), "the gRPC address", 60)
        (address,) = [m.group(1) for line in server.log if (m := re.search(r"grpc://(\S+)", line))]
        tensor = grpcclient.InferInput("x", [2, 2], "FP32")
        tensor.set_data_from_numpy(np.ones((2, 2), np.float32))
        client = grpcclient.InferenceServerClient(address)
        try:
            client.infer("m", [tensor], headers={"traceparent": traceparent(grpc_trace)})
        finally:
            client.close()
        receiver.wait(
            lambda spans: (
                len(trace_of(spans, TRACE_ID)) == 4 and len(trace_of(spans, grpc_trace)) == 4
            )
        )

    http = check_trace(trace_of(receiver.spans, TRACE_ID), "POST /score", "m")
    assert http["attributes"]["http.response.status_code"] == 200
    assert http["resource"]["service.name"] == "m"
    rpc = check_trace(
        trace_of(receiver.spans, grpc_trace), "inference.GRPCInferenceService/ModelInfer", "m"
    )
    assert rpc["attributes"]["rpc.system"] == "grpc"
    assert rpc["attributes"]["rpc.grpc.status_code"] == 0
    for spans in (trace_of(receiver.spans, t) for t in (TRACE_ID, grpc_trace)):
        assert spans["scorepack.model"]["attributes"]["scorepack.batch_size"] == 2
    # it was the real exporter of the pinned release that sent them, as protobuf
    agents = {r["user-agent"] for r in receiver.requests}
    assert agents == {"OTel-OTLP-Exporter-Python/1.33.0"}, agents


def test_a_package_under_azmlinfsrv_exports_its_traces(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, receiver: Receiver
) -> None:
    """A PyTorch package built with ``--tracing``, served by ``serve-azureml
    --otlp-endpoint``: azmlinfsrv's gunicorn worker exports scorepack's spans with the
    exporter the package pins, beside azmlinfsrv's own OpenTelemetry (1.33.0). The
    environment check passes without ``--no-env-check``: what runs (the exporter's folder
    ahead of the dev environment) is what the package pins, protobuf 5 included."""
    pytest.importorskip("azureml_inference_server_http")
    from images import jpeg
    from packages import AzmlinfsrvServer, child_env, package_for

    # PyTorch: the one backend whose framework runs beside protobuf 5 (TensorFlow 2.21 and
    # onnx 1.23, which the ONNX backend imports, load protobuf 6 code)
    pytest.importorskip("scorepack_pytorch")
    package = package_for("pytorch", tmp_path_factory.getbasetemp() / "packages", tracing=True)
    pins = (package / "requirements.txt").read_text()
    assert "opentelemetry-exporter-otlp-proto-http==1.33.0" in pins
    assert "protobuf==5.29.6" in pins
    env = child_env(PYTHONPATH=str(OTLP), OTEL_BSP_SCHEDULE_DELAY="100")
    server = AzmlinfsrvServer(
        package, "--otlp-endpoint", receiver.url, log=tmp_path / "azmlinfsrv.log", env=env
    )
    with server:
        response = httpx.post(
            server.url + "/score",
            content=jpeg(40, 40, seed=1),
            headers={"traceparent": traceparent(TRACE_ID)},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        receiver.wait(lambda spans: len(trace_of(spans, TRACE_ID)) == 4)
    spans = trace_of(receiver.spans, TRACE_ID)
    model = spans["POST /score"]["resource"]["service.name"]
    server_span = check_trace(spans, "POST /score", model)
    assert server_span["attributes"]["http.response.status_code"] == 200
    assert spans["scorepack.model"]["attributes"]["scorepack.batch_size"] == 1
