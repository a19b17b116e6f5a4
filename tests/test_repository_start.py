"""How ``scorepack serve`` starts a model repository, against what Triton does
(triton-inference-server/core ``ModelRepositoryManager::Create``, ``InferenceServer::
IsReady``, ``TRITONSERVER_ServerNew``), run as a user runs it:

* explicit model control starts with an empty repository folder, live and ready (Triton's
  strict readiness holds with no model), and loads models added to it later; without
  explicit control an empty folder is refused at start;
* ``--load-model`` naming no model of the repository stops the start (Triton: "failed to
  load all models"), and ``'*'`` goes alone (Triton's rule);
* a model that fails to load at start: one model stops the server, several serve on
  (Triton's ``--exit-on-error=false``) unless ``--exit-on-error`` asks to stop, and
  ``--no-exit-on-error`` keeps a one-model server up to load the model again once fixed.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from cli_process import ServerProcess, cli_env, run_cli
from fixture_backends import write_entry_point
from serving_helpers import wait_for

TESTS = Path(__file__).resolve().parent
X = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}

tritonclient_grpc = pytest.importorskip("tritonclient.grpc")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    site = tmp_path / "site"
    write_entry_point(site)
    return cli_env([site, TESTS])


def model(path: Path, text: str = "fixture\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _grpc_address(server: ServerProcess) -> str:
    return next(
        line.split("serving V2 gRPC at grpc://")[1]
        for line in server.log
        if "serving V2 gRPC at" in line
    )


def test_explicit_control_starts_with_an_empty_repository(
    tmp_path: Path, env: dict[str, str]
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    args = ["--repository", str(repo), "--model-control", "explicit", "--grpc-port", "0"]
    with ServerProcess(args, env) as server, httpx.Client(base_url=server.url, timeout=30) as c:
        assert "an empty model repository" in server.log_text
        # live and ready, as Triton is with nothing loaded; nothing listed
        assert c.get("/v2/health/live").json() == {"live": True}
        assert c.get("/v2/health/ready").json() == {"ready": True}
        assert c.get("/health/ready").json() == {"status": "ready", "models": []}
        assert c.get("/v2/models").json() == {"models": []}
        assert c.post("/v2/repository/index", json={}).json() == []
        grpc = tritonclient_grpc.InferenceServerClient(_grpc_address(server))
        try:
            assert grpc.is_server_live() and grpc.is_server_ready()
        finally:
            grpc.close()
        # scoring before any model: a JSON error saying what to do, never a 500
        unnamed = c.post("/score", json={"inputs": {"x": [[1, 2]]}})
        assert unnamed.status_code == 503
        assert unnamed.json()["error"]["code"] == "not_ready"
        assert "/v2/repository/models/NAME/load" in unnamed.json()["error"]["message"]
        named = c.post("/score", params={"model": "m"}, json={"inputs": {"x": [[1, 2]]}})
        assert named.status_code == 404
        assert named.json()["error"]["code"] == "model_not_found"
        assert c.post("/v2/models/m/infer", json=X).status_code == 404
        assert c.get("/metrics").status_code == 200
        assert c.get("/info").json() == {"models": [], "loaded": []}
        # a model folder added after the start is found by its load
        assert c.post("/v2/repository/models/m/load").status_code == 404
        model(repo / "m" / "m.echo")
        assert c.post("/v2/repository/models/m/load").status_code == 200
        assert c.post("/v2/models/m/infer", json=X).json()["outputs"][0]["data"] == [1, 2]
        # one model now: /score needs no name
        scored = c.post("/score", params={"raw": "true"}, json={"inputs": {"x": [[1, 2]]}})
        assert scored.json()["outputs"]["y"] == [[1.0, 2.0]]
        assert c.get("/v2/health/ready").status_code == 200
        assert c.get("/health/ready").json() == {"status": "ready", "model": "m"}
        # unloaded again: ready as Triton is (an unloaded model is not awaited); /score
        # says the model is not loaded
        assert c.post("/v2/repository/models/m/unload").status_code == 200
        assert c.get("/v2/health/ready").status_code == 200
        assert c.post("/score", json={"inputs": {"x": [[1, 2]]}}).status_code == 503
    assert server.proc.returncode == 0, server.log_text


def test_an_empty_repository_without_explicit_control_is_refused(
    tmp_path: Path, env: dict[str, str]
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    refused = run_cli("serve", "--repository", str(repo), env=env)
    assert refused.returncode == 2
    assert "holds no model folders" in refused.stderr
    assert "--model-control explicit" in refused.stderr


def test_load_model_must_name_a_model_of_the_repository(
    tmp_path: Path, env: dict[str, str]
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    explicit = ("serve", "--repository", str(repo), "--model-control", "explicit")
    empty = run_cli(*explicit, "--load-model", "m", env=env)
    assert empty.returncode == 2
    assert "--load-model m: no such model" in empty.stderr
    assert "holds no model yet" in empty.stderr
    model(repo / "a" / "a.echo")
    unknown = run_cli(*explicit, "--load-model", "m", env=env)
    assert unknown.returncode == 2
    assert "--load-model m: no such model; the models are a" in unknown.stderr
    wildcard = run_cli(*explicit, "--load-model", "*", "--load-model", "a", env=env)
    assert wildcard.returncode == 2
    assert "'*' loads every model: give it alone" in wildcard.stderr


def _states(c: httpx.Client) -> dict[str, tuple[str, str]]:
    index = c.post("/v2/repository/index", json={}).json()
    return {m["name"]: (m["state"], m["reason"]) for m in index}


def test_a_model_failing_at_start_serves_the_others_unless_exit_on_error(
    tmp_path: Path, env: dict[str, str]
) -> None:
    repo = tmp_path / "repo"
    model(repo / "good" / "g.echo")
    model(repo / "bad" / "b.nothing")  # no backend recognises it: its load fails
    # several models: the others serve, the failed one is not ready and says why
    # (Triton's --exit-on-error=false)
    server = ServerProcess(["--repository", str(repo)], env)
    try:
        with httpx.Client(base_url=server.wait_listening(), timeout=30) as c:
            wait_for(lambda: _states(c)["good"][0] == "READY", "the good model to load", timeout=90)
            state, reason = _states(c)["bad"]
            assert state == "UNAVAILABLE"
            assert reason.startswith("failed to load: No installed backend recognises")
            assert c.post("/v2/models/good/infer", json=X).status_code == 200
            ready = c.get("/v2/health/ready")
            assert ready.status_code == 503
            assert "bad (failed to load" in ready.json()["error"]
        assert server.proc.poll() is None, server.log_text
    finally:
        assert server.stop() == 0, server.log_text
    assert "model 'bad' failed to load" in server.log_text
    # --exit-on-error: the server stops, naming the model and why, as Triton by default
    stopped = run_cli("serve", "--repository", str(repo), "--port", "0", "--exit-on-error", env=env)
    assert stopped.returncode == 1, stopped.stderr
    assert (
        "Error: Stopped, as --exit-on-error asks (--no-exit-on-error serves the other models "
        "meanwhile): model 'bad' failed to load: No installed backend"
    ) in stopped.stderr


def test_one_model_failing_at_start_stops_the_server_unless_told_not_to(
    tmp_path: Path, env: dict[str, str]
) -> None:
    repo = tmp_path / "repo"
    broken = model(repo / "m" / "m.nothing")
    # one model: nothing to serve, the server stops with the reason
    stopped = run_cli("serve", "--repository", str(repo), "--port", "0", env=env)
    assert stopped.returncode == 1, stopped.stderr
    assert "Error: Stopped: model 'm' failed to load: No installed backend" in stopped.stderr
    # --no-exit-on-error, explicit control: up and not ready, until the model, fixed,
    # loads again
    args = ["--repository", str(repo), "--model-control", "explicit", "--no-exit-on-error"]
    server = ServerProcess(args, env)
    try:
        with httpx.Client(base_url=server.wait_listening(), timeout=30) as c:
            wait_for(lambda: _states(c)["m"][0] == "UNAVAILABLE", "the load to fail", timeout=90)
            assert c.get("/v2/health/live").status_code == 200
            assert c.get("/v2/health/ready").status_code == 503
            assert c.get("/health/ready").status_code == 503
            broken.unlink()
            model(repo / "m" / "m.echo")
            assert c.post("/v2/repository/models/m/load").status_code == 200
            assert c.get("/v2/health/ready").status_code == 200
            assert c.post("/v2/models/m/infer", json=X).status_code == 200
    finally:
        assert server.stop() == 0, server.log_text


def test_a_repository_folder_given_as_a_model_says_how_to_serve_it(
    tmp_path: Path, env: dict[str, str]
) -> None:
    repo = tmp_path / "repo"
    model(repo / "m" / "m.echo")
    wrong = run_cli("serve", str(repo), "--model-control", "explicit", env=env)
    assert wrong.returncode == 1
    assert f"is served with --repository {repo}." in wrong.stderr
