"""A package is self-contained: ``serve-azureml --isolated`` makes a fresh
virtual environment from the package's requirements.txt and wheels alone, and azmlinfsrv
serves it from there with the same answers as scorepack in this environment — a package
of one model, and a package of several.

Slow (a virtual environment with a framework is installed, about 30 s each with pip's
cache warm), so there are just these two, each on the lightest installed backend.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from click.testing import CliRunner

import scorepack
from images import jpeg
from packages import BACKENDS, AzmlinfsrvServer, child_env, installed, package_for, tiny_model
from scorepack.cli import build_cli
from scorepack.loading import open_package
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


def _lightest_backend() -> str:
    backend = next((b for b in BACKENDS if installed(b)), None)
    if backend is None:
        pytest.skip("no backend installed")
    return backend


def _venv_python(cache: Path) -> Path:
    venvs = list((cache / "venvs").iterdir())
    assert len(venvs) == 1, venvs
    return venvs[0] / "bin" / "python"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_an_isolated_environment_serves_a_package_of_several_models(tmp_path: Path) -> None:
    """Two models of one backend with different settings (one labelled, top 2, batches of
    at most 4), packaged together, served --isolated: each scored by name with the answer
    scorepack gives here, and the worker's Python is the new environment's."""
    backend = _lightest_backend()
    repo = tmp_path / "repo"
    model = tiny_model(backend, tmp_path)
    for name in ("left", "right"):
        target = repo / name / model.name
        target.parent.mkdir(parents=True)
        (shutil.copytree if model.is_dir() else shutil.copyfile)(model, target)
    (repo / "right" / "labels.txt").write_text("ant\nbee\ncat\ndog\n")
    (repo / "right" / "model-settings.yaml").write_text(
        yaml.safe_dump(
            {
                "labels": "labels.txt",
                "scoring": {"postprocess": {"top_k": 2}, "batching": {"max_batch_size": 4}},
            }
        )
    )
    package = tmp_path / "pair"
    built = CliRunner().invoke(
        build_cli(),
        [
            *("build", "--repository", str(repo), "-o", str(package), "--device", "cpu"),
            *("--name", "pair", "--no-check", "--top-k", "3"),
        ],
    )
    assert built.exit_code == 0, built.output + str(built.exception)
    cache = tmp_path / "cache"
    image = jpeg(50, 40, seed=5)
    server = AzmlinfsrvServer(
        package,
        "--isolated",
        log=tmp_path / "azml.log",
        env=child_env(SCOREPACK_CACHE_DIR=str(cache)),
    )
    try:
        # the first start makes the environment: minutes on a busy machine
        server.wait_up(timeout=600)
        answers = {
            name: httpx.post(
                server.url + "/score",
                content=image,
                params={"model": name, "raw": "true"},
                headers={"content-type": "image/jpeg"},
                timeout=120,
            )
            for name in ("left", "right")
        }
        unknown = httpx.post(
            server.url + "/score", content=image, params={"model": "centre"}, timeout=120
        )
        commands = [
            Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
            for pid in _children(server.proc.pid)
        ]
    finally:
        server.stop()
    for name, classes in (("left", 3), ("right", 2)):
        got = answers[name]
        assert got.status_code == 200, got.text
        with open_package(
            package / "models" / name, model_dir=package / "model" / name, name=name
        ) as scorer:
            want = scorer.start().score(image, raw=True)
        top = got.json()["predictions"][0]["top_k"]
        assert len(top) == classes
        assert [e["index"] for e in top] == [e["index"] for e in want["predictions"][0]["top_k"]]
        for output, value in want["outputs"].items():
            np.testing.assert_allclose(got.json()["outputs"][output], value, rtol=1e-5, atol=1e-6)
    assert {e["label"] for e in answers["right"].json()["predictions"][0]["top_k"]} <= {
        "ant",
        "bee",
        "cat",
        "dog",
    }
    assert unknown.status_code == 404 and "left, right" in unknown.json()["error"]["message"]
    assert str(_venv_python(cache)) in commands, commands
    # the environment holds what the package carries: scorepack and the one backend's wheel
    spec = load_manifest(package)
    assert [m.name for m in spec.models] == ["left", "right"]
    site = next((_venv_python(cache).parent.parent / "lib").glob("python3*/site-packages"))
    for wheel in spec.wheels:
        dist = Path(wheel).name.split("-")[0]
        assert list(site.glob(f"{dist}-*.dist-info")), f"{dist} is not installed from {wheel}"
    assert "Using worker: scorepack.azureml.worker.BufferingThreadWorker" in server.log
