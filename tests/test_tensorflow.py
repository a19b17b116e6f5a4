"""The TensorFlow reference backend: signatures read from the SavedModel, several
inputs, named signatures, integer and uint8 inputs, errors at the boundary, and the CUDA
path (skipped without a GPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import scorepack
from images import jpeg
from scorepack import Signature
from scorepack.errors import (
    BackendOptionError,
    InvalidTensorError,
    ModelLoadError,
    PackageError,
)
from serving_helpers import error_of, serving, tf_backend, wait_for

tf = pytest.importorskip("tensorflow")

from scorepack_tensorflow import SPEC, TensorFlowBackend  # noqa: E402


def loaded(path: Path, **options: object) -> TensorFlowBackend:
    backend = tf_backend(path, **options)
    backend.load()
    return backend


def shapes(signature: Signature) -> dict[str, tuple[str, tuple[int | None, ...]]]:
    return {s.name: (s.dtype, s.shape) for s in (*signature.inputs, *signature.outputs)}


def direct(
    path: Path, signature: str = "serving_default", **inputs: np.ndarray
) -> dict[str, np.ndarray]:
    """The SavedModel called by TensorFlow itself, as the reference."""
    fn = tf.saved_model.load(str(path)).signatures[signature]
    return {k: v.numpy() for k, v in fn(**{k: tf.constant(v) for k, v in inputs.items()}).items()}


# --- signatures ------------------------------------------------------------------------


def test_signatures_are_read_from_the_model(
    small_cnn_path: Path,
    multi_input_path: Path,
    int_inputs_path: Path,
    uint8_identity_path: Path,
    nchw_path: Path,
) -> None:
    cases = {
        small_cnn_path: {"image": ("float32", (None, 32, 32, 3)), "probs": ("float32", (None, 10))},
        multi_input_path: {
            "image": ("float32", (None, 16, 16, 3)),
            "extra": ("float32", (None, 4)),
            "scores": ("float32", (None, 5)),
        },
        int_inputs_path: {
            "ids": ("int32", (None, 3)),
            "weights": ("float32", (None, 3)),
            "score": ("float32", (None,)),
        },
        uint8_identity_path: {
            "image_u8": ("uint8", (None, 12, 16, 3)),
            "pixels": ("float32", (None, 12, 16, 3)),
        },
        nchw_path: {
            "chw": ("float32", (None, 3, 12, 16)),
            "pixels": ("float32", (None, 12, 16, 3)),
        },
    }
    for path, want in cases.items():
        backend = loaded(path)
        assert shapes(backend.signature) == want, path.name
        assert backend.signature.name == "serving_default"
        assert backend.max_batch_size is None  # the batch dimension is free
        assert all(s.batched for s in backend.signature.inputs)
        backend.unload()


def test_signature_over_http_and_in_inspect_form(multi_input_path: Path) -> None:
    with serving(tf_backend(multi_input_path)) as served:
        info = served.client.get("/info").json()
    inputs = {s["name"]: s for s in info["signature"]["inputs"]}
    assert inputs["extra"] == {
        "name": "extra",
        "dtype": "float32",
        "shape": [None, 4],
        "batched": True,
    }
    assert inputs["image"]["shape"] == [None, 16, 16, 3]
    assert info["signature"]["outputs"][0]["name"] == "scores"
    assert info["backend"]["tf_device"] == "/CPU:0"
    backend = loaded(multi_input_path)
    assert backend.signature.input("extra").shape_text() == "[batch, 4]"


def test_two_inputs_scored_with_json(multi_input_path: Path) -> None:
    rng = np.random.default_rng(3)
    image = rng.uniform(0, 1, (3, 16, 16, 3)).astype(np.float32)
    extra = rng.normal(size=(3, 4)).astype(np.float32)
    with serving(tf_backend(multi_input_path)) as served:
        response = served.score_json({"image": image, "extra": extra}, raw="true")
        assert response.status_code == 200, response.text
        # one row, its batch dimension left out
        single = served.score_json({"image": image[0], "extra": extra[0]}, raw="true")
    want = direct(multi_input_path, image=image, extra=extra)["scores"]
    np.testing.assert_allclose(response.json()["outputs"]["scores"], want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(single.json()["outputs"]["scores"], want[:1], rtol=1e-5, atol=1e-5)


def test_named_signature(two_signatures_path: Path) -> None:
    photo = np.random.default_rng(4).uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)
    backend = loaded(two_signatures_path, signature="embed")
    assert backend.signature.name == "embed"
    assert shapes(backend.signature) == {
        "photo": ("float32", (None, 8, 8, 3)),
        "embedding": ("float32", (None, 6)),
    }
    with serving(tf_backend(two_signatures_path, signature="embed")) as served:
        embedded = served.score_json({"photo": photo}, raw="true").json()
        assert served.client.get("/info").json()["signature"]["name"] == "embed"
    np.testing.assert_allclose(
        embedded["outputs"]["embedding"],
        direct(two_signatures_path, "embed", photo=photo)["embedding"],
        rtol=1e-5,
        atol=1e-5,
    )
    # the default signature of the same model is the classifier
    with serving(tf_backend(two_signatures_path)) as served:
        classified = served.score_json({"photo": photo}).json()
    assert len(classified["predictions"]) == 2
    assert len(classified["predictions"][0]["top_k"]) == 4


def test_missing_signature_is_a_clear_error(two_signatures_path: Path) -> None:
    with pytest.raises(ModelLoadError) as caught:
        loaded(two_signatures_path, signature="predict")
    message = caught.value.message
    assert "'predict'" in message and "embed" in message and "serving_default" in message
    assert "-O signature=" in message
    with serving(tf_backend(two_signatures_path, signature="predict"), wait_ready=False) as served:
        wait_for(lambda: served.scorer.batcher.failure is not None, "the load to fail", 60)
        probe = served.client.get("/health/ready")
        assert probe.status_code == 503
        assert "'predict'" in error_of(probe)["message"]


def test_unknown_backend_option_lists_the_valid_ones(small_cnn_path: Path) -> None:
    with pytest.raises(BackendOptionError, match=r"valid options: .*signature"):
        TensorFlowBackend(small_cnn_path, options={"signatur": "x"})


def test_scorepack_load_finds_the_tensorflow_backend(small_cnn_path: Path) -> None:
    with scorepack.load(small_cnn_path, device="cpu") as scorer:
        assert isinstance(scorer.backend, TensorFlowBackend)
        assert scorer.score(jpeg(seed=5))["predictions"][0]["top_k"][0]["score"] > 0


# --- dtypes and errors at the boundary -------------------------------------------------


def test_uint8_input_takes_json_ints_in_range(uint8_identity_path: Path) -> None:
    pixels = np.arange(12 * 16 * 3).reshape(1, 12, 16, 3) % 256
    with serving(tf_backend(uint8_identity_path)) as served:
        ok = served.score_json({"image_u8": pixels})
        assert ok.status_code == 200
        np.testing.assert_array_equal(ok.json()["outputs"]["pixels"], pixels)
        for bad, words in (
            (pixels + 0.5, ["'image_u8'", "uint8", "floats"]),
            (pixels + 1, ["'image_u8'", "uint8", "range"]),  # 256 does not fit
            (-pixels - 1, ["'image_u8'", "range"]),
        ):
            response = served.score_json({"image_u8": bad})
            assert response.status_code == 400, response.text
            message = error_of(response)["message"]
            assert all(w in message for w in words), message
        # an image still works after all that
        assert served.score(jpeg(16, 12), "image/jpeg").status_code == 200


def test_int_model_scores_json(int_inputs_path: Path) -> None:
    ids = np.array([[1, 2, 3], [-4, 0, 9]], np.int32)
    weights = np.array([[0.5, 0.5, 1.0], [1.0, 2.0, 0.0]], np.float32)
    with serving(tf_backend(int_inputs_path)) as served:
        response = served.score_json({"ids": ids, "weights": weights})
    assert response.status_code == 200
    np.testing.assert_allclose(response.json()["outputs"]["score"], [4.5, -4.0])


def test_framework_rejecting_input_is_a_400(tmp_path: Path) -> None:
    import tensorflow as tf

    # a model whose shape rule only the graph knows: rows must hold a multiple of 4
    class Pairs(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32, name="values")])
        def serve(self, values: tf.Tensor) -> dict[str, tf.Tensor]:
            pairs = tf.reshape(values, [tf.shape(values)[0], -1, 4])
            return {"sums": tf.reduce_sum(pairs, axis=2)}

    module = Pairs()
    tf.saved_model.save(
        module, str(tmp_path / "pairs"), signatures={"serving_default": module.serve}
    )
    backend = loaded(tmp_path / "pairs")
    with pytest.raises(InvalidTensorError, match="tensorflow rejected the input"):
        backend.predict({"values": np.ones((1, 6), np.float32)})
    with serving(tf_backend(tmp_path / "pairs")) as served:
        bad = served.score_json({"values": [[1, 2, 3, 4, 5, 6]]})
        assert bad.status_code == 400
        assert error_of(bad)["code"] == "invalid_tensor"
        good = served.score_json({"values": [[1, 2, 3, 4, 5, 6, 7, 8]]}, raw="true")
        assert good.json()["outputs"]["sums"] == [[10.0, 26.0]]


def test_requirements_for_packages() -> None:
    version = SPEC.framework_version()
    assert version is not None
    cpu, gpu = SPEC.requirements("cpu"), SPEC.requirements("cuda")
    assert cpu.pip == (f"tensorflow-cpu=={version}",)
    assert gpu.pip == (f"tensorflow[and-cuda]=={version}",)  # never the removed tensorflow-gpu
    assert "cuda" not in (cpu.base_image or "") and "cuda" not in (gpu.base_image or "")
    # CUDA 12.5, no sm_90 code: the driver floor covers PTX JIT, and the JIT cache is sized
    assert gpu.cuda is not None and (gpu.cuda.major, gpu.cuda.driver_min) == (12, 555)
    assert "sm_90" not in gpu.cuda.native_archs and "compute_90" in gpu.cuda.ptx_archs
    assert int(gpu.cuda.environment["CUDA_CACHE_MAXSIZE"]) > 256 * 1024**2
    assert SPEC.requirements("cuda12") == gpu
    with pytest.raises(PackageError, match="offers CUDA 12"):
        SPEC.requirements("cuda13")


def test_bf16_precision_keeps_the_answers(small_cnn_path: Path, tmp_path: Path) -> None:
    # grappler's precision option is process-wide: the bf16 model runs in a process of its own
    x = np.random.default_rng(7).random((8, 32, 32, 3), dtype=np.float32) * 255
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(
        f"""
        import numpy as np
        from scorepack_tensorflow import TensorFlowBackend
        backend = TensorFlowBackend({str(small_cnn_path)!r}, device="cpu",
                                    options={{"precision": "bf16"}})
        backend.load()
        out = backend.predict({{"image": np.load({str(tmp_path / "x.npy")!r})}})
        np.save({str(tmp_path / "bf16.npy")!r}, out["probs"])
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, timeout=120)
    bf16 = np.load(tmp_path / "bf16.npy")
    fp32_backend = tf_backend(small_cnn_path)
    fp32_backend.load()
    fp32 = fp32_backend.predict({"image": x})["probs"]
    assert bf16.shape == fp32.shape
    # bf16 keeps 8 bits of mantissa: probabilities move by well under a hundredth here
    np.testing.assert_allclose(bf16, fp32, atol=0.02)
    assert (bf16.argmax(1) == fp32.argmax(1)).all()


