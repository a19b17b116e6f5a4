"""The PyTorch backend: TorchScript and torch.export programs told apart by content, their
signatures, fixed batches, checkpoints refused with the export commands (which are run
here, so they cannot rot), packaging, and (with a GPU) CUDA and half precision."""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402

import parity_models  # noqa: E402
import scorepack  # noqa: E402
from parity_models import SIZE, torch_cnn, torch_models  # noqa: E402
from scorepack import TensorSpec  # noqa: E402
from scorepack.cli import build_cli  # noqa: E402
from scorepack.errors import DeviceUnavailableError, ModelLoadError, PackageError  # noqa: E402
from scorepack.server import BackgroundServer  # noqa: E402
from scorepack_pytorch import (  # noqa: E402
    SPEC,
    TorchBackend,
    requirements,
    signature_files,
)
from scorepack_pytorch.compat import torchvision_release  # noqa: E402

HAS_GPU = torch.cuda.is_available()
gpu = pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA build of torch and a GPU")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return torch_models(tmp_path_factory.mktemp("torch"))


@pytest.fixture(scope="module")
def two_inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The two-input, two-output model as bare TorchScript and as a .pt2."""
    root = tmp_path_factory.mktemp("torch_two")
    model = parity_models.two_inputs()
    image, extra = torch.zeros(2, 3, 8, 8), torch.zeros(2, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(model), str(root / "two.ts"))
    batch = torch.export.Dim("batch")
    program = torch.export.export(model, (image, extra), dynamic_shapes=({0: batch}, {0: batch}))
    torch.export.save(program, str(root / "two.pt2"))
    return {"ts": root / "two.ts", "pt2": root / "two.pt2"}


def _loaded(path: Path, **kwargs: Any) -> TorchBackend:
    backend = TorchBackend(path, **kwargs)
    backend.load()
    return backend


def _batch(rows: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((rows, 3, SIZE, SIZE), dtype=np.float32)


def _eager(x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch_cnn()(torch.from_numpy(x))["probs"].numpy()


# --- TorchScript -----------------------------------------------------------------------


def test_torchscript_signature_from_the_archive(models: dict[str, Path]) -> None:
    backend = _loaded(models["torchscript"], device="cpu")
    sig = backend.signature
    assert [(s.name, s.dtype, s.shape) for s in sig.inputs] == [
        ("image", "float32", (None, 3, SIZE, SIZE))
    ]
    # the outputs were found by one trial run
    assert [(s.name, s.dtype, s.shape) for s in sig.outputs] == [("probs", "float32", (None, 10))]
    assert backend.describe()["format"] == "torchscript"
    x = _batch(5)
    np.testing.assert_allclose(
        backend.predict({"image": x})["probs"], _eager(x), rtol=1e-5, atol=1e-7
    )


def test_torchscript_without_shapes_says_how_to_give_them(models: dict[str, Path]) -> None:
    with pytest.raises(ModelLoadError) as info:
        _loaded(models["torchscript_bare"], device="cpu")
    message = info.value.message
    assert "-O input_shape=3x224x224" in message
    assert "signature_files" in message
    assert "torch.export" in message


@pytest.mark.parametrize("shape", ["3x16x16", "image:3x16x16"])
def test_torchscript_input_shape_option(models: dict[str, Path], shape: str) -> None:
    backend = _loaded(models["torchscript_bare"], device="cpu", options={"input_shape": shape})
    # the name comes from forward()'s argument, the shape from the option
    assert backend.signature.inputs == (TensorSpec("image", "float32", (None, 3, SIZE, SIZE)),)
    assert backend.signature.output_names == ["probs"]
    x = _batch(3, seed=4)
    np.testing.assert_allclose(
        backend.predict({"image": x})["probs"], _eager(x), rtol=1e-5, atol=1e-7
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"input_shape": "3 by 16"}, "not a shape"),
        ({"input_shape": "picture:3x16x16"}, "names no input"),
        ({"input_shape": "3x16x16", "input_dtype": "floaty"}, "not a NumPy dtype"),
    ],
)
def test_bad_shape_options(models: dict[str, Path], options: dict[str, str], message: str) -> None:
    with pytest.raises(ModelLoadError, match=message):
        _loaded(models["torchscript_bare"], device="cpu", options=options)


def test_torchscript_several_inputs_positional_outputs(two_inputs: dict[str, Path]) -> None:
    with pytest.raises(ModelLoadError, match=re.escape("image:...,extra:...")):
        _loaded(two_inputs["ts"], device="cpu", options={"input_shape": "3x8x8"})
    backend = _loaded(
        two_inputs["ts"], device="cpu", options={"input_shape": "image:3x8x8,extra:4"}
    )
    assert backend.signature.input_names == ["image", "extra"]
    # a tuple of outputs gets the documented positional names
    assert [(s.name, s.shape) for s in backend.signature.outputs] == [
        ("output_0", (None, 5)),
        ("output_1", (None, 4)),
    ]


def test_signature_file_with_outputs_skips_the_trial_run(tmp_path: Path) -> None:
    model = parity_models.two_inputs()
    files = signature_files(
        [
            TensorSpec("pixels", "float32", (None, 3, 8, 8)),
            TensorSpec("side", "float32", (None, 4)),
        ],
        [TensorSpec("scores", "float32", (None, 5)), TensorSpec("features", "float32", (None, 4))],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(model), str(tmp_path / "named.ts"), _extra_files=files)
    backend = _loaded(tmp_path / "named.ts", device="cpu")
    assert backend.signature.input_names == ["pixels", "side"]
    assert backend.signature.output_names == ["scores", "features"]
    out = backend.predict(
        {"pixels": np.ones((2, 3, 8, 8), np.float32), "side": np.ones((2, 4), np.float32)}
    )
    assert out["scores"].shape == (2, 5)
    assert out["features"].shape == (2, 4)


def test_torchscript_json_tensors_over_http(two_inputs: dict[str, Path]) -> None:
    scorer = scorepack.load(
        two_inputs["ts"], device="cpu", options={"input_shape": "image:3x8x8,extra:4"}, wait=False
    )
    rows = {"image": np.ones((2, 3, 8, 8)).tolist(), "extra": [[1, 2, 3, 4], [0, 0, 0, 0]]}
    with (
        BackgroundServer(scorer) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        reply = client.post("/score?raw=true", json={"inputs": rows})
        assert reply.status_code == 200, reply.text
        outputs = reply.json()["outputs"]
        assert np.array(outputs["output_0"]).shape == (2, 5)
        bad = client.post("/score", json={"inputs": {"image": rows["image"]}})
        assert bad.status_code == 400
        assert "extra" in bad.json()["error"]["message"]


# --- torch.export ----------------------------------------------------------------------


def test_pt2_signature_from_the_program(models: dict[str, Path]) -> None:
    backend = _loaded(models["pt2"], device="cpu")
    sig = backend.signature
    assert sig.inputs == (TensorSpec("image", "float32", (None, 3, SIZE, SIZE)),)
    assert sig.outputs == (TensorSpec("probs", "float32", (None, 10)),)
    assert backend.max_batch_size is None
    assert backend.describe()["format"] == "torch.export"
    x = _batch(7, seed=2)
    np.testing.assert_allclose(
        backend.predict({"image": x})["probs"], _eager(x), rtol=1e-5, atol=1e-7
    )


def test_pt2_names_from_the_program_and_positional_outputs(two_inputs: dict[str, Path]) -> None:
    backend = _loaded(two_inputs["pt2"], device="cpu")
    assert [(s.name, s.shape) for s in backend.signature.inputs] == [
        ("image", (None, 3, 8, 8)),
        ("extra", (None, 4)),
    ]
    assert backend.signature.output_names == ["output_0", "output_1"]
    out = backend.predict(
        {"image": np.ones((3, 3, 8, 8), np.float32), "extra": np.ones((3, 4), np.float32)}
    )
    assert sorted(out) == ["output_0", "output_1"]
    assert out["output_0"].shape == (3, 5)


def test_pt2_fixed_batch_is_padded_and_the_batcher_capped(models: dict[str, Path]) -> None:
    backend = _loaded(models["pt2_batch2"], device="cpu")
    assert backend.signature.inputs[0].shape == (2, 3, SIZE, SIZE)
    assert backend.max_batch_size == 2
    x = _batch(5, seed=6)
    np.testing.assert_allclose(
        backend.predict({"image": x[:1]})["probs"], _eager(x[:1]), rtol=1e-5, atol=1e-7
    )
    with scorepack.load(models["pt2_batch2"], device="cpu") as scorer:
        assert scorer.batcher.max_rows == 2
        np.testing.assert_allclose(
            scorer.predict({"image": x})["probs"], _eager(x), rtol=1e-5, atol=1e-7
        )


def test_pt2_refuses_torchscript_only_options(models: dict[str, Path]) -> None:
    with pytest.raises(ModelLoadError, match="TorchScript archives only"):
        _loaded(models["pt2"], device="cpu", options={"input_shape": "3x16x16"})


def test_kind_is_read_from_content_not_the_name(models: dict[str, Path], tmp_path: Path) -> None:
    ts_named_pt2 = shutil.copy(models["torchscript"], tmp_path / "model.pt2")
    pt2_named_pt = shutil.copy(models["pt2"], tmp_path / "model.pt")
    assert _loaded(Path(ts_named_pt2), device="cpu").describe()["format"] == "torchscript"
    assert _loaded(Path(pt2_named_pt), device="cpu").describe()["format"] == "torch.export"


def test_runs_under_inference_mode(models: dict[str, Path]) -> None:
    backend = _loaded(models["pt2"], device="cpu")
    seen: list[bool] = []
    inner = backend._module

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(torch.is_inference_mode_enabled())
        return inner(*args, **kwargs)

    backend._module = spy
    backend.predict({"image": _batch(1)})
    assert seen == [True]


def test_half_on_cpu_is_ignored_with_a_warning(
    models: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="scorepack.pytorch")
    backend = _loaded(models["pt2"], device="cpu", options={"half": True})
    assert "GPU only" in caplog.text
    assert backend.describe()["precision"] == "model's own"
    assert backend.predict({"image": _batch(1)})["probs"].dtype == np.float32


def test_torchscript_is_frozen_and_optimised_for_inference(tmp_path: Path) -> None:
    class ConvBN(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3)
            self.bn = torch.nn.BatchNorm2d(8)

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.bn(self.conv(image))).mean((2, 3))

    torch.manual_seed(0)
    model = ConvBN().eval()
    model.bn.running_mean.uniform_(-1, 1)  # non-trivial statistics, so folding matters
    model.bn.running_var.uniform_(0.5, 2)
    path = tmp_path / "convbn.ts"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(model), str(path))
    options = {"input_shape": "3x16x16"}
    optimised = _loaded(path, options=options)
    plain = _loaded(path, options={**options, "optimize": "false"})
    # batch norm is folded into the convolution only in the optimised module
    assert "batch_norm" in str(plain._module.inlined_graph)
    assert "batch_norm" not in str(optimised._module.inlined_graph)
    x = np.random.default_rng(1).random((4, 3, 16, 16), dtype=np.float32)
    got = optimised.predict({"image": x})["output_0"]
    want = plain.predict({"image": x})["output_0"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        np.testing.assert_allclose(want, model(torch.from_numpy(x)).numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ModelLoadError, match="optimize must be true or false"):
        _loaded(path, options={**options, "optimize": "maybe"})


def test_thread_option(models: dict[str, Path]) -> None:
    before = torch.get_num_threads()
    try:
        _loaded(models["pt2"], device="cpu", options={"intra_op_threads": 1})
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ModelLoadError, match="intra_op_threads"):
        _loaded(models["pt2"], device="cpu", options={"intra_op_threads": "all"})


@pytest.mark.parametrize("kind", ["torchscript", "pt2"])
def test_unload_frees_the_weights_at_once(models: dict[str, Path], kind: str) -> None:
    """Freed by unload() itself, before it empties CUDA's cache (which can give back only
    free blocks): a .pt2's module refers to itself, so only the collector frees it."""
    import gc
    import weakref

    backend = _loaded(models[kind], device="cpu")
    module = weakref.ref(backend._module)  # a frozen TorchScript module holds no parameters
    enabled = gc.isenabled()
    gc.disable()  # no automatic collection may do unload()'s work
    try:
        backend.unload()
        assert module() is None
    finally:
        if enabled:
            gc.enable()


