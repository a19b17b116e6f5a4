"""Access lines as text or JSON, OpenTelemetry traces joined to the caller's, and CORS.

Traces go to the SDK's in-memory exporter (an OTLP collector is not something a test can
run here); everything between the HTTP request and the exporter is the real thing.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import httpx
import pytest

from cli_process import ServerProcess, cli_env, run_python
from fixture_backends import EchoBackend, write_entry_point
from scorepack.telemetry import tracing
from scorepack.telemetry.logs import AccessLine, JsonFormatter
from serving_helpers import serving

TESTS = Path(__file__).resolve().parent
BODY = b'{"inputs": {"x": [[1, 2], [3, 4]]}}'
JSON = {"content-type": "application/json"}


def test_json_lines_carry_the_access_fields() -> None:
    line = AccessLine("id-1", "POST", "/score", 200, 3.25, "azureml", "m", "2", 4, 1.5)
    record = logging.LogRecord("scorepack.access", logging.INFO, __file__, 1, line, None, None)
    document = json.loads(JsonFormatter().format(record))
    assert document["message"] == str(line)
    assert {k: document[k] for k in line._fields} == line._asdict()
    assert document["level"] == "INFO" and document["logger"] == "scorepack.access"
    assert document["time"].endswith("Z")
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        failed = logging.LogRecord(
            "scorepack.server", logging.ERROR, __file__, 1, "failed %s", ("x",), sys.exc_info()
        )
    document = json.loads(JsonFormatter().format(failed))
    assert document["message"] == "failed x"
    assert "ValueError: boom" in document["exception"]


@pytest.fixture
def plugin_env(tmp_path: Path) -> dict[str, str]:
    site = tmp_path / "site"
    write_entry_point(site)
    return cli_env([site, TESTS])


def test_serve_log_format_json(tmp_path: Path, plugin_env: dict[str, str]) -> None:
    model = tmp_path / "m.echo"
    model.write_text("an echo model\n")
    env = {**plugin_env, "SCOREPACK_LOG_FORMAT": "json"}
    with ServerProcess([str(model)], env=env) as server, httpx.Client(timeout=30) as client:
        sent = client.post(
            server.url + "/score",
            content=BODY,
            headers={**JSON, "x-request-id": "json-1", "authorization": "Bearer secret-key"},
        )
        assert sent.status_code == 200
        client.post(server.url + "/score", content=b"nope", headers={"x-request-id": "json-2"})
    # every line is JSON, the CLI's own "serving ... at URL" included: a collector that
    # parses each line as JSON would otherwise trip on the first one
    logged = [json.loads(line) for line in server.log if line.strip()]
    cli = [d["message"] for d in logged if d["logger"] == "scorepack.cli"]
    assert any(m.startswith("serving ") and f"at {server.url}/score" in m for m in cli), cli
    access = {d["request_id"]: d for d in logged if d["logger"] == "scorepack.access"}
    ok = access["json-1"]
    assert (ok["method"], ok["path"], ok["status"], ok["batch_size"]) == ("POST", "/score", 200, 2)
    assert (ok["model"], ok["protocol"]) == ("m", "azureml")
    assert ok["latency_ms"] >= 0 and ok["queue_ms"] >= 0
    assert access["json-2"]["status"] == 400 and access["json-2"]["batch_size"] is None
    assert "secret-key" not in server.log_text


def test_a_request_is_traced_under_the_callers_trace(tmp_path: Path) -> None:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    caller = "00f067aa0ba902b7"
    exporter = InMemorySpanExporter()
    tracing.configure(exporter=exporter, batch=False, service_name="test")
    try:
        with serving(EchoBackend(tmp_path / "m.echo")) as served:
            response = served.client.post(
                "/score",
                content=BODY,
                headers={**JSON, "traceparent": f"00-{trace_id}-{caller}-01"},
            )
            assert response.status_code == 200
            assert served.client.get("/health/ready").status_code == 200  # probes: no span
    finally:
        tracing.disable()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {"POST /score", "scorepack.decode", "scorepack.queue", "scorepack.model"}
    server = spans["POST /score"]
    assert server.kind == SpanKind.SERVER
    assert format(server.context.trace_id, "032x") == trace_id
    assert format(server.parent.span_id, "016x") == caller
    assert server.attributes["http.response.status_code"] == 200
    for name in ("decode", "queue", "model"):
        child = spans[f"scorepack.{name}"]
        assert child.context.trace_id == server.context.trace_id
        assert child.parent.span_id == server.context.span_id
        assert server.start_time <= child.start_time <= child.end_time <= server.end_time
    assert spans["scorepack.decode"].end_time <= spans["scorepack.model"].start_time
    assert spans["scorepack.model"].attributes["scorepack.batch_size"] == 2
    # the model is named on the server span (known once routed) and on each child
    for span in spans.values():
        assert span.attributes["scorepack.model"] == "m"


def test_tracing_off_imports_no_opentelemetry(tmp_path: Path) -> None:
    code = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import httpx
from fixture_backends import EchoBackend
from scorepack import Scorer
from scorepack.server import BackgroundServer
with BackgroundServer(Scorer(EchoBackend(Path(sys.argv[2])))) as server:
    r = httpx.post(server.url + "/score", content=b'{"inputs": [[1, 2]]}',
                   headers={"content-type": "application/json", "traceparent": "00-"
                            "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})
    assert r.status_code == 200, r.text
print(sorted(m for m in sys.modules if m.startswith("opentelemetry")))
"""
    done = run_python(code, str(TESTS), str(tmp_path / "m.echo"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_cors_is_off_by_default_and_on_for_the_given_origins(tmp_path: Path) -> None:
    pytest.importorskip("starlette")
    preflight = {
        "origin": "https://app.example",
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type",
    }
    with serving(EchoBackend(tmp_path / "m.echo")) as served:
        plain = served.client.post(
            "/score", content=BODY, headers={**JSON, "origin": "https://app.example"}
        )
        assert "access-control-allow-origin" not in plain.headers
    with serving(EchoBackend(tmp_path / "m.echo"), cors_origins=("https://app.example",)) as served:
        allowed = served.client.options("/score", headers=preflight)
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"
        assert "POST" in allowed.headers["access-control-allow-methods"]
        assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
        scored = served.client.post(
            "/score", content=BODY, headers={**JSON, "origin": "https://app.example"}
        )
        assert scored.status_code == 200
        assert scored.headers["access-control-allow-origin"] == "https://app.example"
        assert "x-request-id" in scored.headers["access-control-expose-headers"]
        other = served.client.options(
            "/score", headers={**preflight, "origin": "https://evil.example"}
        )
        assert other.status_code == 400
        assert "access-control-allow-origin" not in other.headers


def test_a_missing_otlp_exporter_is_named_with_its_protobuf_caveat() -> None:
    """The dev environment has azmlinfsrv's OpenTelemetry SDK but not its OTLP exporter
    (requirements/otlp.txt says why): asking for OTLP names the exporter to install and
    warns that its protobuf range may not fit the model's framework."""
    pytest.importorskip("opentelemetry.sdk")
    try:
        import opentelemetry.exporter.otlp.proto.http  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("the OTLP exporter is installed here")
    from scorepack.errors import ScorepackError

    with pytest.raises(ScorepackError) as caught:
        tracing.configure("http://127.0.0.1:9/v1/traces")
    message = str(caught.value)
    assert "pip install opentelemetry-exporter-otlp-proto-http==" in message
    assert "protobuf<6" in message
    assert not tracing.enabled
