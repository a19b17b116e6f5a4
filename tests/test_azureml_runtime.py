"""Packages under Microsoft's azmlinfsrv, exactly as Azure ML runs them.

One azmlinfsrv per installed backend (started with ``scorepack serve-azureml PKG``
on 127.0.0.1, stopped by the fixture) is compared with the embedded server serving the
same package: the same scores, batching across gunicorn threads, and the same 4xx answers.
The runtime's own timeout, the Azure ML model-directory layouts, the environment check and
the server settings are tested in-process.
"""

from __future__ import annotations

import functools
import json
import shutil
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import httpx
import numpy as np
import pytest
from click.testing import CliRunner

import scorepack
from images import encode, jpeg, png
from packages import AzmlinfsrvServer, backend_params, package_for, sample_spec, tiny_model
from scorepack import Backend, BatchingConfig, ScoringConfig, Signature, TensorSpec
from scorepack.azureml import runtime
from scorepack.azureml.envcheck import check_environment, parse_pins
from scorepack.azureml.layout import locate_model_dir, make_model_dir
from scorepack.azureml.settings import WORKER_CLASS, scoring_from_env, server_environment
from scorepack.cli import build_cli
from scorepack.errors import IntegrityError, PackageError
from scorepack.generator.spec import DeploymentSettings
from scorepack.loading import open_package
from scorepack.manifest import load_manifest
from scorepack.scorer import Scorer
from scorepack.server import BackgroundServer

pytest.importorskip("azureml_inference_server_http")
pytest.importorskip("azureml.contrib.services")

#: small limits, so that requests over them stay cheap to make
LIMITS = {"max_body_bytes": 300_000, "max_image_pixels": 1_000_000}


def package_config() -> ScoringConfig:
    # a longer batching delay than the default, so that batches form even on a slow machine
    return ScoringConfig(batching=BatchingConfig(max_batch_size=16, max_delay_ms=25.0), **LIMITS)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.getbasetemp() / "packages"


@pytest.fixture(scope="module", params=backend_params())
def package(request: pytest.FixtureRequest, work: Path) -> Path:
    return package_for(str(request.param), work, config=package_config())


@pytest.fixture(scope="module")
def azml(package: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzmlinfsrvServer]:
    log = tmp_path_factory.mktemp("azml") / "azmlinfsrv.log"
    with AzmlinfsrvServer(package, log=log) as server:
        yield server


@pytest.fixture(scope="module")
def embedded(package: Path) -> Iterator[BackgroundServer]:
    with BackgroundServer(open_package(package)) as server:
        yield server


def post(
    url: str, body: bytes, content_type: str | None = "image/jpeg", **kw: Any
) -> httpx.Response:
    headers = {"content-type": content_type} if content_type else {}
    return httpx.post(url + "/score", content=body, headers=headers, timeout=60, **kw)


# --- scoring under azmlinfsrv ------------------------------------------------------------


def test_azmlinfsrv_runs_the_package_as_azure_ml_does(
    azml: AzmlinfsrvServer, package: Path
) -> None:
    log = azml.log
    name = load_manifest(package).name
    # Microsoft's server, bound to loopback only, with gthread workers (GUNICORN_CMD_ARGS)
    assert "Azure ML Inferencing HTTP server v1." in log
    assert f"Listening at: http://127.0.0.1:{azml.port}" in log
    assert "Using worker: scorepack.azureml.worker.BufferingThreadWorker" in log
    assert "Worker Count: 1" in log
    assert "run() is decorated with @rawhttp" in log
    assert f"Entry Script Name: {package / 'score.py'}" in log
    model_dir = next(line for line in log.splitlines() if line.startswith("Model Directory: "))
    assert model_dir.endswith(f"/azureml-models/{name}/1")


