"""Automatic format detection: by content, from the installed plugins, with errors that
list what each backend accepts or name the package to install."""

from __future__ import annotations

import logging
import shutil
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pluggy
import pytest
from click.testing import CliRunner

import scorepack
from scorepack import Backend, BackendSpec, hookimpl, hookspecs, plugins
from scorepack.cli import build_cli
from scorepack.detect import KNOWN_FORMATS, detect_backend, is_onnx_model, known_format
from scorepack.errors import (
    AmbiguousFormatError,
    BackendNotInstalledError,
    ModelError,
    UnknownFormatError,
)

TORCHSCRIPT = "TorchScript archive (torch.jit.save)"
PT2 = "torch.export program (torch.export.save, .pt2)"
CHECKPOINT = "PyTorch checkpoint (torch.save; export it to serve it)"
ONNX = "ONNX model"
SAVED_MODEL = "TensorFlow SavedModel"


# --- samples ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str | None]]:
    """name → (path, the known format it is in, or None), each under a misleading name."""
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    import torch

    import onnx_models
    from parity_models import torch_cnn, torch_models

    root = tmp_path_factory.mktemp("detect")
    built = torch_models(root / "built")
    model = torch_cnn()

    def renamed(source: Path, name: str) -> Path:
        return Path(shutil.copy(source, root / name))

    torch.save(model.state_dict(), root / "state.pt2")
    saved_model = root / "saved"
    saved_model.mkdir()
    (saved_model / "saved_model.pb").write_bytes(b"\x08\x01\x12\x00")
    garbage_zip = root / "model.pt"
    with zipfile.ZipFile(garbage_zip, "w") as archive:
        archive.writestr("model/readme.txt", "not a model")
    onnx_file = onnx_models.conv_classifier(root / "graph.onnx")
    truncated = root / "truncated.onnx"
    truncated.write_bytes(onnx_file.read_bytes()[:40])
    (root / "notes.onnx").write_text("an ONNX model, honestly\n")
    (root / "empty.pt").write_bytes(b"")
    (root / "empty_dir").mkdir()
    return {
        # a known format under a name that suggests another one
        "onnx_as_bin": (renamed(onnx_file, "model.bin"), ONNX),
        "torch_onnx_as_pt": (renamed(built["onnx"], "exported.pt"), ONNX),
        "torchscript_as_pt2": (renamed(built["torchscript"], "scripted.pt2"), TORCHSCRIPT),
        "torchscript_as_onnx": (renamed(built["torchscript_bare"], "traced.onnx"), TORCHSCRIPT),
        "pt2_as_pt": (renamed(built["pt2"], "program.pt"), PT2),
        "pt2_no_suffix": (renamed(built["pt2_batch2"], "program"), PT2),
        "checkpoint_as_pt2": (root / "state.pt2", CHECKPOINT),
        "saved_model": (saved_model, SAVED_MODEL),
        # not models, whatever their names say
        "saved_model_pb_file": (saved_model / "saved_model.pb", None),
        "zip_without_model": (garbage_zip, None),
        "truncated_onnx": (truncated, None),
        "text_named_onnx": (root / "notes.onnx", None),
        "empty_file": (root / "empty.pt", None),
        "empty_dir": (root / "empty_dir", None),
    }


SAMPLE_NAMES = [
    "onnx_as_bin",
    "torch_onnx_as_pt",
    "torchscript_as_pt2",
    "torchscript_as_onnx",
    "pt2_as_pt",
    "pt2_no_suffix",
    "checkpoint_as_pt2",
    "saved_model",
    "saved_model_pb_file",
    "zip_without_model",
    "truncated_onnx",
    "text_named_onnx",
    "empty_file",
    "empty_dir",
]


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_formats_are_known_by_content_not_name(
    samples: dict[str, tuple[Path, str | None]], name: str
) -> None:
    path, expected = samples[name]
    claimed = [fmt.name for fmt in KNOWN_FORMATS if fmt.sniff(path)]
    assert claimed == ([expected] if expected else [])
    fmt = known_format(path)
    assert (fmt.name if fmt else None) == expected


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_installed_backends_agree_with_the_known_formats(
    samples: dict[str, tuple[Path, str | None]], name: str
) -> None:
    path, _ = samples[name]
    backends = scorepack.plugins.get_backends()
    claimed = {spec.name for spec in backends.values() if spec.detect(path)}
    known = {fmt.backend for fmt in KNOWN_FORMATS if fmt.backend in backends and fmt.sniff(path)}
    assert claimed == known


