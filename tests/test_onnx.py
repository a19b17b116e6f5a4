"""The ONNX Runtime backend: signature, session options, providers, fixed batch sizes,
JSON tensors and images over HTTP, what inspect/backends/the server log show, packaging,
and (with a GPU) CUDA with IOBinding."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from click.testing import CliRunner  # noqa: E402

import images  # noqa: E402
import onnx_models  # noqa: E402
import scorepack  # noqa: E402
from scorepack import BatchingConfig, ScoringConfig  # noqa: E402
from scorepack.cli import build_cli  # noqa: E402
from scorepack.errors import (  # noqa: E402
    BackendOptionError,
    DeviceUnavailableError,
    InvalidTensorError,
    ModelLoadError,
)
from scorepack.server import BackgroundServer  # noqa: E402
from scorepack_onnx import SPEC, OnnxBackend, requirements  # noqa: E402


def _has_gpu() -> bool:
    return any(d.startswith("cuda") for d in OnnxBackend.available_devices())


gpu = pytest.mark.skipif(not _has_gpu(), reason="needs onnxruntime-gpu and a CUDA GPU")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("onnx")
    return {
        "dynamic": onnx_models.conv_classifier(root / "dynamic.onnx"),
        "batch4": onnx_models.conv_classifier(root / "batch4.onnx", batch=4),
        "two_inputs": onnx_models.two_inputs(root / "two_inputs.onnx"),
    }


@pytest.fixture(scope="module")
def exported_batch1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real torch.onnx.export of a CNN with batch 1 baked in (the default exporter)."""
    pytest.importorskip("torch")
    pytest.importorskip("onnxscript")
    from parity_models import to_onnx, torch_cnn

    return to_onnx(torch_cnn(), tmp_path_factory.mktemp("onnx_b1") / "cnn_b1.onnx", batch=1)


def _loaded(path: Path, **kwargs: object) -> OnnxBackend:
    backend = OnnxBackend(path, **kwargs)  # type: ignore[arg-type]
    backend.load()
    return backend


@pytest.fixture
def dynamic(models: dict[str, Path]) -> Iterator[OnnxBackend]:
    backend = _loaded(models["dynamic"], device="cpu")
    yield backend
    backend.unload()


def _batch(rows: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((rows, 3, 8, 8), dtype=np.float32)


# --- signature and predict -------------------------------------------------------------


def test_signature_is_read_from_the_graph(dynamic: OnnxBackend) -> None:
    sig = dynamic.signature
    assert [(s.name, s.dtype, s.shape) for s in sig.inputs] == [
        ("image", "float32", (None, 3, 8, 8))
    ]
    assert [(s.name, s.dtype, s.shape) for s in sig.outputs] == [("probs", "float32", (None, 4))]
    assert dynamic.max_batch_size is None


def test_predict_matches_onnxruntime_itself(models: dict[str, Path], dynamic: OnnxBackend) -> None:
    x = _batch(5)
    want = ort.InferenceSession(str(models["dynamic"]), providers=["CPUExecutionProvider"]).run(
        None, {"image": x}
    )[0]
    got = dynamic.predict({"image": x})["probs"]
    assert got.shape == (5, 4)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_several_inputs_and_outputs_with_their_own_dtypes(models: dict[str, Path]) -> None:
    backend = _loaded(models["two_inputs"], device="cpu")
    sig = backend.signature
    assert [(s.name, s.dtype) for s in sig.inputs] == [("a", "float32"), ("b", "int64")]
    assert sig.output_names == ["total", "norm"]
    out = backend.predict(
        {"a": np.ones((2, 3), np.float32), "b": np.array([[1, 2, 3], [4, 5, 6]], np.int64)}
    )
    np.testing.assert_array_equal(out["total"], [[2, 3, 4], [5, 6, 7]])
    np.testing.assert_array_equal(out["norm"], [[9], [18]])


# --- session options and providers -----------------------------------------------------


def test_cpu_defaults_fit_the_machine(dynamic: OnnxBackend) -> None:
    from scorepack_onnx.backend import cpu_count

    options = dynamic._session.get_session_options()
    assert options.intra_op_num_threads == cpu_count()
    assert options.inter_op_num_threads == 1
    assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    info = dynamic.describe()
    assert info["provider"] == "CPUExecutionProvider"
    assert info["device"] == "cpu"
    assert info["iobinding"] == "off"


def test_session_options_are_backend_options(models: dict[str, Path]) -> None:
    backend = _loaded(
        models["dynamic"],
        device="cpu",
        options={"intra_op_threads": 1, "inter_op_threads": 2, "graph_optimization_level": "basic"},
    )
    options = backend._session.get_session_options()
    assert options.intra_op_num_threads == 1
    assert options.inter_op_num_threads == 2
    assert options.execution_mode == ort.ExecutionMode.ORT_PARALLEL
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert backend.describe()["threads"] == "intra_op=1, inter_op=2"
    assert backend.predict({"image": _batch(2)})["probs"].shape == (2, 4)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"graph_optimization_level": "max"}, "disable, basic, extended, all"),
        ({"intra_op_threads": "many"}, "intra_op_threads"),
        ({"inter_op_threads": -1}, "inter_op_threads"),
        ({"providers": "NoSuchExecutionProvider"}, "CPUExecutionProvider"),
        ({"allow_spinning": "perhaps"}, "true or false"),
    ],
)
def test_bad_options_say_what_is_accepted(
    models: dict[str, Path], options: dict[str, object], message: str
) -> None:
    with pytest.raises(ModelLoadError, match=message):
        _loaded(models["dynamic"], device="cpu", options=options)


