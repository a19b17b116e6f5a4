"""The container build context of a package, proved without a container daemon.

The package's Dockerfile is carried out on the file system (tests/container_build.py): its
COPY steps take files from the build context as ``.dockerignore`` leaves it, its install
step makes a fresh virtual environment from the package's requirements.txt and wheels, and
the model lands where the pods mount it (/mnt/models, mapped under a temporary root). Then
the image's entrypoint runs with the image's environment — only the address changed to
127.0.0.1 and free ports — and answers like the model itself: its HEALTHCHECK command
passes, the Kubernetes probes' V2 routes answer, NVIDIA's tritonclient (the V2 client the
field uses) gets the model's metadata and the same outputs as the model in this process, and
``/score`` answers as azmlinfsrv's route does.

Slow (a virtual environment with a framework is installed), so there is just this one.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

import scorepack
from container_build import DockerfileRunner
from images import jpeg
from packages import BACKENDS, free_port, installed, package_for
from scorepack.generator.container import (
    APP_DIR,
    ENTRYPOINT,
    GRPC_PORT,
    HTTP_PORT,
    LIVE_PATH,
    MODEL_DIR,
    READY_PATH,
    USER_ID,
    VENV_DIR,
)
from scorepack.manifest import load_manifest


def _wait_ready(proc: subprocess.Popen[bytes], url: str, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=5) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited ({proc.returncode}):\n{log.read_text()}")
            try:
                if client.get(url + "/health/ready").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.25)
    raise TimeoutError(f"the server was not ready in {timeout} s:\n{log.read_text()}")


def _stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    return proc.returncode


def test_packages_carry_the_grpc_extra_so_the_image_serves_grpc() -> None:
    from importlib.metadata import PackageNotFoundError, version

    from scorepack.generator.resolve import pins_for

    pins = pins_for(("scorepack",), {"scorepack"})
    try:
        grpcio = version("grpcio")
    except PackageNotFoundError:
        pytest.skip("grpcio is not installed here")
    assert f"grpcio=={grpcio}" in pins
    # the other extras stay out: the image needs no Azure SDK
    assert not [p for p in pins if p.startswith(("azureml-core", "azure-ai-ml", "kubernetes"))]


def _v2_inputs(spec: Any) -> dict[str, Any]:
    """One row of seeded random values for each of the model's inputs."""
    rng = np.random.default_rng(3)
    inputs = {}
    for tensor in spec.signature.inputs:
        shape = [1, *(d or 4 for d in tensor.shape[1:])]
        inputs[tensor.name] = rng.random(shape).astype(tensor.dtype)
    return inputs