def test_scores_match_the_embedded_server(
    azml: AzmlinfsrvServer, embedded: BackgroundServer
) -> None:
    for body, ctype in ((jpeg(50, 40, seed=1), "image/jpeg"), (png(20, 30, seed=2), None)):
        got, want = (
            post(azml.url, body, ctype, params={"raw": "true"}),
            post(embedded.url, body, ctype, params={"raw": "true"}),
        )
        assert got.status_code == want.status_code == 200, got.text
        assert got.headers["content-type"] == "application/json"
        assert got.headers["x-scorepack-batch-size"] == "1"
        a, b = got.json(), want.json()
        assert [e["index"] for e in a["predictions"][0]["top_k"]] == [
            e["index"] for e in b["predictions"][0]["top_k"]
        ]
        for output, value in b["outputs"].items():
            np.testing.assert_allclose(a["outputs"][output], value, rtol=1e-5, atol=1e-7)


def test_concurrent_requests_are_batched_across_gunicorn_threads(azml: AzmlinfsrvServer) -> None:
    images = [jpeg(48, 48, seed=i) for i in range(4)]
    with httpx.Client(timeout=60) as client:
        reference = [client.post(azml.url + "/score", content=im).json() for im in images]

        def one(i: int) -> tuple[int, dict[str, Any], int]:
            response = client.post(azml.url + "/score", content=images[i % 4])
            return (
                response.status_code,
                response.json(),
                int(response.headers["x-scorepack-batch-size"]),
            )

        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(one, range(96)))
    assert [status for status, _, _ in results] == [200] * 96
    for i, (_, body, _) in enumerate(results):
        # a batch-mate never changes a request's answer
        assert [e["index"] for e in body["predictions"][0]["top_k"]] == [
            e["index"] for e in reference[i % 4]["predictions"][0]["top_k"]
        ]
    sizes = [size for _, _, size in results]
    assert max(sizes) > 1, f"no request was batched with another: {sizes}"


@functools.cache
def bad_requests() -> dict[str, dict[str, Any]]:
    from PIL import Image

    big_png = encode(Image.new("L", (1200, 1000), 128), "PNG")
    assert len(big_png) < LIMITS["max_body_bytes"]
    return {
        "empty": {"content": b"", "headers": {"content-type": "image/jpeg"}},
        "not-an-image": {
            "content": b"garbage bytes",
            "headers": {"content-type": "application/octet-stream"},
        },
        "text": {"content": b"hello", "headers": {"content-type": "text/plain"}},
        "gif-type": {"content": jpeg(), "headers": {"content-type": "image/gif"}},
        "truncated-jpeg": {
            "content": jpeg(64, 64)[:300],
            "headers": {"content-type": "image/jpeg"},
        },
        "bad-json": {
            "content": b'{"inputs": [1, 2',
            "headers": {"content-type": "application/json"},
        },
        "unknown-input": {
            "content": json.dumps({"inputs": {"nope": [1.0]}}).encode(),
            "headers": {"content-type": "application/json"},
        },
        "wrong-shape": {
            "content": json.dumps({"inputs": [[1.0, 2.0, 3.0]]}).encode(),
            "headers": {"content-type": "application/json"},
        },
        "bad-top-k": {"content": jpeg(), "params": {"top_k": "many"}},
        "unknown-param": {"content": jpeg(), "params": {"colour": "red"}},
        "body-too-large": {
            "content": b"\xff\xd8\xff" + bytes(400_000),
            "headers": {"content-type": "image/jpeg"},
        },
        "too-many-pixels": {"content": big_png, "headers": {"content-type": "image/png"}},
        "duplicate-key": {
            "content": b'{"inputs": {"image": [1.0], "image": [2.0]}}',
            "headers": {"content-type": "application/json"},
        },
        "booleans-for-floats": {
            "content": json.dumps({"inputs": [[[[True, 1.0]]]]}).encode(),
            "headers": {"content-type": "application/json"},
        },
        "gzip": {
            "content": jpeg(),
            "headers": {"content-type": "image/jpeg", "content-encoding": "gzip"},
        },
    }


@pytest.mark.parametrize("case", sorted(bad_requests()))
def test_bad_requests_get_the_embedded_servers_answers(
    case: str, azml: AzmlinfsrvServer, embedded: BackgroundServer
) -> None:
    request = bad_requests()[case]
    got = httpx.post(azml.url + "/score", timeout=60, **request)
    want = httpx.post(embedded.url + "/score", timeout=60, **request)
    assert 400 <= want.status_code < 500, want.text
    assert got.status_code == want.status_code, got.text
    assert got.json() == want.json()
    assert got.headers["content-type"] == "application/json"