@pytest.mark.skipif(HAS_GPU, reason="checks the CPU-only machine")
def test_cuda_without_a_gpu_is_an_error(models: dict[str, Path]) -> None:
    with pytest.raises(DeviceUnavailableError):
        _loaded(models["pt2"], device="cuda")


# --- checkpoints are refused with the export commands ----------------------------------


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("checkpoints")
    model = torch_cnn()
    torch.save(model.state_dict(), root / "state_dict.pt")
    # a whole pickled nn.Module (of a class pickle can find again)
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()), root / "module.pt")
    torch.save(model.state_dict(), root / "legacy.pt", _use_new_zipfile_serialization=False)
    return {p.stem: p for p in root.iterdir()}


@pytest.mark.parametrize("name", ["state_dict", "module", "legacy"])
def test_checkpoints_are_refused_with_the_export_commands(
    checkpoints: dict[str, Path], name: str
) -> None:
    path = checkpoints[name]
    assert scorepack.resolve_backend(path).name == "pytorch"
    with pytest.raises(ModelLoadError) as info:
        TorchBackend(path).load()
    message = info.value.message
    for command in (
        "torch.export.export",
        "torch.export.save",
        "torch.jit.trace",
        "torch.jit.script",
    ):
        assert command in message
    result = CliRunner().invoke(build_cli(), ["inspect", str(path)])
    assert result.exit_code == 1
    assert "torch.save checkpoint" in result.output


