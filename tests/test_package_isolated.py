"""A package is self-contained: ``serve-azureml --isolated`` makes a fresh
virtual environment from the package's requirements.txt and wheels alone, and azmlinfsrv
serves it from there with the same answers as scorepack in this environment.

Slow (a virtual environment with a framework is installed), so there is just this one.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

import scorepack
from images import jpeg
from packages import BACKENDS, AzmlinfsrvServer, child_env, installed, package_for
from scorepack.manifest import load_manifest

pytest.importorskip("azureml_inference_server_http")


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        for child in task.read_text().split():
            found += [int(child), *_children(int(child))]
    return found


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_an_isolated_environment_serves_the_package(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # the lightest installed backend: the point is the environment, not the framework
    backend = next((b for b in BACKENDS if installed(b)), None)
    if backend is None:
        pytest.skip("no backend installed")
    package = package_for(backend, tmp_path_factory.getbasetemp() / "packages")
    cache = tmp_path / "cache"
    image = jpeg(60, 45, seed=9)
    with scorepack.load(package) as scorer:
        expected = scorer.score(image, raw=True)

    server = AzmlinfsrvServer(
        package,
        "--isolated",
        log=tmp_path / "azml.log",
        env=child_env(SCOREPACK_CACHE_DIR=str(cache)),
    )
    with server:
        response = httpx.post(
            server.url + "/score", content=image, params={"raw": "true"}, timeout=60
        )
        # the server runs on the new environment's Python, not this one's
        commands = [
            Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
            for pid in _children(server.proc.pid)
        ]
    assert response.status_code == 200, response.text
    got = response.json()
    assert [e["index"] for e in got["predictions"][0]["top_k"]] == [
        e["index"] for e in expected["predictions"][0]["top_k"]
    ]
    venvs = list((cache / "venvs").iterdir())
    assert len(venvs) == 1
    assert str(venvs[0] / "bin" / "python") in commands, commands
    # what is installed there came from the package: scorepack from its wheel, at its version
    spec = load_manifest(package)
    site = next((venvs[0] / "lib").glob("python3*/site-packages"))
    assert (site / "scorepack" / "azureml" / "runtime.py").is_file()
    assert (site / f"scorepack-{spec.scorepack_version}.dist-info").is_dir()
    origin = (
        site / f"scorepack-{spec.scorepack_version}.dist-info" / "direct_url.json"
    ).read_text()
    assert str(package / spec.wheels[0]) in origin
    assert "Using worker: scorepack.azureml.worker.BufferingThreadWorker" in server.log