def test_unknown_option_lists_the_valid_ones(models: dict[str, Path]) -> None:
    with pytest.raises(BackendOptionError, match="graph_optimization_level"):
        OnnxBackend(models["dynamic"], options={"threads": 2})


def test_explicit_providers(models: dict[str, Path]) -> None:
    backend = _loaded(
        models["dynamic"], device="cpu", options={"providers": "CPUExecutionProvider"}
    )
    assert backend.describe()["providers"] == "CPUExecutionProvider"


@pytest.mark.skipif(_has_gpu(), reason="checks the CPU-only machine")
def test_cuda_without_a_gpu_is_an_error_not_a_silent_cpu(models: dict[str, Path]) -> None:
    with pytest.raises(DeviceUnavailableError, match="--device cpu"):
        _loaded(models["dynamic"], device="cuda")
    # auto falls back to the CPU quietly
    assert _loaded(models["dynamic"], device="auto").device.kind == "cpu"


def test_iobinding_path_gives_the_same_answer(models: dict[str, Path]) -> None:
    # the GPU's IOBinding code, run with host buffers: same binding, copies and order
    for name, feed in (
        ("dynamic", {"image": _batch(3, seed=7)}),
        ("two_inputs", {"a": np.ones((2, 3), np.float32), "b": np.ones((2, 3), np.int64)}),
    ):
        bound = _loaded(models[name], device="cpu", options={"iobinding": True})
        plain = _loaded(models[name], device="cpu")
        assert bound.describe()["iobinding"] == "on"
        got, want = bound.predict(feed), plain.predict(feed)
        assert list(got) == list(want)
        for output in want:
            np.testing.assert_array_equal(got[output], want[output])


# --- fixed batch sizes -----------------------------------------------------------------


def test_fixed_batch_is_padded_and_the_batcher_capped(models: dict[str, Path]) -> None:
    fixed = _loaded(models["batch4"], device="cpu")
    free = _loaded(models["dynamic"], device="cpu")
    assert fixed.signature.inputs[0].shape == (4, 3, 8, 8)
    assert fixed.max_batch_size == 4
    x = _batch(3, seed=1)
    got = fixed.predict({"image": x})["probs"]  # 3 rows padded to 4, 3 rows back
    assert got.shape == (3, 4)
    np.testing.assert_allclose(got, free.predict({"image": x})["probs"], rtol=1e-5, atol=1e-7)
    with scorepack.load(models["batch4"], device="cpu") as scorer:
        assert scorer.batcher.max_rows == 4
        ten = _batch(10, seed=2)  # 4 + 4 + 2 (padded) model calls
        np.testing.assert_allclose(
            scorer.predict({"image": ten})["probs"],
            free.predict({"image": ten})["probs"],
            rtol=1e-5,
            atol=1e-7,
        )