def test_onnx_sniffer_reads_headers_only(tmp_path: Path) -> None:
    # a protobuf that starts like ModelProto but never reaches a graph is not ONNX
    path = tmp_path / "fake.onnx"
    path.write_bytes(b"\x08\x07\x12\x03abc" + b"\x1a\x01x" * 100)
    assert not is_onnx_model(path)
    # ir_version then a graph field whose length runs past the end of the file
    path.write_bytes(b"\x08\x07\x3a\xff\xff\x03")
    assert not is_onnx_model(path)


# --- choosing a backend ----------------------------------------------------------------


def test_each_format_gets_its_backend(samples: dict[str, tuple[Path, str | None]]) -> None:
    backends = scorepack.plugins.get_backends()
    expected = {
        "onnx_as_bin": "onnx",
        "torchscript_as_onnx": "pytorch",
        "pt2_as_pt": "pytorch",
        "checkpoint_as_pt2": "pytorch",  # claimed, so that loading it explains how to export
        "saved_model": "tensorflow",
    }
    for name, backend in expected.items():
        if backend in backends:
            assert detect_backend(samples[name][0], backends).name == backend


def test_unknown_path_lists_each_backends_formats(
    samples: dict[str, tuple[Path, str | None]],
) -> None:
    path = samples["text_named_onnx"][0]
    with pytest.raises(UnknownFormatError) as info:
        scorepack.resolve_backend(path)
    backends = scorepack.plugins.get_backends()
    for name, spec in backends.items():
        assert f"  {name}: {', '.join(spec.formats)}" in info.value.message
    result = CliRunner().invoke(build_cli(), ["inspect", str(path)])
    assert result.exit_code == 1
    assert "No installed backend recognises" in result.output
    assert "onnx: ONNX model" in result.output


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        scorepack.resolve_backend(tmp_path / "nothing.onnx")


# --- with some backends missing, or extra ones -----------------------------------------


def _manager(*plugin_objects: tuple[str, object]) -> pluggy.PluginManager:
    pm = pluggy.PluginManager("scorepack")
    pm.add_hookspecs(hookspecs)
    for name, plugin in plugin_objects:
        pm.register(plugin, name=name)
    return pm


@pytest.fixture
def use_plugins() -> Iterator[Callable[..., None]]:
    """Install a plugin manager holding only the plugins given (reset afterwards)."""

    def install(*plugin_objects: tuple[str, object]) -> None:
        plugins.set_plugin_manager(_manager(*plugin_objects))

    yield install
    plugins.reset()


