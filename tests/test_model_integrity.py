"""A truncated or damaged model file fails to start, with a reason, on both hosts.

Each framework's own checks: ONNX's reader and checker, TensorFlow's checkpoint
checksums, and the CRC-32 of every member of a PyTorch archive (which PyTorch itself
does not check: a damaged weight would load and score wrong).
"""

from __future__ import annotations

import shutil
import struct
import zipfile
from pathlib import Path

import pytest

import scorepack
from cli_process import run_cli
from packages import package_for, tiny_model
from scorepack.azureml import runtime
from scorepack.azureml.layout import make_model_dir
from scorepack.errors import ModelLoadError
from scorepack.manifest import load_manifest, sha256_file


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.getbasetemp() / "packages"


def _flip_a_weight(archive: Path) -> None:
    """Flip one byte inside the first tensor record of a PyTorch archive."""
    data = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as zf:
        member = next(i for i in zf.infolist() if "/data/" in i.filename and i.file_size)
    name_len, extra_len = struct.unpack(
        "<HH", data[member.header_offset + 26 : member.header_offset + 30]
    )
    data[member.header_offset + 30 + name_len + extra_len] ^= 0xFF
    archive.write_bytes(bytes(data))


def _load(path: Path, backend: str | None = None) -> None:
    # the backend named: a file cut short may no longer be recognised by its content
    with scorepack.load(str(path), backend=backend, device="cpu"):
        pass


def test_a_truncated_onnx_file_fails_with_a_reason(tmp_path: Path, work: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    data = tiny_model("onnx", work).read_bytes()
    for cut in (len(data) // 3, len(data) - 1):
        victim = tmp_path / "model.onnx"
        victim.write_bytes(data[:cut])
        with pytest.raises(ModelLoadError, match="not a complete, valid ONNX model"):
            _load(victim, "onnx")


def test_onnx_weights_shorter_than_the_model_says_fail(tmp_path: Path, work: Path) -> None:
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    model = onnx.load(str(tiny_model("onnx", work)))
    path = tmp_path / "external.onnx"
    onnx.save_model(
        model, str(path), save_as_external_data=True, location="weights.bin", size_threshold=0
    )
    _load(path)  # whole, it loads
    weights = tmp_path / "weights.bin"
    weights.write_bytes(weights.read_bytes()[:-8])
    with pytest.raises(ModelLoadError, match="truncated or damaged"):
        _load(path)


def test_a_damaged_torchscript_weight_fails_with_a_reason(tmp_path: Path, work: Path) -> None:
    pytest.importorskip("torch")
    victim = shutil.copy(tiny_model("pytorch", work), tmp_path / "model.ts")
    _load(Path(victim))
    _flip_a_weight(Path(victim))
    with pytest.raises(ModelLoadError, match="does not match its CRC-32"):
        _load(Path(victim))
    half = tmp_path / "half.ts"
    half.write_bytes(Path(victim).read_bytes()[:5000])
    with pytest.raises(ModelLoadError, match="truncated or damaged"):
        _load(half, "pytorch")


def test_a_damaged_savedmodel_fails_with_tensorflows_checksum(tmp_path: Path, work: Path) -> None:
    pytest.importorskip("tensorflow")
    victim = shutil.copytree(tiny_model("tensorflow", work), tmp_path / "saved")
    data_file = next((victim / "variables").glob("variables.data-*"))
    data = bytearray(data_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    data_file.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="Checksum does not match"):
        _load(victim)
    data_file.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(ModelLoadError):
        _load(victim)


def test_the_embedded_server_does_not_start_on_a_damaged_model(tmp_path: Path, work: Path) -> None:
    pytest.importorskip("torch")
    victim = Path(shutil.copy(tiny_model("pytorch", work), tmp_path / "model.ts"))
    _flip_a_weight(victim)
    result = run_cli("serve", str(victim), "--port", "0", timeout=180)
    assert result.returncode != 0
    assert "does not match its CRC-32" in result.stdout + result.stderr


def test_azure_init_refuses_a_damaged_model_even_with_a_matching_hash(
    tmp_path: Path, work: Path
) -> None:
    """A package built from a damaged file carries its hash: the framework check catches it."""
    pytest.importorskip("torch")
    package = shutil.copytree(package_for("pytorch", work), tmp_path / "pkg")
    spec = load_manifest(package)
    victim = package / "model" / spec.model_files[0]
    before = sha256_file(victim)
    _flip_a_weight(victim)
    manifest = package / "scorepack.yaml"
    manifest.write_text(manifest.read_text().replace(before, sha256_file(victim)))
    model_dir = make_model_dir(load_manifest(package), package, tmp_path / "azure")
    with pytest.raises(ModelLoadError, match="does not match its CRC-32"):
        runtime.init(
            package / "score.py", backend="pytorch", environ={"AZUREML_MODEL_DIR": str(model_dir)}
        )
