"""The GPU levers: what runs on the CPU is checked here for real; the CUDA parts have
tests marked ``gpu`` that skip without a GPU.

* The core contract for backends that decode JPEGs themselves
  (``Backend.accepts_encoded_images``, ``scorepack.codecs.encoded_image``), over real HTTP
  with a fixture backend that decodes with Pillow.
* PyTorch ``-O gpu_decode=true``: the refusals, and the GPU pipeline's preprocessing (plain
  torch, device-agnostic) against the core's CPU path; ``-O pinned`` staging buffers.
* ONNX Runtime ``-O cuda_graph=true``: the refusals, and the fixed-shape binding it runs on.
* The benchmark suite's device and variant plumbing.
"""

from __future__ import annotations

import importlib.util
import io
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from PIL import Image

from fixture_backends import EncodedImageBackend
from images import encode, image, jpeg, png, truncated_jpeg, with_declared_size
from scorepack import PreprocessConfig, Signature, TensorSpec
from scorepack.codecs import decode_image, encoded_image
from scorepack.errors import (
    FrameworkMissingError,
    ImageTooLargeError,
    InvalidImageError,
    ModelLoadError,
)
from scorepack.preprocess import ImagePlan, plan_image
from serving_helpers import Served, scoring_config, serving, wait_for
from test_codecs import DRAFT_MEAN_TOLERANCE, DRAFT_P99_TOLERANCE

SIZE = EncodedImageBackend.SIZE
IMAGE_SIG = Signature(
    inputs=(TensorSpec("image", "float32", (None, SIZE, SIZE, 3)),),
    outputs=(TensorSpec("pixels", "float32", (None, SIZE, SIZE, 3)),),
)


def _plan(signature: Signature = IMAGE_SIG, **config: Any) -> ImagePlan:
    plan = plan_image(signature, PreprocessConfig(**config))
    assert plan is not None
    return plan


def _cmyk_jpeg() -> bytes:
    return encode(image(64, 48, seed=2).convert("CMYK"), "JPEG", quality=90)


# --- encoded_image: checks everything, decodes nothing (JPEG) -------------------------


def test_encoded_image_passes_jpeg_bytes_on_and_decodes_the_rest() -> None:
    plan = _plan()
    for body in (jpeg(64, 48), jpeg(64, 48, mode="L")):
        decoded = encoded_image(body, plan)
        row = decoded.inputs["image"]
        assert decoded.rows == 1
        assert row.dtype == object and row.shape == (1,) and row[0] is body
    # PNGs and CMYK JPEGs are decoded on the CPU, exactly as decode_image does
    for body in (png(64, 48), _cmyk_jpeg()):
        decoded = encoded_image(body, plan)
        assert decoded.inputs["image"].dtype == np.float32
        np.testing.assert_array_equal(
            decoded.inputs["image"], decode_image(body, plan).inputs["image"]
        )


def test_encoded_image_checks_like_decode_image() -> None:
    plan = _plan()
    with pytest.raises(ImageTooLargeError):
        encoded_image(with_declared_size(jpeg(64, 48), 4000, 3000), plan, max_pixels=1_000_000)
    with pytest.raises(ImageTooLargeError):
        encoded_image(jpeg(400, 300), plan, max_pixels=100_000)
    with pytest.raises(InvalidImageError, match="header"):
        encoded_image(b"\xff\xd8\xff" + b"not a jpeg header at all", plan)
    with pytest.raises(InvalidImageError, match="not a JPEG or PNG"):
        encoded_image(b"GIF89a....", plan)


# --- the contract over HTTP, with a backend that decodes JPEGs itself ------------------


def _pixels(response: Any) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.asarray(response.json()["outputs"]["pixels"], dtype=np.float32)


def _held(served: Served, holder: bytes, bodies: list[bytes]) -> list[Any]:
    """Post ``holder``, hold it inside the model, queue ``bodies`` behind it, let go."""
    backend = served.backend
    with ThreadPoolExecutor(len(bodies) + 1) as pool:
        backend.gate.clear()
        backend.entered.clear()
        try:
            first = pool.submit(served.score, holder, "image/jpeg")
            assert backend.entered.wait(20)
            rest = [pool.submit(served.score, body, "image/jpeg") for body in bodies]
            wait_for(
                lambda: served.scorer.batcher.queued == len(bodies),
                f"{len(bodies)} queued requests",
            )
        finally:
            backend.gate.set()
        return [first.result(30), *(f.result(30) for f in rest)]