def test_the_advised_export_commands_work(
    checkpoints: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run the code the refusal shows, on the refused state_dict, and serve its results."""
    shutil.copy(checkpoints["state_dict"], tmp_path / "model.pt")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelLoadError) as info:
        TorchBackend(tmp_path / "model.pt").load()
    advice = info.value.message  # exactly what the user reads
    code = "\n".join(
        line.strip() for line in advice.splitlines() if line.startswith("    ") and "torch" in line
    )
    assert code.count("\n") >= 5, code
    namespace = {"torch": torch, "MyModel": parity_models._classes()["TorchCNN"]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        exec(code, namespace)
    served = {
        "model.pt2": {},
        "model.ts": dict(re.findall(r"-O (\w+)=(\S+)", advice)),
    }
    x = np.random.default_rng(1).random((2, 3, 224, 224), dtype=np.float32)
    want = _eager(x)
    for file, options in served.items():
        backend = _loaded(tmp_path / file, device="cpu", options=options)
        np.testing.assert_allclose(
            backend.predict({"image": x})["probs"], want, rtol=1e-4, atol=1e-6
        )


# --- packaging and isolation -----------------------------------------------------------


def test_requirements_name_the_build_and_its_index() -> None:
    version = torch.__version__.split("+")[0]
    cpu = requirements("cpu")
    assert cpu.pip == (
        "--extra-index-url https://download.pytorch.org/whl/cpu",
        f"torch=={version}+cpu",
    )
    # the package index's torch is the CUDA 13.0 build: no extra index, no local label
    cuda = requirements("cuda")
    assert cuda.pip == (f"torch=={version}", f"torchvision=={torchvision_release(version)}")
    assert cuda.cuda is not None and cuda.cuda.major == 13 and cuda.cuda.driver_min == 580
    cuda12 = requirements("cuda12")
    assert cuda12.pip == (
        "--extra-index-url https://download.pytorch.org/whl/cu126",
        f"torch=={version}+cu126",
        # the torchvision that -O gpu_decode=true needs, of the same CUDA build
        f"torchvision=={torchvision_release(version)}+cu126",
    )
    assert requirements("cuda13") == cuda
    # the wheels bring CUDA: a plain Ubuntu image, not a CUDA 11.8 one nothing uses
    assert "cuda" not in (cuda.base_image or "") and "cuda" not in (cuda12.base_image or "")
    with pytest.raises(PackageError, match="offers CUDA 12, 13"):
        requirements("cuda11")
    assert torchvision_release("2.13.0+cpu") == "0.28.0"
    assert torchvision_release("2.9.1") == "0.24.1"
    assert torchvision_release("1.13.0") is None
    assert SPEC.framework_version() == torch.__version__


def test_importing_the_plugin_does_not_import_torch() -> None:
    code = "import sys, scorepack_pytorch; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


# --- GPU -------------------------------------------------------------------------------


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("kind", ["torchscript", "pt2"])
def test_gpu_runs_on_the_device(models: dict[str, Path], kind: str) -> None:
    backend = _loaded(models[kind], device="cuda:0")
    assert backend.describe()["device"] == "cuda:0"
    assert next(backend._module.parameters()).device.type == "cuda"
    x = _batch(4, seed=8)
    np.testing.assert_allclose(backend.predict({"image": x})["probs"], _eager(x), atol=1e-4)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("kind", ["torchscript", "pt2"])
def test_gpu_half_precision(models: dict[str, Path], kind: str) -> None:
    backend = _loaded(models[kind], device="cuda", options={"half": True})
    assert backend.describe()["precision"] == "float16"
    assert backend.signature.inputs[0].dtype == "float32"  # clients still send float32
    x = _batch(4, seed=9)
    out = backend.predict({"image": x})["probs"]
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, _eager(x), atol=2e-2)
    assert list(out.argmax(1)) == list(_eager(x).argmax(1))


@pytest.mark.gpu
@gpu
def test_gpu_serves_over_http(models: dict[str, Path]) -> None:
    import images

    scorer = scorepack.load(models["pt2"], device="cuda", wait=False)
    with (
        BackgroundServer(scorer) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        reply = client.post("/score", content=images.jpeg(), headers={"content-type": "image/jpeg"})
        assert reply.status_code == 200, reply.text
    assert scorer.backend.device.is_cuda


# --- half precision: every floating tensor, failures at load ------------------------------


def _constant_model(path: Path) -> Path:
    """A .pt2 whose forward multiplies by a plain tensor attribute: torch.export lifts it
    as a constant, which module.half() does not cast."""

    class WithConstant(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            generator = torch.Generator().manual_seed(3)
            self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
            self.table = torch.randn(4, 5, generator=generator)  # not a buffer: a constant

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            pooled = self.conv(image).mean(dim=(2, 3))
            return torch.softmax(pooled @ self.table, dim=1)

    model = WithConstant().eval()
    example = torch.rand(2, 3, 8, 8)
    batch = torch.export.Dim("batch")
    program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))
    return path


@torch.no_grad()
def test_half_casts_the_constants_torch_export_lifts(tmp_path: Path) -> None:
    """Reproduced on the CPU: .half() leaves the lifted constant float32 and every batch
    fails; to_half casts it, and the float16 model answers like the float32 one."""
    from scorepack_pytorch.precision import half_probe, probe_inputs, to_half

    path = _constant_model(tmp_path / "constant.pt2")
    x = torch.rand(3, 3, 8, 8)
    plain = torch.export.load(str(path)).module()
    plain.half()
    with pytest.raises(RuntimeError, match="dtype"):
        plain(x.half())
    module = torch.export.load(str(path)).module()
    assert to_half(torch, module) == ["table"]
    got = module(x.half())
    assert got.dtype == torch.float16
    reference = torch.export.load(str(path)).module()(x)
    np.testing.assert_allclose(got.float().numpy(), reference.numpy(), atol=5e-3)
    spec = TensorSpec("image", "float32", (None, 3, 8, 8))
    assert probe_inputs([spec])["image"].shape == (1, 3, 8, 8)
    # the load-time probe raises what the framework raises (the backend maps it to a
    # ModelLoadError); on the cast module it passes
    with pytest.raises(RuntimeError):
        half_probe(lambda arrays: [("y", plain(torch.from_numpy(arrays["image"]).half()))], [spec])
    assert half_probe(
        lambda arrays: [("y", module(torch.from_numpy(arrays["image"]).half()))], [spec]
    )
    free = TensorSpec("image", "float32", (None, 3, None, None))
    assert probe_inputs([free]) is None


@pytest.mark.gpu
@gpu
def test_gpu_half_serves_a_program_with_a_constant(tmp_path: Path) -> None:
    path = _constant_model(tmp_path / "constant.pt2")
    backend = _loaded(path, device="cuda", options={"half": True})
    x = np.random.default_rng(0).random((4, 3, 8, 8), dtype=np.float32)
    reference = torch.export.load(str(path)).module()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(backend.predict({"image": x})["output_0"], reference, atol=5e-3)


@pytest.mark.gpu
@gpu
def test_gpu_torchscript_half_with_batch_norm_matches_float32(tmp_path: Path) -> None:
    """TorchScript is cast before it is frozen, so batch norm is folded in float16:
    compared here with the float32 model on the same GPU."""
    from parity_models import to_torchscript

    generator = torch.Generator().manual_seed(4)
    norm = torch.nn.BatchNorm2d(8)
    norm.running_mean = torch.randn(8, generator=generator) * 3
    norm.running_var = torch.rand(8, generator=generator) * 5 + 0.1
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        norm,
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 5),
        torch.nn.Softmax(dim=1),
    ).eval()
    path = to_torchscript(model, tmp_path / "bn.ts", trace=True)
    half = _loaded(path, device="cuda", options={"half": True})
    full = _loaded(path, device="cuda")
    x = np.random.default_rng(1).random((8, *half.signature.inputs[0].item_shape), np.float32)
    a = half.predict({half.signature.input_names[0]: x})
    b = full.predict({full.signature.input_names[0]: x})
    for name in b:
        np.testing.assert_allclose(a[name], b[name], atol=2e-2)
        assert list(a[name].argmax(1)) == list(b[name].argmax(1))
