"""``scorepack serve`` with several models, run as a user runs it: NAME=PATH entries, a
repository folder with versions and model-settings.yaml, --model-control explicit, and
one model the old way still answering exactly as before."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from cli_process import ServerProcess, cli_env, run_cli
from fixture_backends import write_entry_point

TESTS = Path(__file__).resolve().parent
X = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    site = tmp_path / "site"
    write_entry_point(site)
    return cli_env([site, TESTS])


def model(path: Path, text: str = "fixture\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_named_models_and_a_repository_folder(tmp_path: Path, env: dict[str, str]) -> None:
    echo = model(tmp_path / "m.echo")
    repo = tmp_path / "repo"
    model(repo / "typed" / "1" / "a.types")
    model(repo / "typed" / "2" / "a.types")
    model(repo / "small" / "b.echo")
    (repo / "small" / "model-settings.yaml").write_text(
        "scoring:\n  batching:\n    max_batch_size: 3\n    max_delay_ms: 1\n"
    )
    args = [f"plain={echo}", "--repository", str(repo), "--max-batch-size", "16"]
    with ServerProcess(args, env) as server, httpx.Client(base_url=server.url, timeout=30) as c:
        assert "3 models (plain, small, typed)" in server.log_text
        assert c.get("/v2/models").json() == {"models": ["plain", "small", "typed"]}
        assert c.get("/v2/models/typed").json()["versions"] == ["1", "2"]
        info = {m["name"]: m for m in c.get("/info").json()["loaded"]}
        # the command line sets the defaults; a model's settings file changes them
        assert info["plain"]["max_batch_size"] == 16
        assert info["small"]["max_batch_size"] == 3
        assert c.post("/v2/models/small/infer", json=X).json()["outputs"][0]["data"] == [1, 2]
        typed = c.post(
            "/v2/models/typed/versions/1/infer",
            json={
                "inputs": [
                    {"name": "f", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]},
                    {"name": "i", "datatype": "INT64", "shape": [1, 3], "data": [1, 2, 3]},
                    {"name": "b", "datatype": "BOOL", "shape": [1, 1], "data": [True]},
                ]
            },
        ).json()
        assert typed["model_version"] == "1"
        scored = c.post(
            "/score", params={"model": "plain", "raw": "true"}, json={"inputs": {"x": [[1, 2]]}}
        )
        assert scored.json()["outputs"]["y"] == [[1.0, 2.0]]
        assert c.post("/v2/repository/models/plain/unload").status_code == 400  # control none


def test_explicit_model_control_from_the_command_line(tmp_path: Path, env: dict[str, str]) -> None:
    a, b = model(tmp_path / "a.echo"), model(tmp_path / "b.echo")
    args = [f"a={a}", f"b={b}", "--model-control", "explicit"]
    with ServerProcess(args, env) as server, httpx.Client(base_url=server.url, timeout=30) as c:
        assert c.post("/v2/repository/models/a/unload").status_code == 200
        assert c.get("/v2/models/a/ready").status_code == 503
        assert c.post("/v2/models/b/infer", json=X).status_code == 200
        assert c.post("/v2/repository/models/a/load").status_code == 200
        assert c.post("/v2/models/a/infer", json=X).status_code == 200
        assert "model 'a' unloaded" in server.log_text


def test_a_bad_model_in_a_repository_leaves_the_others_serving(
    tmp_path: Path, env: dict[str, str]
) -> None:
    repo = tmp_path / "repo"
    model(repo / "good" / "m.echo")
    model(repo / "broken" / "m.echo")
    (repo / "broken" / "model-settings.yaml").write_text("options:\n  load_delay: nope\n")
    server = ServerProcess(["--repository", str(repo)], env)
    try:
        url = server.wait_listening()
        with httpx.Client(base_url=url, timeout=30) as c:
            deadline_ok = _poll(
                lambda: c.get("/v2/models/broken").json().get("state") == "UNAVAILABLE"
            )
            assert deadline_ok, server.log_text
            assert _poll(lambda: c.get("/v2/models/good/ready").status_code == 200)
            assert "nope" in c.get("/v2/models/broken").json()["reason"]
            assert c.post("/v2/models/good/infer", json=X).status_code == 200
            assert c.get("/health/ready").status_code == 503
        assert "broken failed to load" in server.log_text
    finally:
        server.stop()


def _poll(condition: object, timeout: float = 60) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():  # type: ignore[operator]
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    return False


def test_one_model_the_old_way_is_unchanged(tmp_path: Path, env: dict[str, str]) -> None:
    echo = model(tmp_path / "m.echo")
    with (
        ServerProcess([str(echo)], env) as server,
        httpx.Client(base_url=server.url, timeout=30) as c,
    ):
        ready = c.get("/health/ready").json()
        assert ready == {"status": "ready", "model": "m"}
        assert c.post("/score", json={"inputs": {"x": [[1, 2]]}}).status_code == 200
        # and the same model speaks V2 under its file's name
        assert c.post("/v2/models/m/infer", json=X).status_code == 200
        metrics = c.get("/metrics").text
        assert "scorepack_model_ready 1" in metrics


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["a=nowhere"], ["nowhere", "does not exist"]),
        (["nowhere"], ["nowhere", "does not exist"]),
        (["=x", "b=y"], ["NAME=PATH"]),
        (["a=.", "b=.", "--runtime", "azureml"], ["embedded server only"]),
        ([], ["Give a model"]),
    ],
)
def test_usage_errors(args: list[str], words: list[str], env: dict[str, str]) -> None:
    result = run_cli("serve", *args, env=env)
    assert result.returncode == 2, result.stderr
    for word in words:
        assert word in result.stderr, result.stderr