@pytest.mark.parametrize(
    ("precision", "message"),
    [("fp16", "runs on a GPU"), ("int8", "must be one of fp32, bf16, fp16, not 'int8'")],
)
def test_precision_option_is_checked(small_cnn_path: Path, precision: str, message: str) -> None:
    with pytest.raises(ModelLoadError, match=message):  # int8: before load, by the schema
        TensorFlowBackend(small_cnn_path, device="cpu", options={"precision": precision}).load()


def test_cpu_is_always_available_and_cuda_is_refused_without_a_gpu(small_cnn_path: Path) -> None:
    devices = TensorFlowBackend.available_devices()
    assert devices[0] == "cpu"
    if len(devices) == 1:
        from scorepack.errors import DeviceUnavailableError

        with pytest.raises(DeviceUnavailableError, match="--device cpu"):
            TensorFlowBackend(small_cnn_path, device="cuda").load()
        auto = TensorFlowBackend(small_cnn_path, device="auto")
        auto.load()
        assert str(auto.device) == "cpu"


# --- the CUDA path ---------------------------------------------------------------------

GPU_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import httpx, numpy as np, tensorflow as tf
    from scorepack import Scorer
    from scorepack.server import BackgroundServer
    from scorepack_tensorflow import TensorFlowBackend

    path, image = sys.argv[1], open(sys.argv[2], "rb").read()
    # a fresh process: memory growth can only be set before TensorFlow touches the GPU
    gpu = TensorFlowBackend(path, device="auto")
    gpu.load()
    x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)
    on_gpu = gpu.predict({"image": x})["probs"]
    with tf.device(gpu._tf_device):
        placed = gpu._fn(image=tf.constant(x))["probs"].device
    cpu = TensorFlowBackend(path, device="cpu")
    cpu.load()
    on_cpu = cpu.predict({"image": x})["probs"]
    with BackgroundServer(Scorer(TensorFlowBackend(path, device="cuda:0"))) as server:
        served = httpx.post(server.url + "/score?raw=true", content=image, timeout=60).json()
    with BackgroundServer(Scorer(TensorFlowBackend(path, device="cpu"))) as server:
        served_cpu = httpx.post(server.url + "/score?raw=true", content=image, timeout=60).json()
    print(json.dumps({
        "available": TensorFlowBackend.available_devices(),
        "device": str(gpu.device),
        "tf_device": gpu.describe()["tf_device"],
        "growth": [tf.config.experimental.get_memory_growth(g)
                   for g in tf.config.list_physical_devices("GPU")],
        "placed": placed,
        "max_diff": float(np.abs(on_gpu - on_cpu).max()),
        "served_diff": float(np.abs(np.asarray(served["outputs"]["probs"])
                                    - np.asarray(served_cpu["outputs"]["probs"])).max()),
    }))
    """
)


@pytest.mark.gpu
@pytest.mark.skipif(
    not tf.config.list_physical_devices("GPU"), reason="no CUDA GPU visible to TensorFlow"
)
def test_cuda_path(small_cnn_path: Path, tmp_path: Path) -> None:
    (tmp_path / "cat.jpg").write_bytes(jpeg(64, 48, seed=6))
    # without conftest's TF_FORCE_GPU_ALLOW_GROWTH: memory growth must be the backend's doing
    env = {k: v for k, v in os.environ.items() if k != "TF_FORCE_GPU_ALLOW_GROWTH"}
    done = subprocess.run(
        [sys.executable, "-c", GPU_SCRIPT, str(small_cnn_path), str(tmp_path / "cat.jpg")],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    facts = json.loads(done.stdout.strip().splitlines()[-1])
    assert "cuda:0" in facts["available"]
    assert facts["device"] == "cuda:0"  # auto picks the GPU
    assert facts["tf_device"] == "/GPU:0"
    assert facts["growth"] and all(facts["growth"])
    assert "GPU:0" in facts["placed"]
    # same answers on both devices, up to float tolerance (cuDNN's kernels differ)
    assert facts["max_diff"] < 1e-4
    assert facts["served_diff"] < 1e-4


# --- GPU levers that can be checked on the CPU --------------------------------------------


@pytest.mark.parametrize(
    ("value", "growth"),
    [
        ("0", False),
        ("off", False),
        ("no", False),
        ("false", False),
        (False, False),
        ("1", True),
        ("on", True),
        ("true", True),
        (True, True),
    ],
)
def test_memory_growth_is_a_real_boolean(small_cnn_path: Path, value: object, growth: bool) -> None:
    # by truthiness, "0", "off" and "no" were all true: growth could not be switched off
    backend = loaded(small_cnn_path, memory_growth=value)
    assert backend.option("memory_growth") is growth


def test_a_bad_memory_growth_value_fails_the_load(small_cnn_path: Path) -> None:
    with pytest.raises(BackendOptionError, match="memory_growth"):
        loaded(small_cnn_path, memory_growth="sometimes")


def test_string_tensors_are_made_on_the_host_whatever_the_device() -> None:
    """A string tensor made inside a GPU device scope is a known TensorFlow failure: the
    feed makes strings under /CPU:0 and numbers under the model's device."""
    from scorepack_tensorflow.backend import make_feed

    scopes: list[str] = []

    class Recording:
        """TensorFlow, with the device scope each constant is made in recorded."""

        def __init__(self) -> None:
            self.current = ""

        def device(self, name: str) -> object:
            outer = self

            class Scope:
                def __enter__(self) -> None:
                    outer.previous, outer.current = outer.current, name

                def __exit__(self, *exc: object) -> None:
                    outer.current = outer.previous

            return Scope()

        def constant(self, value: np.ndarray) -> object:
            scopes.append(f"{value.dtype.kind}@{self.current}")
            return tf.constant(value)

    words = np.array([b"a", b"bc"], dtype=object)
    numbers = np.zeros((2, 3), np.float32)
    feed = make_feed(Recording(), {"words": words, "x": numbers}, "/GPU:0")
    assert sorted(scopes) == ["O@/CPU:0", "f@/GPU:0"]
    assert feed["words"].dtype == tf.string and "CPU" in feed["words"].device