@pytest.fixture
def encoded(tmp_path: Path) -> Iterator[Served]:
    backend = EncodedImageBackend(tmp_path / "model.img")
    with serving(backend, scoring_config(max_batch_size=8, max_image_pixels=200_000)) as served:
        yield served


def test_concurrent_jpegs_reach_the_backend_undecoded_in_one_batch(
    encoded: Served, tmp_path: Path
) -> None:
    assert encoded.scorer.encoded_images
    backend = encoded.backend
    # large enough that the normal path decodes them at reduced size (DCT scaling)
    bodies = [jpeg(256, 192, seed=s) for s in range(5)]
    warm = len(backend.calls)
    responses = _held(encoded, bodies[0], bodies[1:])
    assert backend.calls[warm:] == [("jpeg", 1), ("jpeg", 4)]
    assert [r.headers["x-scorepack-batch-size"] for r in responses] == ["1", "4", "4", "4", "4"]
    got = [_pixels(r)[0] for r in responses]

    normal_backend = EncodedImageBackend(tmp_path / "normal.img", options={"encoded": "false"})
    with serving(normal_backend, scoring_config(max_batch_size=8)) as normal:
        assert not normal.scorer.encoded_images
        want = [_pixels(normal.score(b, "image/jpeg"))[0] for b in bodies]
        assert normal_backend.calls[-5:] == [("pixels", 1)] * 5
    exact = _plan(exact_decode=True)
    for body, mine, theirs in zip(bodies, got, want, strict=True):
        # the same scores as the normal path, within its stated reduced-size tolerance...
        diff = np.abs(mine - theirs)
        assert diff.mean() <= DRAFT_MEAN_TOLERANCE
        assert np.percentile(diff, 99) <= DRAFT_P99_TOLERANCE
        # ...and exactly the core's full-size decode of *this* request's image
        np.testing.assert_array_equal(mine, decode_image(body, exact).inputs["image"][0])
    assert not np.array_equal(got[1], got[2])


def test_pngs_cmyk_jpegs_and_json_still_reach_the_backend_as_pixels(encoded: Served) -> None:
    backend = encoded.backend
    plan = encoded.scorer.image_plan
    assert plan is not None
    for body, ctype in ((png(64, 48), "image/png"), (_cmyk_jpeg(), "image/jpeg")):
        response = encoded.score(body, ctype)
        assert backend.calls[-1] == ("pixels", 1)
        np.testing.assert_array_equal(
            _pixels(response)[0], decode_image(body, plan).inputs["image"][0]
        )
    rows = np.full((2, SIZE, SIZE, 3), 7.0, dtype=np.float32)
    assert np.array_equal(_pixels(encoded.score_json({"image": rows})), rows)
    assert backend.calls[-1] == ("pixels", 2)


def test_an_over_limit_jpeg_is_413_before_any_decoding(encoded: Served) -> None:
    backend = encoded.backend
    calls = len(backend.calls)
    for body in (with_declared_size(jpeg(64, 48), 4000, 3000), jpeg(600, 400)):
        response = encoded.score(body, "image/jpeg")
        assert response.status_code == 413, response.text
        assert response.json()["error"]["code"] == "image_too_large"
    response = encoded.score(b"\xff\xd8\xff" + b"\x00" * 40, "image/jpeg")
    assert response.status_code == 400
    assert len(backend.calls) == calls  # the backend never saw any of them


def test_a_corrupt_jpeg_fails_alone_and_its_batch_mates_succeed(encoded: Served) -> None:
    backend = encoded.backend
    good = [jpeg(64, 48, seed=s) for s in range(4)]
    bad = truncated_jpeg(jpeg(64, 48, seed=9))
    warm = len(backend.calls)
    responses = _held(encoded, good[0], [good[1], bad, good[2], good[3]])
    # the batch of four failed as a whole, then each request ran on its own
    assert backend.calls[warm:] == [("jpeg", 1), ("jpeg", 4), *[("jpeg", 1)] * 4]
    assert [r.status_code for r in responses] == [200, 200, 400, 200, 200]
    assert responses[2].json()["error"]["code"] == "invalid_image"
    exact = _plan(exact_decode=True)
    for response, body in zip(
        [responses[0], responses[1], responses[3], responses[4]], good, strict=True
    ):
        np.testing.assert_array_equal(
            _pixels(response)[0], decode_image(body, exact).inputs["image"][0]
        )