def test_exported_batch_one_is_served_by_splitting_batches(exported_batch1: Path) -> None:
    backend = _loaded(exported_batch1, device="cpu")
    assert backend.signature.inputs[0].shape == (1, 3, 16, 16)
    assert backend.max_batch_size == 1
    # what the batcher must never do: hand the graph two rows
    with pytest.raises(InvalidTensorError):
        backend.predict({"image": np.zeros((2, 3, 16, 16), np.float32)})
    jpegs = [images.jpeg(48, 40, seed=s) for s in range(8)]
    expected = [
        backend.predict({"image": _image_row(backend, j)})["probs"][0].tolist() for j in jpegs
    ]
    config = ScoringConfig(batching=BatchingConfig(max_batch_size=8, max_delay_ms=50))
    scorer = scorepack.load(exported_batch1, device="cpu", config=config, wait=False)
    with (
        BackgroundServer(scorer) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        assert scorer.batcher.max_rows == 1  # told the model's real maximum

        def post(body: bytes) -> httpx.Response:
            return client.post(
                "/score?raw=true", content=body, headers={"content-type": "image/jpeg"}
            )

        with ThreadPoolExecutor(8) as pool:
            replies = list(pool.map(post, jpegs))
        for reply, want in zip(replies, expected, strict=True):
            assert reply.status_code == 200, reply.text
            assert reply.headers["x-scorepack-batch-size"] == "1"
            np.testing.assert_allclose(
                reply.json()["outputs"]["probs"][0], want, rtol=1e-5, atol=1e-7
            )
        # one request of three rows is split into three model calls, answered together
        rows = np.random.default_rng(5).random((3, 3, 16, 16), dtype=np.float32)
        reply = client.post("/score?raw=true", json={"inputs": {"image": rows.tolist()}})
        assert reply.status_code == 200, reply.text
        assert len(reply.json()["predictions"]) == 3
        for i in range(3):
            np.testing.assert_allclose(
                reply.json()["outputs"]["probs"][i],
                backend.predict({"image": rows[i : i + 1]})["probs"][0],
                rtol=1e-5,
                atol=1e-7,
            )


def _image_row(backend: OnnxBackend, jpeg: bytes) -> np.ndarray:
    from scorepack.codecs import decode_image
    from scorepack.preprocess import plan_image

    plan = plan_image(backend.signature)
    assert plan is not None
    return decode_image(jpeg, plan, 10**8).inputs["image"]


# --- over HTTP -------------------------------------------------------------------------


def test_json_tensors_over_http_and_bad_ones_are_400(models: dict[str, Path]) -> None:
    scorer = scorepack.load(models["two_inputs"], device="cpu", wait=False)
    with (
        BackgroundServer(scorer) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        good = {"inputs": {"a": [[0.5, 0.5, 0.5]], "b": [[1, 2, 3]]}}
        reply = client.post("/score?raw=true", json=good)
        assert reply.status_code == 200, reply.text
        assert reply.json()["outputs"] == {"total": [[1.5, 2.5, 3.5]], "norm": [[7.5]]}
        bad = client.post("/score", json={"inputs": {"a": [[1.0, 2.0]], "b": [[1, 2, 3]]}})
        assert bad.status_code == 400
        assert "'a'" in bad.json()["error"]["message"]
        assert client.post("/score", json=good).status_code == 200


def test_server_log_names_the_provider(
    models: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="scorepack.scorer")
    with scorepack.load(models["dynamic"], device="cpu"):
        pass
    ready = [r.getMessage() for r in caplog.records if "ready in" in r.getMessage()]
    assert ready and "provider=CPUExecutionProvider" in ready[0]


# --- CLI -------------------------------------------------------------------------------


def test_inspect_shows_the_provider_in_use(models: dict[str, Path]) -> None:
    result = CliRunner().invoke(build_cli(), ["inspect", str(models["batch4"]), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "backend:    onnx" in result.output
    assert "provider:   CPUExecutionProvider" in result.output
    assert "max batch:  4" in result.output
    assert "[batch=4, 3, 8, 8]" in result.output


def test_inspect_passes_session_options(models: dict[str, Path]) -> None:
    result = CliRunner().invoke(
        build_cli(),
        [
            "inspect",
            str(models["dynamic"]),
            "-O",
            "intra_op_threads=1",
            "-O",
            "graph_optimization_level=extended",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "intra_op=1" in result.output
    assert "extended" in result.output


def test_backends_lists_the_providers() -> None:
    result = CliRunner().invoke(build_cli(), ["backends"])
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if line.startswith("onnx "))
    assert f"onnxruntime {ort.__version__}" in line
    assert "CPUExecutionProvider" in line


# --- packaging and isolation -----------------------------------------------------------


def test_requirements_name_the_build_for_the_device() -> None:
    version = ort.__version__
    assert requirements("cpu").pip == (f"onnxruntime=={version}",)
    # GPU releases are not lock-step with CPU ones: never the CPU version (1.32.0 has no GPU
    # build); the newest GPU release, a CUDA 13 build, or on request the CUDA 12 one
    gpu = requirements("cuda")
    assert gpu.pip == ("onnxruntime-gpu[cuda,cudnn]==1.31.1",)
    assert gpu.cuda is not None and (gpu.cuda.major, gpu.cuda.driver_min) == (13, 580)
    assert requirements("cuda12").pip == ("onnxruntime-gpu[cuda,cudnn]==1.23.2",)
    # the wheels bring CUDA and cuDNN: a plain Ubuntu image
    assert "cuda" not in (gpu.base_image or "")
    assert SPEC.framework_version() == version


def test_importing_the_plugin_does_not_import_onnxruntime() -> None:
    code = "import sys, scorepack_onnx; sys.exit('onnxruntime' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


# --- GPU -------------------------------------------------------------------------------


@pytest.mark.gpu
@gpu
def test_gpu_uses_the_cuda_provider_without_iobinding_by_default(
    models: dict[str, Path], dynamic: OnnxBackend
) -> None:
    backend = _loaded(models["dynamic"], device="cuda:0")
    info = backend.describe()
    assert info["device"] == "cuda:0"
    # TensorRT is opt-in; per-batch IOBinding moved the same bytes as a plain run
    assert info["provider"] == "CUDAExecutionProvider"
    assert info["iobinding"] == "off"
    x = _batch(6, seed=3)
    np.testing.assert_allclose(
        backend.predict({"image": x})["probs"], dynamic.predict({"image": x})["probs"], atol=1e-4
    )


@pytest.mark.gpu
@gpu
def test_gpu_cuda_provider_without_tensorrt_and_fixed_batch(models: dict[str, Path]) -> None:
    backend = _loaded(models["batch4"], device="cuda", options={"tensorrt": False})
    assert backend.describe()["provider"] == "CUDAExecutionProvider"
    assert backend.predict({"image": _batch(3)})["probs"].shape == (3, 4)


@pytest.mark.gpu
@gpu
def test_gpu_without_iobinding_gives_the_same_answer(models: dict[str, Path]) -> None:
    bound = _loaded(models["two_inputs"], device="cuda", options={"iobinding": True})
    plain = _loaded(models["two_inputs"], device="cuda")
    feed: dict[str, np.ndarray] = {"a": np.ones((3, 3), np.float32), "b": np.ones((3, 3), np.int64)}
    assert plain.describe()["iobinding"] == "off"
    for name, value in bound.predict(feed).items():
        np.testing.assert_array_equal(value, plain.predict(feed)[name])


# --- TensorRT: opt-in, profiled, cached; a plain warning when it does not run -------------


def _gpu_backend(path: Path, providers: list[str], **options: object) -> tuple[OnnxBackend, Any]:
    """A backend set up for cuda:0 as load() would, with an onnxruntime offering
    ``providers`` (no GPU is needed to decide the providers and their options)."""
    from scorepack import Device

    backend = OnnxBackend(path, device="cuda:0", options=options)
    backend.device = Device.parse("cuda:0")
    backend._cuda_graph = False
    return backend, SimpleNamespace(get_available_providers=lambda: providers)


ALL = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


def test_tensorrt_is_opt_in(models: dict[str, Path]) -> None:
    backend, fake = _gpu_backend(models["dynamic"], ALL)
    names = [p[0] if isinstance(p, tuple) else p for p in backend._providers(fake)]
    assert names == ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_tensorrt_gets_a_profile_from_1_to_the_max_batch_and_caches(
    models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCOREPACK_CACHE_DIR", str(tmp_path / "cache"))
    backend, fake = _gpu_backend(models["dynamic"], ALL, tensorrt="true", trt_max_batch="16")
    first, *rest = backend._providers(fake)
    name, options = first
    assert name == "TensorrtExecutionProvider" and rest[0][0] == "CUDAExecutionProvider"
    cache = str(tmp_path / "cache" / "tensorrt")
    assert options["trt_engine_cache_enable"] and options["trt_engine_cache_path"] == cache
    assert options["trt_timing_cache_enable"] and options["trt_timing_cache_path"] == cache
    assert (tmp_path / "cache" / "tensorrt").is_dir()
    assert options["trt_profile_min_shapes"] == "image:1x3x8x8"
    assert options["trt_profile_max_shapes"] == "image:16x3x8x8"
    # a model with a fixed batch: the profile is that batch, and nothing else is accepted
    fixed, fake = _gpu_backend(models["batch4"], ALL, tensorrt="true")
    assert dict(fixed._providers(fake)[0][1])["trt_profile_max_shapes"] == "image:4x3x8x8"
    bad, fake = _gpu_backend(models["batch4"], ALL, tensorrt="true", trt_max_batch="8")
    with pytest.raises(ModelLoadError, match="trt_max_batch must be 4"):
        bad._providers(fake)
    off, fake = _gpu_backend(models["dynamic"], ALL, tensorrt="true", trt_engine_cache="off")
    assert "trt_engine_cache_enable" not in off._providers(fake)[0][1]


def test_tensorrt_asked_for_and_not_active_is_a_plain_warning(
    models: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    # on the CPU (this machine): asked for, cannot run
    with caplog.at_level("WARNING", logger="scorepack.onnx"):
        backend = _loaded(models["dynamic"], options={"tensorrt": "true"})
    assert "TensorRT was asked for (-O tensorrt=true) but is not active" in caplog.text
    assert "needs a CUDA device" in caplog.text
    assert backend.describe()["provider"] == "CPUExecutionProvider"
    # on a GPU whose onnxruntime lacks TensorRT (a package's image has no libnvinfer)
    caplog.clear()
    gpu, fake = _gpu_backend(models["dynamic"], ALL[1:], tensorrt="true")
    gpu._providers(fake)
    gpu._active = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    with caplog.at_level("WARNING", logger="scorepack.onnx"):
        gpu._warn_tensorrt(fake)
    assert "no TensorRT provider" in caplog.text
    # and with the provider present but not started (libnvinfer missing)
    caplog.clear()
    gpu._want_trt = True
    with caplog.at_level("WARNING", logger="scorepack.onnx"):
        gpu._warn_tensorrt(SimpleNamespace(get_available_providers=lambda: ALL))
    assert "libnvinfer" in caplog.text


@pytest.mark.gpu
@gpu
def test_gpu_tensorrt_caps_the_batcher_to_its_profile(models: dict[str, Path]) -> None:
    backend = _loaded(models["dynamic"], device="cuda", options={"tensorrt": "true"})
    if backend.describe()["provider"] != "TensorrtExecutionProvider":
        pytest.skip("TensorRT is not active here (warned at load)")
    assert backend.max_batch_size == 32
    assert backend.predict({"image": _batch(5)})["probs"].shape == (5, 4)