def test_get_is_405_with_allow(azml: AzmlinfsrvServer, embedded: BackgroundServer) -> None:
    got, want = httpx.get(azml.url + "/score"), httpx.get(embedded.url + "/score")
    assert got.status_code == want.status_code == 405
    assert got.json() == want.json()
    assert got.json()["error"]["code"] == "method_not_allowed"
    assert got.headers["allow"] == want.headers["allow"] == "POST"


# --- a model with two inputs: JSON tensors ------------------------------------------------


@pytest.fixture(scope="module")
def multi_package(multi_input_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from scorepack.generator import build_package

    out = tmp_path_factory.mktemp("multi") / "pkg"
    return build_package(multi_input_path, out, device="cpu", targets={}).path


def test_json_tensors_for_a_multi_input_model(multi_package: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    body = json.dumps(
        {
            "inputs": {
                "image": rng.random((3, 16, 16, 3)).tolist(),
                "extra": rng.random((3, 4)).tolist(),
            }
        }
    ).encode()
    missing = json.dumps({"inputs": {"image": rng.random((1, 16, 16, 3)).tolist()}}).encode()
    with (
        AzmlinfsrvServer(multi_package, log=tmp_path / "azml.log") as azml,
        BackgroundServer(open_package(multi_package)) as embedded,
    ):
        for payload, ctype in (
            (body, "application/json"),
            (missing, "application/json"),
            (jpeg(), "image/jpeg"),
        ):
            raw = {"raw": "true"}
            got, want = (
                post(azml.url, payload, ctype, params=raw),
                post(embedded.url, payload, ctype, params=raw),
            )
            assert got.status_code == want.status_code, got.text
            if want.status_code == 200:
                np.testing.assert_allclose(
                    got.json()["outputs"]["scores"], want.json()["outputs"]["scores"], rtol=1e-5
                )
                assert np.asarray(got.json()["outputs"]["scores"]).shape == (3, 5)
            else:
                assert got.json() == want.json()


# --- the runtime in-process: timeout, init errors ---------------------------------------


class StuckBackend(Backend):
    """x float32 [batch, 2] → y; predict blocks until :attr:`release` is set."""

    release: ClassVar[threading.Event] = threading.Event()

    def load(self) -> None:
        self.signature = Signature(
            inputs=(TensorSpec("x", "float32", (None, 2)),),
            outputs=(TensorSpec("y", "float32", (None, 2)),),
        )

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.release.wait(30)
        return {"y": inputs["x"]}


def flask_request(
    method: str = "POST", body: bytes = b"", content_type: str = "application/json"
) -> Any:
    from flask import Request
    from werkzeug.test import EnvironBuilder

    return Request(
        EnvironBuilder(
            path="/score", method=method, data=body, content_type=content_type
        ).get_environ()
    )


def test_a_stuck_model_answers_504_within_the_packages_timeout() -> None:
    # azmlinfsrv's SIGALRM timeout cannot fire on gunicorn's threads; the runtime's must
    config = ScoringConfig(batching=BatchingConfig(timeout_ms=300, max_delay_ms=0), warmup=False)
    scorer = Scorer(StuckBackend("stuck"), config).start()
    StuckBackend.release.clear()
    try:
        answer = runtime.AzureMLRuntime(scorer)
        body = json.dumps({"inputs": {"x": [[1.0, 2.0]]}}).encode()
        with ThreadPoolExecutor(4) as pool:
            responses = list(pool.map(lambda _: answer.run(flask_request(body=body)), range(4)))
        for response in responses:
            assert response.status_code == 504
            assert json.loads(response.get_data())["error"]["code"] == "timeout"
            assert "300 ms" in json.loads(response.get_data())["error"]["message"]
    finally:
        StuckBackend.release.set()
        scorer.close()


def test_run_before_init_is_503() -> None:
    if runtime.current() is not None:
        pytest.skip("a runtime was initialised in this process")
    response = runtime.run(flask_request(body=b"{}"))
    assert response.status_code == 503
    assert json.loads(response.get_data())["error"]["code"] == "not_ready"
    assert response.headers["Retry-After"] == "1"


def test_init_refuses_a_tampered_model_under_azureml_model_dir(tmp_path: Path, work: Path) -> None:
    pytest.importorskip("onnx")
    package = shutil.copytree(package_for("onnx", work), tmp_path / "pkg")
    spec = load_manifest(package)
    model_dir = make_model_dir(spec, package, tmp_path / "azure")
    victim = model_dir / "model" / spec.model_files[0]
    victim.write_bytes(b"not the model")
    with pytest.raises(IntegrityError, match=spec.model_files[0]):
        runtime.init(
            package / "score.py", backend="onnx", environ={"AZUREML_MODEL_DIR": str(model_dir)}
        )
    with pytest.raises(PackageError, match=r"built for the onnx backend"):
        runtime.init(
            package / "score.py",
            backend="tensorflow",
            environ={"AZUREML_MODEL_DIR": str(model_dir)},
        )


def test_init_reads_the_one_settings_object(
    tmp_path: Path, work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """init() reads the package's SCOREPACK_* variables through PackageSettings: scoring,
    decoding and the read deadline alike, and every bad one at once."""
    pytest.importorskip("onnx")
    package = package_for("onnx", work)
    model_dir = make_model_dir(load_manifest(package), package, tmp_path / "azure")
    with pytest.raises(PackageError) as caught:
        runtime.init(
            package / "score.py",
            backend="onnx",
            environ={
                "AZUREML_MODEL_DIR": str(model_dir),
                "SCOREPACK_METRICS_PORT": "http",
                "SCOREPACK_DECODE_NICE": "40",
            },
        )
    assert "SCOREPACK_METRICS_PORT: Input should be a valid integer" in str(caught.value)
    assert "SCOREPACK_DECODE_NICE: Input should be less than or equal to 19" in str(caught.value)
    monkeypatch.setattr(runtime, "_runtime", None)  # put back after the test
    made = runtime.init(
        package / "score.py",
        backend="onnx",
        environ={
            "AZUREML_MODEL_DIR": str(model_dir),
            "SCOREPACK_DECODE_THREADS": "3",
            "SCOREPACK_DECODE_LOOKAHEAD": "5",
            "SCOREPACK_READ_TIMEOUT_S": "7",
            "SCOREPACK_MAX_BATCH_SIZE": "4",
            "SCOREPACK_PREFERRED_BATCH_SIZE": "3",
        },
    )
    try:
        decode = made.scorer.decoder.describe()
        assert (decode["decode_threads"], decode["decode_lookahead"]) == (3, 5)
        assert made.read_timeout_s == 7
        assert made.scorer.config.batching.max_batch_size == 4
        # the package's init() goes through the same Scorer: the same batches form
        made.scorer.wait_ready(120)
        assert made.scorer.batcher.batch_rows == 3
        assert made.scorer.describe()["batch_sizing"]["how"] == "fixed"
    finally:
        made.close()


def test_serve_refuses_a_tampered_package_before_starting(tmp_path: Path, work: Path) -> None:
    pytest.importorskip("onnx")
    package = shutil.copytree(package_for("onnx", work), tmp_path / "pkg")
    spec = load_manifest(package)
    (package / "model" / spec.model_files[0]).write_bytes(b"changed")
    result = CliRunner().invoke(build_cli(), ["serve-azureml", str(package), "--port", "0"])
    assert result.exit_code == 1
    assert "does not match the package manifest" in result.output
    # the old spelling still works, with a note naming the new one
    result = CliRunner().invoke(
        build_cli(), ["serve", str(package), "--runtime", "azureml", "--port", "0"]
    )
    assert result.exit_code == 1
    assert "does not match the package manifest" in result.output
    assert "deprecated; use `scorepack serve-azureml PKG`" in result.output


def test_serve_says_which_pins_this_environment_lacks(tmp_path: Path, work: Path) -> None:
    pytest.importorskip("onnx")
    package = shutil.copytree(package_for("onnx", work), tmp_path / "pkg")
    requirements = package / "requirements.txt"
    requirements.write_text(requirements.read_text() + "numpy==0.0.1\nno-such-dist==1.0\n")
    result = CliRunner().invoke(build_cli(), ["serve-azureml", str(package), "--port", "0"])
    assert result.exit_code == 1
    assert "numpy==0.0.1: numpy" in result.output
    assert "no-such-dist==1.0: not installed" in result.output
    assert "--isolated" in result.output


class _LegacySpelling(AzmlinfsrvServer):
    command = ("serve",)


def test_the_old_spelling_still_serves_under_azmlinfsrv(tmp_path: Path, work: Path) -> None:
    pytest.importorskip("onnx")
    package = package_for("onnx", work)
    args = ("--runtime", "azureml", "--threads", "3", "--max-batch-size", "2")
    with _LegacySpelling(package, *args, log=tmp_path / "azml.log") as server:
        assert httpx.get(server.url + "/", timeout=30).status_code == 200
        reply = httpx.post(server.url + "/score", content=jpeg(40, 30), timeout=60)
        assert reply.status_code == 200, reply.text
        # the options reached azmlinfsrv (threads) and the package (its batch size)
        environs = [_environ(pid) for pid in _children(server.proc.pid)]
        server_env = next(e for e in environs if "AZUREML_MODEL_DIR" in e)
        # 3 scoring threads, and one more gunicorn thread kept for the probes
        assert "--threads 4 " in server_env["GUNICORN_CMD_ARGS"]
        assert server_env["SCOREPACK_MAX_BATCH_SIZE"] == "2"
    assert "deprecated; use `scorepack serve-azureml PKG`" in server.log


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        for child in task.read_text().split():
            found += [int(child), *_children(int(child))]
    return found


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.decode(errors="replace").partition("=") for item in raw.split(b"\0") if item)
    return {k: v for k, _, v in pairs}


def test_serve_options_that_a_package_fixes_are_refused(work: Path) -> None:
    pytest.importorskip("onnx")
    # serve-azureml has no preprocessing options at all
    result = CliRunner().invoke(
        build_cli(), ["serve-azureml", str(package_for("onnx", work)), "--preset", "imagenet"]
    )
    assert result.exit_code == 2
    assert "No such option '--preset'" in result.output
    result = CliRunner().invoke(build_cli(), ["serve-azureml", str(tiny_model("onnx", work))])
    assert result.exit_code == 2
    assert "scorepack build" in result.output
    # the old spelling: the errors it always gave
    result = CliRunner().invoke(
        build_cli(),
        ["serve", str(package_for("onnx", work)), "--preset", "imagenet", "--runtime", "azureml"],
    )
    assert result.exit_code == 2
    assert "--preset" in result.output and "rebuild" in result.output
    result = CliRunner().invoke(
        build_cli(), ["serve", str(tiny_model("onnx", work)), "--runtime", "azureml"]
    )
    assert result.exit_code == 2
    assert "scorepack build" in result.output


# --- where Azure ML puts the model ------------------------------------------------------


def lay_out(root: Path, relative: str, names: tuple[str, ...]) -> Path:
    for name in names:
        path = root / relative / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    return root


@pytest.mark.parametrize(
    ("azureml_model_dir", "model_at"),
    [
        # one model: AZUREML_MODEL_DIR=.../azureml-models/NAME/VERSION, registered folder inside
        ("azureml-models/flowers/3", "azureml-models/flowers/3/model"),
        # a model registered from inside its folder: the files right there
        ("azureml-models/flowers/3", "azureml-models/flowers/3"),
        # several models: AZUREML_MODEL_DIR=.../azureml-models, each at NAME/VERSION
        ("azureml-models", "azureml-models/flowers/2/model"),
    ],
    ids=["single", "flat", "several"],
)
def test_the_model_is_found_where_azure_ml_mounts_it(
    tmp_path: Path, azureml_model_dir: str, model_at: str
) -> None:
    spec = sample_spec()
    lay_out(tmp_path, model_at, spec.model_files)
    found = locate_model_dir(
        spec, tmp_path / "pkg", {"AZUREML_MODEL_DIR": str(tmp_path / azureml_model_dir)}
    )
    assert found == tmp_path / model_at


def test_model_dir_without_azure_and_when_missing(tmp_path: Path) -> None:
    spec = sample_spec()
    assert locate_model_dir(spec, tmp_path, {}) == tmp_path / "model"
    assert locate_model_dir(spec, tmp_path, {}, explicit="/m") == Path("/m")
    lay_out(tmp_path, "azureml-models/other/1/model", ("weights.bin",))
    with pytest.raises(
        PackageError, match=r"does not hold this package's model.*other/1/model/weights\.bin"
    ):
        locate_model_dir(
            spec, tmp_path / "pkg", {"AZUREML_MODEL_DIR": str(tmp_path / "azureml-models")}
        )


def test_the_local_layout_is_azures(tmp_path: Path) -> None:
    spec = sample_spec()
    package = lay_out(tmp_path / "pkg", "model", spec.model_files)
    model_dir = make_model_dir(spec, package, tmp_path / "var")
    assert model_dir == tmp_path / "var" / "azureml-models" / "flowers" / "1"
    assert (
        locate_model_dir(spec, package, {"AZUREML_MODEL_DIR": str(model_dir)})
        == model_dir / "model"
    )


# --- settings ------------------------------------------------------------------------------


def test_server_environment_gives_one_worker_many_threads() -> None:
    env = server_environment(DeploymentSettings(threads=24, scoring_timeout_ms=45_000))
    assert env == {
        "WORKER_COUNT": "1",
        # the deployment's 24 scoring threads and one kept for the probes
        "GUNICORN_CMD_ARGS": f"--threads 25 --worker-class {WORKER_CLASS}",
        "SCORING_TIMEOUT_MS": "45000",
        "SCOREPACK_METRICS_PORT": "8002",
    }


def test_scoring_settings_from_the_environment() -> None:
    config = scoring_from_env(
        ScoringConfig(),
        {
            "SCOREPACK_MAX_BATCH_SIZE": "8",
            "SCOREPACK_TIMEOUT_MS": "1500",
            "SCOREPACK_TOP_K": "2",
            "SCOREPACK_MAX_BODY_BYTES": "1000",
            "SCOREPACK_PREFERRED_BATCH_SIZE": "off",
            "SCOREPACK_OTHER": "ignored",
        },
    )
    assert config.batching.max_batch_size == 8
    assert config.batching.preferred_batch_size == "off"
    assert config.batching.timeout_ms == 1500
    assert config.postprocess.top_k == 2
    assert config.max_body_bytes == 1000
    with pytest.raises(PackageError, match=r"SCOREPACK_MAX_BATCH_SIZE: .* not 'lots'"):
        scoring_from_env(ScoringConfig(), {"SCOREPACK_MAX_BATCH_SIZE": "lots"})
    with pytest.raises(PackageError, match="SCOREPACK_PREFERRED_BATCH_SIZE: use auto, off"):
        scoring_from_env(ScoringConfig(), {"SCOREPACK_PREFERRED_BATCH_SIZE": "lots"})
    with pytest.raises(PackageError, match="SCOREPACK_MAX_QUEUE_SIZE"):
        scoring_from_env(ScoringConfig(), {"SCOREPACK_MAX_QUEUE_SIZE": "0"})


def test_environment_check_reports_what_differs(tmp_path: Path) -> None:
    spec = sample_spec()
    (tmp_path / "requirements.txt").write_text(
        "# comment\ntensorflow-cpu==2.21.0\nnumpy==2.4.6\nuvloop==0.23.0; sys_platform == 'win32'\n"
        "./wheels/scorepack-0.1.0-py3-none-any.whl\n--extra-index-url https://example.invalid\n"
    )
    versions = {"tensorflow-cpu": "2.21.0", "numpy": "2.3.1", "scorepack": "0.1.0"}
    problems = check_environment(spec, tmp_path, version_of=versions.get, python="3.11")
    assert problems == [
        "numpy==2.4.6: numpy 2.3.1 is installed",
        "scorepack-tensorflow==0.1.0 (wheel): not installed",
    ]
    assert check_environment(spec, tmp_path, version_of=versions.get, python="3.12")[0] == (
        "Python 3.11: this is Python 3.12"
    )


def test_a_cuda_package_on_the_cpu_accepts_the_cpu_builds(tmp_path: Path) -> None:
    spec = replace(sample_spec(device="cuda"), backend_distribution="scorepack")
    (tmp_path / "requirements.txt").write_text(
        "tensorflow[and-cuda]==2.21.0\nonnxruntime-gpu[cuda,cudnn]==1.32.0\n"
        "--extra-index-url https://download.pytorch.org/whl/cu128\ntorch==2.13.0+cu128\n"
        "nvidia-cudnn-cu12==9.1.0\n"
    )
    cpu_builds = {
        "tensorflow-cpu": "2.21.0",
        "onnxruntime": "1.32.0",
        "torch": "2.13.0+cpu",
        "scorepack": "0.1.0",
    }
    assert (
        check_environment(
            spec, tmp_path, cpu_serving=True, version_of=cpu_builds.get, python="3.11"
        )
        == []
    )
    on_gpu = check_environment(
        spec, tmp_path, cpu_serving=False, version_of=cpu_builds.get, python="3.11"
    )
    assert on_gpu == [
        "tensorflow[and-cuda]==2.21.0: not installed",
        "onnxruntime-gpu[cuda,cudnn]==1.32.0: not installed",
        "torch==2.13.0+cu128: torch 2.13.0+cpu is installed",
        "nvidia-cudnn-cu12==9.1.0: not installed",
    ]
    # an ONNX GPU package pins the newest GPU release, older than the CPU one that built it
    onnx = replace(spec, framework="onnxruntime", framework_version="1.32.0")
    onnx_dir = tmp_path / "onnx"
    onnx_dir.mkdir()
    (onnx_dir / "requirements.txt").write_text("onnxruntime-gpu[cuda,cudnn]==1.31.1\n")
    assert check_environment(onnx, onnx_dir, cpu_serving=True, version_of=cpu_builds.get) == []
    older = {**cpu_builds, "onnxruntime": "1.30.0"}
    assert check_environment(onnx, onnx_dir, cpu_serving=True, version_of=older.get) == [
        "onnxruntime-gpu[cuda,cudnn]==1.31.1: onnxruntime 1.30.0 is installed"
    ]
    assert [p.name for p in parse_pins((tmp_path / "requirements.txt").read_text())] == [
        "tensorflow",
        "onnxruntime-gpu",
        "torch",
        "nvidia-cudnn-cu12",
    ]


def test_a_package_loads_with_scorepack_load(work: Path) -> None:
    pytest.importorskip("onnx")
    with scorepack.load(package_for("onnx", work), config=package_config()) as scorer:
        assert scorer.config.max_body_bytes == LIMITS["max_body_bytes"]
        assert scorer.score(jpeg())["predictions"][0]["top_k"]


def test_the_embedded_server_serves_a_package_with_runtime_overrides(work: Path) -> None:
    pytest.importorskip("onnx")
    from cli_process import ServerProcess

    package = package_for("onnx", work, config=package_config())
    with ServerProcess([str(package), "--max-batch-size", "4", "--top-k", "2"]) as server:
        info = httpx.get(server.url + "/info").json()
        scored = httpx.post(server.url + "/score", content=jpeg(), timeout=60)
    assert "the package" in server.log_text
    assert info["name"] == load_manifest(package).name
    assert info["max_batch_size"] == 4
    assert scored.status_code == 200
    assert len(scored.json()["predictions"][0]["top_k"]) == 2


def test_an_isolated_cuda_package_is_not_installed_on_the_cpu(work: Path) -> None:
    pytest.importorskip("onnx")
    from scorepack.azureml import host

    package = package_for("onnx", work)
    spec = replace(load_manifest(package), device="cuda")
    options = host.AzureMLServe(package=package, isolated=True, device="cpu")
    with pytest.raises(PackageError, match=r"CUDA package.*gigabytes"):
        host._python(options, spec, print)