class _NoModel(Backend):
    """A backend that is never loaded here: only its detection matters."""

    def load(self) -> None:
        raise AssertionError("not loaded in these tests")

    def predict(self, inputs: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError("not called in these tests")


class _ThirdParty:
    """A third-party plugin whose backend claims what ``detect`` says."""

    def __init__(self, name: str, detect: Callable[[Path], bool], formats: tuple[str, ...]) -> None:
        self.spec = BackendSpec(
            name=name,
            backend=_NoModel,
            formats=formats,
            detect=detect,
            framework=name,
            distributions=(name,),
            install=f"pip install scorepack-{name}",
        )

    @hookimpl
    def register_backends(self, register: Callable[[BackendSpec], None]) -> None:
        register(self.spec)


@pytest.mark.parametrize(
    ("sample", "package"),
    [
        ("onnx_as_bin", "'scorepack-onnx[cpu]'"),
        ("torchscript_as_pt2", "'scorepack-pytorch[cpu]' --extra-index-url"),
        ("pt2_as_pt", "'scorepack-pytorch[cpu]' --extra-index-url"),
    ],
)
def test_known_format_without_its_backend_names_the_package(
    samples: dict[str, tuple[Path, str | None]],
    use_plugins: Callable[..., None],
    sample: str,
    package: str,
) -> None:
    scorepack_tensorflow = pytest.importorskip("scorepack_tensorflow")
    use_plugins(("tensorflow", scorepack_tensorflow))
    path = samples[sample][0]
    with pytest.raises(BackendNotInstalledError) as info:
        scorepack.resolve_backend(path)
    assert package in info.value.message
    assert f"pip install {package}" in info.value.message
    result = CliRunner().invoke(build_cli(), ["inspect", str(path)])
    assert result.exit_code == 1
    assert f"pip install {package}" in result.output


def test_saved_model_without_tensorflow_names_its_package(
    samples: dict[str, tuple[Path, str | None]], use_plugins: Callable[..., None]
) -> None:
    scorepack_onnx = pytest.importorskip("scorepack_onnx")
    use_plugins(("onnx", scorepack_onnx))
    with pytest.raises(BackendNotInstalledError, match="pip install scorepack-tensorflow"):
        scorepack.resolve_backend(samples["saved_model"][0])
    # the ONNX file is still served by the backend that is there
    assert scorepack.resolve_backend(samples["onnx_as_bin"][0]).name == "onnx"


def test_two_backends_claiming_one_file_is_ambiguous(
    samples: dict[str, tuple[Path, str | None]], use_plugins: Callable[..., None]
) -> None:
    scorepack_onnx = pytest.importorskip("scorepack_onnx")
    rival = _ThirdParty("tensorrt", is_onnx_model, ("ONNX model, built into a TensorRT engine",))
    use_plugins(("onnx", scorepack_onnx), ("tensorrt", rival))
    path = samples["onnx_as_bin"][0]
    with pytest.raises(AmbiguousFormatError) as info:
        scorepack.resolve_backend(path)
    assert info.value.backends == ["onnx", "tensorrt"]
    assert "--backend" in info.value.message
    assert scorepack.resolve_backend(path, "tensorrt").name == "tensorrt"


def test_third_party_formats_are_detected_too(
    tmp_path: Path, use_plugins: Callable[..., None]
) -> None:
    model = tmp_path / "booster.json"
    model.write_text('{"learner": {"gradient_booster": {}}}')

    def is_booster(path: Path) -> bool:
        return path.is_file() and path.read_bytes().startswith(b'{"learner"')

    use_plugins(("xgboost", _ThirdParty("xgboost", is_booster, ("XGBoost JSON model",))))
    assert scorepack.resolve_backend(model).name == "xgboost"
    with pytest.raises(UnknownFormatError, match="xgboost: XGBoost JSON model"):
        scorepack.resolve_backend(tmp_path)


def test_a_crashing_detector_does_not_hide_the_others(
    samples: dict[str, tuple[Path, str | None]],
    use_plugins: Callable[..., None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    scorepack_onnx = pytest.importorskip("scorepack_onnx")

    def broken(path: Path) -> bool:
        raise OSError("cannot read that")

    use_plugins(("onnx", scorepack_onnx), ("broken", _ThirdParty("broken", broken, ("?",))))
    caplog.set_level(logging.WARNING, logger="scorepack.detect")
    assert scorepack.resolve_backend(samples["onnx_as_bin"][0]).name == "onnx"
    assert "cannot read that" in caplog.text


# --- end to end: inspect with no --backend ---------------------------------------------


def test_inspect_detects_every_format(tmp_path_factory: pytest.TempPathFactory) -> None:
    for module in ("tensorflow", "torch", "onnxruntime", "tf2onnx", "onnxscript"):
        pytest.importorskip(module)
    from parity_models import parity_models

    exports = parity_models(tmp_path_factory.mktemp("detect_parity"))
    expected = {
        "savedmodel": "tensorflow",
        "tf2onnx": "onnx",
        "torchscript": "pytorch",
        "pt2": "pytorch",
        "torch_onnx": "onnx",
    }
    runner = CliRunner()
    for name, backend in expected.items():
        result = runner.invoke(build_cli(), ["inspect", str(exports[name]), "--json"])
        assert result.exit_code == 0, (name, result.output)
        assert f'"backend": "{backend}"' in result.output, name