def _v2_client_checks(address: str, spec: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """tritonclient over HTTP: health, model readiness, metadata, one inference."""
    httpclient = pytest.importorskip("tritonclient.http")
    client = httpclient.InferenceServerClient(address, network_timeout=60.0)
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready(spec.name)
        metadata = client.get_model_metadata(spec.name)
        inputs = []
        for name, value in _v2_inputs(spec).items():
            item = httpclient.InferInput(name, list(value.shape), "FP32")
            item.set_data_from_numpy(value, binary_data=True)
            inputs.append(item)
        result = client.infer(spec.name, inputs)
        outputs = {o.name: result.as_numpy(o.name) for o in spec.signature.outputs}
        return metadata, outputs
    finally:
        client.close()


def _v2_grpc_checks(address: str, spec: Any) -> dict[str, Any]:
    """tritonclient over gRPC, at the image's gRPC port: readiness and one inference."""
    grpcclient = pytest.importorskip("tritonclient.grpc")
    client = grpcclient.InferenceServerClient(address)
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready(spec.name)
        inputs = []
        for name, value in _v2_inputs(spec).items():
            item = grpcclient.InferInput(name, list(value.shape), "FP32")
            item.set_data_from_numpy(value)
            inputs.append(item)
        result = client.infer(spec.name, inputs, client_timeout=60)
        return {o.name: result.as_numpy(o.name) for o in spec.signature.outputs}
    finally:
        client.close()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_image_build_steps_and_entrypoint_serve_the_package(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # the lightest installed backend: the point is the image, not the framework
    backend = next((b for b in BACKENDS if installed(b)), None)
    if backend is None:
        pytest.skip("no backend installed")
    package = package_for(backend, tmp_path_factory.getbasetemp() / "packages")
    spec = load_manifest(package)
    image = jpeg(60, 45, seed=11)
    with scorepack.load(package) as scorer:
        expected = scorer.score(image, raw=True)

    # the build context as docker sees it: the package directory alone, copied elsewhere
    context = tmp_path / "context"
    shutil.copytree(package, context)
    root = tmp_path / "image"
    built = DockerfileRunner(context, root, python=sys.executable).run()

    # only the user creation was left out (it needs root); the image runs as that user
    assert [step.split()[0] for step in built.skipped] == ["groupadd"]
    assert built.user == f"{USER_ID}:{USER_ID}"
    assert built.exposed == [HTTP_PORT, GRPC_PORT]
    assert built.entrypoint == list(ENTRYPOINT)
    assert built.env["SCOREPACK_HOST"] == "0.0.0.0"
    assert built.env["SCOREPACK_MODEL_DIR"] == MODEL_DIR
    # the model is where the pods mount it, and only there: not in the application folder
    models = built.path(MODEL_DIR)
    assert sorted(p.relative_to(models).as_posix() for p in models.rglob("*") if p.is_file()) == [
        *spec.model_files
    ]
    app = built.path(APP_DIR)
    assert not (app / "model").exists()
    # scorepack in the image came from the package's wheel, at the package's version
    venv = built.path(VENV_DIR)
    site = next((venv / "lib").glob("python3*/site-packages"))
    assert (site / f"scorepack-{spec.scorepack_version}.dist-info").is_dir()

    # the entrypoint, with the image's environment; only the address is this machine's
    port = free_port()
    grpc_port = next(p for p in iter(free_port, None) if p != port)
    env = {k: str(built.path(v)) if v.startswith("/opt/") else v for k, v in built.env.items()}
    env["PATH"] = built.env["PATH"].replace("/opt/", f"{root}/opt/")
    env.update(
        SCOREPACK_HOST="127.0.0.1",
        SCOREPACK_PORT=str(port),
        SCOREPACK_GRPC_PORT=str(grpc_port),
        SCOREPACK_MODEL_DIR=str(models),
        TF_CPP_MIN_LOG_LEVEL="3",
    )
    program = shutil.which(ENTRYPOINT[0], path=env["PATH"])
    assert program == str(venv / "bin" / "scorepack")
    argv = [program, *(str(built.path(a)) if a == APP_DIR else a for a in ENTRYPOINT[1:])]
    log = tmp_path / "server.log"
    url = f"http://127.0.0.1:{port}"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            argv,
            cwd=app,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_ready(proc, url, log, timeout=300)
        live = httpx.get(url + "/", timeout=30)
        response = httpx.post(url + "/score", content=image, params={"raw": "true"}, timeout=60)
        # the probes' routes, and the image's HEALTHCHECK command as the runtime runs it
        probes = [httpx.get(url + path, timeout=30).status_code for path in (LIVE_PATH, READY_PATH)]
        health = subprocess.run(
            built.healthcheck, env=env, cwd=app, capture_output=True, text=True, timeout=60
        )
        v2 = _v2_client_checks(f"127.0.0.1:{port}", spec)
        # gRPC on the port the image sets (SCOREPACK_GRPC_PORT), as a pod exposes it
        grpc_outputs = _v2_grpc_checks(f"127.0.0.1:{grpc_port}", spec)
    finally:
        code = _stop(proc)
    assert probes == [200, 200]
    assert health.returncode == 0, health.stderr
    assert live.status_code == 200
    assert response.status_code == 200, response.text
    got = response.json()
    assert [e["index"] for e in got["predictions"][0]["top_k"]] == [
        e["index"] for e in expected["predictions"][0]["top_k"]
    ]
    # V2: the same outputs as the model in this process
    metadata, outputs = v2
    assert [i["name"] for i in metadata["inputs"]] == list(spec.signature.input_names)
    with scorepack.load(package) as scorer:
        reference = scorer.predict(_v2_inputs(spec))
    for name, value in outputs.items():
        np.testing.assert_allclose(value, reference[name], rtol=1e-5, atol=1e-6)
    assert set(grpc_outputs) == set(outputs)
    for name, value in grpc_outputs.items():
        np.testing.assert_allclose(value, reference[name], rtol=1e-5, atol=1e-6)
    # a graceful stop on SIGTERM, as Kubernetes stops a pod
    assert code == 0, log.read_text()
