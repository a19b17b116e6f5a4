"""The switches that turn observability off: ``--no-metrics`` (Triton's
``--allow-metrics=false``) and ``--no-access-log`` (uvicorn's). Off, requests are served
as before, nothing is counted, ``/metrics`` answers 404 and no access line is written;
on (the default), ``test_metrics.py`` and ``test_logs_traces.py`` check what they do."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from cli_process import ServerProcess, cli_env, run_python
from fixture_backends import write_entry_point

TESTS = Path(__file__).resolve().parent
BODY = b'{"inputs": {"x": [[1, 2], [3, 4]]}}'
JSON = {"content-type": "application/json"}


@pytest.fixture
def plugin_env(tmp_path: Path) -> dict[str, str]:
    site = tmp_path / "site"
    write_entry_point(site)
    return cli_env([site, TESTS])


def _access_lines(log: list[str]) -> list[str]:
    return [line for line in log if "scorepack.access" in line]


@pytest.mark.parametrize("given", ["flags", "environment and file"])
def test_serve_with_metrics_and_access_lines_off(
    tmp_path: Path, plugin_env: dict[str, str], given: str
) -> None:
    model = tmp_path / "m.echo"
    model.write_text("an echo model\n")
    args, env = [str(model)], dict(plugin_env)
    if given == "flags":
        args += ["--no-metrics", "--no-access-log"]
    else:
        # each of the other two sources: a settings file and a SCOREPACK_* variable
        settings = tmp_path / "settings.yaml"
        settings.write_text("metrics: false\n")
        args += ["--settings", str(settings)]
        env["SCOREPACK_ACCESS_LOG"] = "false"
    with ServerProcess(args, env=env) as server, httpx.Client(timeout=30) as client:
        scored = client.post(server.url + "/score?raw=true", content=BODY, headers=JSON)
        assert scored.status_code == 200, scored.text
        assert scored.json()["outputs"]["y"] == [[1.0, 2.0], [3.0, 4.0]]
        bad = client.post(server.url + "/score", content=b"nope", headers=JSON)
        assert bad.status_code == 400
        v2 = client.post(
            server.url + "/v2/models/m/infer",
            json={"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [5, 6]}]},
        )
        assert v2.status_code == 200, v2.text
        metrics = client.get(server.url + "/metrics")
        assert metrics.status_code == 404
        assert metrics.json()["error"]["code"] == "not_found"
    assert _access_lines(server.log) == [], server.log_text
    # the server's other lines stay: the CLI's own and uvicorn's start-up
    assert any("serving" in line for line in server.log), server.log_text


def test_serve_with_the_defaults_logs_and_counts(
    tmp_path: Path, plugin_env: dict[str, str]
) -> None:
    """The same requests with the switches left alone (and said on): lines and counts."""
    model = tmp_path / "m.echo"
    model.write_text("an echo model\n")
    args = [str(model), "--metrics", "--access-log"]
    with ServerProcess(args, env=plugin_env) as server, httpx.Client(timeout=30) as client:
        assert client.post(server.url + "/score", content=BODY, headers=JSON).status_code == 200
        text = client.get(server.url + "/metrics").text
    assert 'scorepack_requests_total{model="m",protocol="azureml",route="/score"' in text
    lines = _access_lines(server.log)
    assert any("POST /score 200" in line for line in lines), server.log_text


def test_metrics_off_counts_nothing_and_imports_no_prometheus_client(tmp_path: Path) -> None:
    """In one process: HTTP and gRPC served with metrics off; nothing recorded, and the
    Prometheus library never imported (no registry, no collectors)."""
    pytest.importorskip("grpc")
    code = """
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import httpx
import numpy as np
from fixture_backends import EchoBackend
from grpc_helpers import GrpcServed
from scorepack import Scorer
from scorepack.repository import ModelSource, Repository
from scorepack.server import BackgroundServer
from scorepack.server.grpc_v2 import GrpcOptions
repository = Repository([ModelSource("m", None, lambda: Scorer(EchoBackend(Path(sys.argv[2])),
                                                                    name="m"))])
server = BackgroundServer(repository, grpc=GrpcOptions(0), metrics=False).start()
served = GrpcServed(server, repository)
try:
    r = httpx.post(server.url + "/score", content=b'{"inputs": [[1, 2]]}',
                   headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    assert served.infer("m", np.array([[7, 8]], "float32")).tolist() == [[7.0, 8.0]]
    assert httpx.get(server.url + "/metrics").status_code == 404
    print(json.dumps({
        "metrics": server.app.metrics is not None,
        "counted": len(server.app.requests.responses),
        "prometheus": sorted(m for m in sys.modules if m.startswith("prometheus_client")),
    }))
finally:
    served.close()
    server.stop()
    repository.close()
"""
    done = run_python(code, str(TESTS), str(tmp_path / "m.echo"))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "metrics": False,
        "counted": 0,
        "prometheus": [],
    }


def test_a_package_under_azmlinfsrv_takes_the_access_log_switch() -> None:
    """serve-azureml --no-access-log → SCOREPACK_ACCESS_LOG=false in the package's
    environment → the runtime's logging writes no access line (and still the others)."""
    import io
    import logging

    from scorepack.settings import AzureMLServeSettings, PackageSettings
    from scorepack.telemetry.logs import configure_azureml_logging, log_access

    environ = AzureMLServeSettings.load({"access_log": False}, environ={}).package_environ()
    assert environ["SCOREPACK_ACCESS_LOG"] == "false"
    assert PackageSettings.load(environ=environ).access_log is False
    assert PackageSettings.load(environ={}).access_log is True
    assert "SCOREPACK_ACCESS_LOG" not in AzureMLServeSettings.load({}, environ={}).package_environ()

    root = logging.getLogger("scorepack")
    saved = (root.handlers[:], root.level, root.propagate)
    try:
        for access_log in (False, True):
            stream = io.StringIO()
            configure_azureml_logging("text", "info", stream, access_log=access_log)
            log_access("id-1", "POST", "/score", 200, 0.002, protocol="azureml", model="m")
            logging.getLogger("scorepack.server").info("another line")
            for handler in root.handlers:
                handler.flush()  # INFO lines wait to be written in batches
            written = stream.getvalue()
            assert ("POST /score 200" in written) is access_log, written
            assert "another line" in written
    finally:
        for handler in root.handlers:
            if handler not in saved[0]:
                handler.close()  # stops its flushing thread
        root.handlers[:], root.level, root.propagate = saved[0], saved[1], saved[2]
        logging.getLogger("scorepack.access").setLevel(logging.NOTSET)