# --- PyTorch: -O gpu_decode, the GPU pipeline's preprocessing, -O pinned ---------------


@pytest.fixture(scope="module")
def torch() -> Any:
    return pytest.importorskip("torch")


@pytest.fixture(scope="module")
def torch_model(torch: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A .pt2: image [batch, 3, 16, 16] → probs [batch, 6], a fixed random linear map."""

    class Linear(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            generator = torch.Generator().manual_seed(0)
            self.weight = torch.nn.Parameter(torch.randn(3 * SIZE * SIZE, 6, generator=generator))

        def forward(self, image: Any) -> Any:
            return {"probs": torch.softmax(image.flatten(1) @ self.weight / 400.0, dim=1)}

    path = tmp_path_factory.mktemp("torch_levers") / "linear.pt2"
    batch = torch.export.Dim("batch")
    example = torch.zeros(2, 3, SIZE, SIZE)
    program = torch.export.export(Linear(), (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))
    return path


#: torchvision's ImageReadMode, as far as the pipeline uses it
READ_MODES = SimpleNamespace(RGB="RGB", GRAY="GRAY")


def pillow_decode(data: list[Any], mode: str, device: Any) -> list[Any]:
    """torchvision.io.decode_jpeg's signature, done with Pillow at full size."""
    import torch

    images = []
    for tensor in data:
        try:
            with Image.open(io.BytesIO(tensor.numpy().tobytes())) as img:
                pixels = np.asarray(img.convert("L" if mode == "GRAY" else "RGB"))
        except OSError as exc:
            raise RuntimeError(f"decode failed: {exc}") from exc
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        images.append(torch.from_numpy(pixels.copy()).permute(2, 0, 1).to(device))
    return images


def test_gpu_decode_on_the_cpu_is_refused_with_the_reason(torch: Any, torch_model: Path) -> None:
    from scorepack_pytorch import TorchBackend

    backend = TorchBackend(torch_model, device="cpu", options={"gpu_decode": "true"})
    with pytest.raises(ModelLoadError, match="needs a CUDA device"):
        backend.load()
    with pytest.raises(ModelLoadError, match="option pinned must be true or false"):
        TorchBackend(torch_model, device="cpu", options={"pinned": "maybe"}).load()


def test_gpu_decode_without_torchvision_names_the_pip_command(torch: Any) -> None:
    from scorepack_pytorch.gpu_images import load_decoder, torchvision_install

    cuda12 = SimpleNamespace(__version__="2.13.0+cu126", version=SimpleNamespace(cuda="12.6"))
    assert torchvision_install(cuda12).startswith(
        "pip install 'torchvision==0.28.*' --index-url https://download.pytorch.org/whl/cu126"
    )
    # the package index's torch (CUDA 13.0, no local label): its torchvision is there too
    cuda13 = SimpleNamespace(__version__="2.13.0", version=SimpleNamespace(cuda="13.0"))
    assert torchvision_install(cuda13).startswith("pip install 'torchvision==0.28.*' (")
    if importlib.util.find_spec("torchvision") is not None:
        pytest.skip("torchvision is installed here")
    with pytest.raises(FrameworkMissingError, match=r"pip install 'torchvision==0\.\d+\.\*'"):
        load_decoder(torch)


PIPELINE_CASES = {
    "nchw-imagenet-stretch": (
        (None, 3, 24, 32),
        {"preset": "imagenet", "resize": "stretch"},
    ),
    "nchw-imagenet-crop": ((None, 3, 24, 24), {"preset": "imagenet", "resize": "crop"}),
    "nhwc-caffe-bgr-stretch": ((None, 20, 28, 3), {"preset": "caffe", "resize": "stretch"}),
    "nhwc-caffe-bgr-crop": ((None, 20, 28, 3), {"preset": "caffe", "resize": "crop"}),
    "nhwc-uint8-raw": ((None, 20, 28, 3), {"preset": "raw", "resize": "crop"}),
    "nchw-grey-unit-crop": ((None, 1, 16, 16), {"preset": "unit", "resize": "crop"}),
}


@pytest.mark.parametrize("case", sorted(PIPELINE_CASES))
def test_gpu_pipeline_preprocessing_matches_the_cpu_path(torch: Any, case: str) -> None:
    from scorepack_pytorch.gpu_images import ImagePipeline

    shape, config = PIPELINE_CASES[case]
    dtype = "uint8" if "uint8" in case else "float32"
    signature = Signature(
        inputs=(TensorSpec("image", dtype, shape),), outputs=(TensorSpec("y", "float32", (None,)),)
    )
    plan = _plan(signature, exact_decode=True, **config)
    pipeline = ImagePipeline(torch, plan, torch.device("cpu"), pillow_decode, READ_MODES)
    # shrinking, enlarging, shrinking one axis only, and two images of one size
    bodies = [
        jpeg(300, 200, seed=1),
        jpeg(12, 10, seed=2),
        jpeg(40, 9, seed=3),
        jpeg(300, 200, seed=4),
        png(64, 48, seed=5),  # the pipeline itself takes any image the decoder can read
    ]
    got = pipeline(bodies).numpy()
    want = np.concatenate([decode_image(b, plan).inputs["image"] for b in bodies])
    assert got.dtype == want.dtype and got.shape == want.shape
    # at most one pixel level apart, in the model's units: Pillow rounds to 8 bits between
    # its horizontal and vertical passes, the pipeline once at the end (a geometry error,
    # such as the half-pixel shift of an integer crop, costs tens of levels)
    level = float(np.max(np.asarray(plan.scale) / np.asarray(plan.std)))
    diff = np.abs(got.astype(np.float64) - want.astype(np.float64)) / level
    assert diff.max() <= 1.0 + 1e-4
    assert diff.mean() < 0.25


def test_gpu_pipeline_turns_decoder_failures_into_invalid_image(torch: Any) -> None:
    from scorepack_pytorch.gpu_images import ImagePipeline

    pipeline = ImagePipeline(torch, _plan(), torch.device("cpu"), pillow_decode, READ_MODES)
    with pytest.raises(InvalidImageError, match="could not be decoded on the GPU"):
        pipeline([jpeg(32, 32), truncated_jpeg(jpeg(64, 48))])


def test_torch_backend_scores_encoded_jpegs_like_the_cpu_path(
    torch: Any, torch_model: Path
) -> None:
    """The backend's encoded path end to end on the CPU, Pillow standing in for nvJPEG."""
    from scorepack_pytorch import TorchBackend

    class PillowDecodeTorch(TorchBackend):
        def _gpu_decoder(self, torch: Any) -> tuple[Any, Any]:
            return pillow_decode, READ_MODES

        def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            self.kinds.append((str(next(iter(inputs.values())).dtype), len(inputs["image"])))
            return super().predict(inputs)

    backend = PillowDecodeTorch(torch_model, device="cpu")
    backend.kinds = []  # type: ignore[attr-defined]
    preprocess = PreprocessConfig(preset="imagenet", resize="crop")
    bodies = [jpeg(256, 192, seed=s) for s in range(3)]
    with serving(backend, scoring_config(preprocess=preprocess)) as served:
        assert served.scorer.encoded_images
        assert served.backend.describe()["format"] == "torch.export"
        responses = [served.score(b, "image/jpeg", params={"raw": "true"}) for b in bodies]
        assert backend.kinds[-3:] == [("object", 1)] * 3  # type: ignore[attr-defined]
    got = [np.asarray(r.json()["outputs"]["probs"], np.float32) for r in responses]
    plain = TorchBackend(torch_model, device="cpu")
    with serving(plain, scoring_config(preprocess=preprocess)) as served:
        want = [
            np.asarray(
                served.score(b, "image/jpeg", params={"raw": "true"}).json()["outputs"]["probs"],
                np.float32,
            )
            for b in bodies
        ]
    for mine, theirs in zip(got, want, strict=True):
        np.testing.assert_allclose(mine, theirs, atol=2e-3)
        assert np.argmax(mine) == np.argmax(theirs)


def test_pinned_staging_reuses_one_buffer_per_input_and_grows_to_the_largest_batch(
    torch: Any,
) -> None:
    from scorepack_pytorch.staging import PinnedStaging

    staging = PinnedStaging(torch, torch.device("cpu"), pin=False)
    rows = np.arange(32, dtype=np.float32).reshape(8, 4)
    first = staging.to_device("x", rows[:4])
    np.testing.assert_array_equal(first.numpy(), rows[:4])
    buffer = staging.buffers["x"]
    np.testing.assert_array_equal(staging.to_device("x", rows[4:6]).numpy(), rows[4:6])
    assert staging.buffers["x"] is buffer  # reused, not reallocated
    np.testing.assert_array_equal(staging.to_device("x", rows).numpy(), rows)
    grown = staging.buffers["x"]
    assert grown is not buffer and grown.shape == (8, 4)
    staging.to_device("x", rows[:3])
    assert staging.buffers["x"] is grown  # stays at the largest batch
    staging.to_device("x", rows.astype(np.float64)[:2])
    assert staging.buffers["x"].dtype == torch.float64  # another dtype: another buffer
    read_only = rows.copy()
    read_only.flags.writeable = False
    np.testing.assert_array_equal(staging.to_device("y", read_only).numpy(), rows)


def test_pinned_staging_copies_a_read_only_batch_once(torch: Any) -> None:
    """The batcher hands read-only views; they were copied to writable NumPy memory and
    then into the pinned buffer: twice per batch. NumPy allocations show in tracemalloc
    (torch's do not), so a second copy of a 16 MiB batch would show as 16 MiB."""
    import tracemalloc

    from scorepack_pytorch.staging import PinnedStaging

    staging = PinnedStaging(torch, torch.device("cpu"), pin=False)
    batch = np.random.default_rng(0).random((32, 128, 1024), dtype=np.float32)  # 16 MiB
    batch.flags.writeable = False
    staging.to_device("x", batch)  # the buffer is made on the first batch
    tracemalloc.start()
    try:
        staged = staging.to_device("x", batch)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < batch.nbytes // 4, f"{peak} bytes allocated staging {batch.nbytes}"
    np.testing.assert_array_equal(staged.numpy(), batch)


# --- ONNX Runtime: -O cuda_graph --------------------------------------------------------


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from onnx_models import conv_classifier

    return conv_classifier(tmp_path_factory.mktemp("onnx_levers") / "conv.onnx")


def test_cuda_graph_on_the_cpu_is_refused(onnx_model: Path) -> None:
    from scorepack_onnx import OnnxBackend

    backend = OnnxBackend(onnx_model, device="cpu", options={"cuda_graph": "true"})
    with pytest.raises(ModelLoadError, match="needs a CUDA device"):
        backend.load()


def test_cuda_graph_shapes_refuse_free_dimensions_and_strings() -> None:
    pytest.importorskip("onnxruntime")
    from scorepack_onnx.cuda_graph import graph_shapes

    fixed = Signature(
        inputs=(
            TensorSpec("image", "float32", (None, 3, 8, 8)),
            TensorSpec("k", "int64", (), batched=False),
        ),
        outputs=(TensorSpec("probs", "float32", (None, 4)),),
    )
    assert graph_shapes(fixed, 32) == {"image": (32, 3, 8, 8), "k": (), "probs": (32, 4)}
    free = Signature(
        inputs=(TensorSpec("image", "float32", (None, 3, None, None)),),
        outputs=(TensorSpec("probs", "float32", (None, 4)),),
    )
    with pytest.raises(ModelLoadError, match=r"'image'.*a dimension other than the batch"):
        graph_shapes(free, 32)
    text = Signature(
        inputs=(TensorSpec("text", "object", (None,)),),
        outputs=(TensorSpec("probs", "float32", (None, 4)),),
    )
    with pytest.raises(ModelLoadError, match="strings"):
        graph_shapes(text, 32)


def test_fixed_binding_pads_batches_into_persistent_buffers(onnx_model: Path) -> None:
    """The mechanism a CUDA graph replays, run on host buffers (no graph on a CPU)."""
    import onnxruntime as ort

    from scorepack_onnx import OnnxBackend
    from scorepack_onnx.cuda_graph import FixedBinding, graph_shapes

    backend = OnnxBackend(onnx_model, device="cpu")
    backend.load()
    session, signature = backend._session, backend.signature
    binding = FixedBinding(ort, session, signature, graph_shapes(signature, 4), ("cpu", 0))
    buffers = dict(binding.values)
    rng = np.random.default_rng(0)
    answers = []
    for rows in (1, 3, 4):
        batch = rng.normal(size=(rows, 3, 8, 8)).astype(np.float32)
        padded = np.concatenate([batch, np.zeros((4 - rows, 3, 8, 8), np.float32)])
        (probs,) = binding.run({"image": padded})
        want = session.run(None, {"image": batch})[0]
        np.testing.assert_allclose(probs[:rows], want, rtol=1e-6, atol=1e-7)
        answers.append((probs.copy(), probs))
        assert all(binding.values[n] is buffers[n] for n in buffers)  # the same buffers
    # earlier answers were not overwritten by later runs
    for kept, returned in answers:
        np.testing.assert_array_equal(kept, returned)
    backend.unload()


def test_cuda_graph_capture_runs_during_load_not_on_a_request(onnx_model: Path) -> None:
    """ONNX Runtime captures a CUDA graph after a few ordinary runs: capture() makes them
    (at load, on the model thread) so the first live request only replays."""
    import onnxruntime as ort

    from scorepack_onnx import OnnxBackend
    from scorepack_onnx.cuda_graph import FixedBinding, graph_shapes

    backend = OnnxBackend(onnx_model, device="cpu")
    backend.load()
    runs: list[int] = []

    class Counting:
        def __init__(self, session: Any) -> None:
            self._session = session

        def io_binding(self) -> Any:
            return self._session.io_binding()

        def run_with_iobinding(self, binding: Any) -> None:
            runs.append(1)
            self._session.run_with_iobinding(binding)

    signature = backend.signature
    binding = FixedBinding(
        ort, Counting(backend._session), signature, graph_shapes(signature, 4), ("cpu", 0)
    )
    assert binding.capture() == len(runs) >= 2  # ONNX Runtime captures after 2 runs
    backend.unload()


# --- the benchmark suite: --device and variants -----------------------------------------


def test_bench_variants_are_chosen_by_name_for_a_device() -> None:
    from benchmarks.suite import models

    assert models.variant_options("pytorch-gpu-decode", "cuda") == ("pytorch", ("gpu_decode=true",))
    assert models.variant_options("onnx", "cuda") == ("onnx", ("tensorrt=false",))
    assert models.variant_options("onnx", "cpu") == ("onnx", ())
    with pytest.raises(ValueError, match="for --device cuda only"):
        models.variant_options("onnx-cuda-graph", "cpu")
    with pytest.raises(ValueError, match="for --device cpu only"):
        models.variant_options("tensorflow-bf16", "cuda")
    with pytest.raises(ValueError, match="unknown variant 'pytorch-fast'; choose from"):
        models.variant_options("pytorch-fast", "cuda")
    for device, names in models.DEFAULT_VARIANTS.items():
        for name in names:
            models.variant_options(name, device)
    assert models.DEFAULT_VARIANTS["cpu"] == ("tensorflow", "tensorflow-bf16", "onnx", "pytorch")


def test_bench_commands_carry_the_device_and_the_levers(tmp_path: Path) -> None:
    from benchmarks.suite import models, servers
    from benchmarks.suite.__main__ import inprocess_command

    model = models.BenchModel(
        "resnet50",
        "pytorch",
        tmp_path / "m.ts",
        "imagenet",
        options=("gpu_decode=true",),
        variant="pytorch-gpu-decode",
        device="cuda",
    )
    serve = servers.embedded_command(model)
    assert serve[serve.index("--device") + 1] == "cuda"
    assert serve[serve.index("-O") + 1] == "gpu_decode=true"
    measure = inprocess_command(model, tmp_path / "a.jpg", "1,8", 2.0)
    assert measure[measure.index("--device") + 1] == "cuda"
    assert measure[measure.index("-O") + 1] == "gpu_decode=true"
    package = servers.package_command(tmp_path / "pkg", "cuda")
    assert package[package.index("--device") + 1] == "cuda" and "--no-env-check" in package
    assert "--no-env-check" not in servers.package_command(tmp_path / "pkg", "cpu")


def test_bench_report_shows_the_device_and_keeps_cpu_results(tmp_path: Path) -> None:
    from benchmarks.suite import report

    results = {
        "machine": {
            "cpu": "X",
            "cores": 16,
            "memory_gib": 128,
            "gpus": ["NVIDIA H100"],
            "python": "3.11",
            "versions": {},
        },
        "device": "cuda",
        "variants": {"pytorch-gpu-decode": {"backend": "pytorch", "options": ["gpu_decode=true"]}},
        "duration_s": 4.0,
        "limits": [
            {
                "backend": "pytorch-gpu-decode",
                "decode": "scorepack",
                "image_decode": "backend",
                "batch": 32,
                "images_per_s": 900.0,
                "batch_latency_ms": 35.5,
            }
        ],
        "servers": [],
    }
    text = report.markdown(results)
    assert "| models ran on | cuda |" in text
    assert "| pytorch-gpu-decode | pytorch | `-O gpu_decode=true` |" in text
    assert "scorepack (by the backend)" in text
    md = tmp_path / "RESULTS.md"
    md.write_text(f"# Results\n\nnotes\n\n{report.START}\nCPU TABLE\n{report.END}\n\ntail\n")
    report.update_results_md("GPU TABLE 1\n", "cuda", md)
    report.update_results_md("GPU TABLE 2\n", "cuda", md)
    written = md.read_text()
    assert f"{report.START}\nCPU TABLE\n{report.END}" in written
    assert "GPU TABLE 2" in written and "GPU TABLE 1" not in written
    assert written.index("tail") < written.index("GPU TABLE 2")
    json.dumps(results)  # what the suite writes stays JSON


# --- on a GPU ---------------------------------------------------------------------------


def _torch_cuda() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def _ort_cuda() -> bool:
    if importlib.util.find_spec("onnxruntime") is None:
        return False
    import onnxruntime

    from scorepack_onnx.backend import cuda_device_count

    providers = onnxruntime.get_available_providers()
    return "CUDAExecutionProvider" in providers and cuda_device_count() > 0


torch_gpu = pytest.mark.skipif(not _torch_cuda(), reason="needs a CUDA build of torch and a GPU")
ort_gpu = pytest.mark.skipif(not _ort_cuda(), reason="needs onnxruntime-gpu and a CUDA GPU")


@pytest.mark.gpu
@torch_gpu
@pytest.mark.parametrize("resize", ["stretch", "crop"])
def test_gpu_decode_matches_the_cpu_path_over_http(
    torch: Any, torch_model: Path, resize: str
) -> None:
    pytest.importorskip("torchvision")
    from scorepack_pytorch import TorchBackend

    preprocess = PreprocessConfig(preset="imagenet", resize=resize)
    bodies = [jpeg(640, 480, seed=s) for s in range(6)] + [jpeg(120, 90, mode="L", seed=7)]
    gpu = TorchBackend(torch_model, device="cuda", options={"gpu_decode": "true"})
    with serving(gpu, scoring_config(preprocess=preprocess)) as served:
        assert served.scorer.encoded_images
        assert gpu.describe()["decode"] == "nvjpeg (GPU)"
        with ThreadPoolExecutor(len(bodies)) as pool:  # concurrent: decoded in batches
            got = list(
                pool.map(
                    lambda b: _probs(served.score(b, "image/jpeg", params={"raw": "true"})),
                    bodies,
                )
            )
        # a JPEG nvJPEG cannot decode is that request's 400, nobody else's: one cut right
        # after its headers has no scan data at all
        scan = bodies[0].index(b"\xff\xda")
        headers_only = bodies[0][: scan + 2 + int.from_bytes(bodies[0][scan + 2 : scan + 4])]
        served_plan = served.scorer.image_plan
        assert served_plan is not None  # the core lets it through: its headers are fine
        assert encoded_image(headers_only, served_plan).inputs["image"].dtype == object
        bad = served.score(headers_only, "image/jpeg")
        assert bad.status_code == 400, bad.text
        assert bad.json()["error"]["code"] == "invalid_image"
        # cut mid-scan, nvJPEG may decode what is there (as libjpeg does) or refuse it
        assert served.score(truncated_jpeg(bodies[0]), "image/jpeg").status_code in (200, 400)
        assert _probs(served.score(bodies[1], "image/jpeg", params={"raw": "true"})).shape
    plan = plan_image(gpu.signature, PreprocessConfig(preset="imagenet", resize=resize))
    assert plan is not None
    pipeline = gpu_pipeline(torch, plan)
    cpu_rows = np.concatenate([decode_image(b, plan).inputs[plan.input] for b in bodies])
    gpu_rows = pipeline(bodies).cpu().numpy()
    level = float(np.max(np.asarray(plan.scale) / np.asarray(plan.std)))
    diff = np.abs(gpu_rows - cpu_rows) / level
    # nvJPEG's IDCT and chroma upsampling differ from libjpeg-turbo's by a few levels
    assert diff.mean() <= DRAFT_MEAN_TOLERANCE
    assert np.percentile(diff, 99) <= DRAFT_P99_TOLERANCE
    plain = TorchBackend(torch_model, device="cuda", options={"gpu_decode": "false"})
    with serving(plain, scoring_config(preprocess=preprocess)) as served:
        want = [_probs(served.score(b, "image/jpeg", params={"raw": "true"})) for b in bodies]
    for mine, theirs in zip(got, want, strict=True):
        np.testing.assert_allclose(mine, theirs, atol=5e-3)


def gpu_pipeline(torch: Any, plan: ImagePlan) -> Any:
    from scorepack_pytorch.gpu_images import ImagePipeline, load_decoder

    decode, modes = load_decoder(torch)
    return ImagePipeline(torch, plan, torch.device("cuda"), decode, modes)


def _probs(response: Any) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.asarray(response.json()["outputs"]["probs"], np.float32)


@pytest.mark.gpu
@torch_gpu
def test_gpu_decode_throughput_is_measured(
    torch: Any, torch_model: Path, record_property: Any
) -> None:
    """Images/s of decode + preprocess, CPU path vs nvJPEG, recorded (never asserted)."""
    import time

    pytest.importorskip("torchvision")
    plan = _plan(
        Signature(
            inputs=(TensorSpec("image", "float32", (None, 3, 224, 224)),),
            outputs=(TensorSpec("y", "float32", (None,)),),
        ),
        preset="imagenet",
    )
    bodies = [jpeg(640, 480, seed=s % 4) for s in range(32)]
    pipeline = gpu_pipeline(torch, plan)
    pipeline(bodies)  # warm-up
    rates = {}
    for name, run in (
        ("cpu", lambda: np.concatenate([decode_image(b, plan).inputs["image"] for b in bodies])),
        ("gpu", lambda: pipeline(bodies).cpu()),
    ):
        started, calls = time.perf_counter(), 0
        while calls < 3 or time.perf_counter() - started < 1.0:
            out = run()
            calls += 1
        rates[name] = calls * len(bodies) / (time.perf_counter() - started)
        assert tuple(out.shape) == (32, 3, 224, 224)
    record_property("decode_images_per_s", rates)
    print(f"decode + preprocess, batch 32 of 640x480 JPEGs: {rates}")


@pytest.mark.gpu
@torch_gpu
def test_pinned_staging_on_the_gpu(torch: Any, torch_model: Path) -> None:
    from scorepack_pytorch import TorchBackend

    pinned = TorchBackend(torch_model, device="cuda")
    pinned.load()
    unpinned = TorchBackend(torch_model, device="cuda", options={"pinned": "false"})
    unpinned.load()
    assert pinned.describe()["pinned"] == "on" and unpinned.describe()["pinned"] == "off"
    rng = np.random.default_rng(0)
    for rows in (8, 3, 8):
        x = rng.random((rows, 3, SIZE, SIZE), dtype=np.float32)
        np.testing.assert_allclose(
            pinned.predict({"image": x})["probs"],
            unpinned.predict({"image": x})["probs"],
            rtol=1e-6,
            atol=1e-7,
        )
    buffer = pinned._staging.buffers["image"]
    assert buffer.is_pinned() and buffer.shape[0] == 8


@pytest.mark.gpu
@ort_gpu
def test_cuda_graph_serves_what_plain_cuda_serves(onnx_model: Path) -> None:
    from scorepack_onnx import OnnxBackend

    rng = np.random.default_rng(0)
    batches = [rng.normal(size=(rows, 3, 8, 8)).astype(np.float32) for rows in (1, 5, 32, 2)]
    graph = OnnxBackend(onnx_model, device="cuda", options={"cuda_graph": "true"})
    graph.load()  # captures the graph (FixedBinding.capture) before any request
    plain = OnnxBackend(onnx_model, device="cuda", options={"tensorrt": "false"})
    plain.load()
    assert graph.max_batch_size == 32
    assert graph.describe()["cuda_graph"] == "on (batch 32)"
    assert graph.describe()["provider"] == "CUDAExecutionProvider"
    for batch in batches:
        np.testing.assert_allclose(
            graph.predict({"image": batch})["probs"],
            plain.predict({"image": batch})["probs"],
            rtol=1e-5,
            atol=1e-6,
        )
    with serving(
        OnnxBackend(onnx_model, device="cuda", options={"cuda_graph": "true"}),
        scoring_config(max_batch_size=64),
    ) as served:
        assert served.scorer.batcher.max_rows == 32  # capped to the graph's batch
        response = served.score_json({"image": batches[1]}, raw="true")
        assert response.status_code == 200, response.text


@pytest.mark.gpu
@ort_gpu
def test_cuda_graph_refuses_free_dimensions_on_the_gpu(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from scorepack_onnx import OnnxBackend

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "free",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, "H", "W"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "free.onnx"
    path.write_bytes(model.SerializeToString())
    backend = OnnxBackend(path, device="cuda", options={"cuda_graph": "true"})
    with pytest.raises(ModelLoadError, match="needs fixed shapes"):
        backend.load()
