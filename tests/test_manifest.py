"""The package manifest (scorepack.yaml): round trip, hash checks, malformed packages."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from packages import sample_spec
from scorepack.errors import IntegrityError, PackageError
from scorepack.generator.spec import PackageSpec
from scorepack.manifest import (
    FORMAT_VERSION,
    LABELS_FILE,
    MANIFEST_FILE,
    dump_manifest,
    is_package,
    labels_text,
    load_manifest,
    manifest_data,
    verify_model,
    verify_wheels,
)


def write_package(root: Path, spec: PackageSpec) -> PackageSpec:
    """A package directory with real files for ``spec``'s model and wheels, hashed."""
    hashes = {}
    for relative in [*(f"model/{n}" for n in spec.model_files), *spec.wheels]:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"contents of {relative}".encode())
        hashes[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
    spec = replace(spec, file_hashes=hashes)
    (root / MANIFEST_FILE).write_text(dump_manifest(spec), encoding="utf-8")
    if spec.config.postprocess.labels is not None:
        (root / LABELS_FILE).write_text(
            labels_text(spec.config.postprocess.labels), encoding="utf-8"
        )
    return spec


def test_round_trip_gives_the_same_spec(tmp_path: Path) -> None:
    spec = write_package(tmp_path, sample_spec())
    assert is_package(tmp_path)
    loaded = load_manifest(tmp_path)
    assert loaded == spec
    # the parts compared by value, spelled out: a regression names the field
    assert loaded.config.postprocess.labels == ("daisy", "dandelion", "rose", "sunflower", "tulip")
    assert loaded.config.preprocess.resize == "crop"
    assert loaded.deployment.threads == 16
    assert loaded.backend_options == {"signature": "serving_default"}
    assert loaded.signature.inputs[0].shape == (None, 224, 224, 3)
    assert loaded.runtime_requirements[-1] == "uvloop==0.23.0; sys_platform != 'win32'"


def test_round_trip_without_labels_and_with_cuda(tmp_path: Path) -> None:
    spec = sample_spec(device="cuda")
    spec = replace(
        spec, config=replace(spec.config, postprocess=replace(spec.config.postprocess, labels=None))
    )
    spec = write_package(tmp_path, spec)
    assert load_manifest(tmp_path) == spec
    assert not (tmp_path / LABELS_FILE).exists()


def test_manifest_is_plain_yaml_with_what_the_issue_lists(tmp_path: Path) -> None:
    spec = write_package(tmp_path, sample_spec())
    text = (tmp_path / MANIFEST_FILE).read_text()
    assert text.startswith("# scorepack package manifest")
    data = yaml.safe_load(text)
    assert data == manifest_data(spec)
    # a package of one model stays at format 1 (2 is a package of several; readers take both)
    assert data["format"] == 1 and FORMAT_VERSION == 2
    assert data["backend"]["name"] == "tensorflow"
    assert data["framework"] == {"name": "tensorflow", "version": "2.21.0"}
    assert data["scorepack"] == {"version": "0.1.0"}
    assert data["device"] == "cpu"
    assert data["scoring"]["batching"]["max_batch_size"] == 16
    assert data["scoring"]["preprocess"]["preset"] == "imagenet"
    files = {f["path"]: f["sha256"] for f in data["model"]["files"]}
    assert files == {
        n: hashlib.sha256(f"contents of model/{n}".encode()).hexdigest() for n in spec.model_files
    }


def test_model_files_that_match_pass(tmp_path: Path) -> None:
    spec = write_package(tmp_path, sample_spec())
    verify_model(spec, tmp_path / "model")
    verify_wheels(spec, tmp_path)


def test_a_modified_model_file_is_refused(tmp_path: Path) -> None:
    spec = write_package(tmp_path, sample_spec())
    target = tmp_path / "model" / "variables" / "variables.index"
    target.write_bytes(b"tampered")
    with pytest.raises(IntegrityError) as info:
        verify_model(spec, tmp_path / "model")
    assert info.value.path == str(target)
    assert info.value.actual == hashlib.sha256(b"tampered").hexdigest()
    assert "does not match the package manifest" in info.value.message
    assert "rebuild it" in info.value.message


def test_a_missing_model_file_is_named(tmp_path: Path) -> None:
    spec = write_package(tmp_path, sample_spec())
    (tmp_path / "model" / "saved_model.pb").unlink()
    with pytest.raises(PackageError, match=r"saved_model\.pb is missing"):
        verify_model(spec, tmp_path / "model")


def test_a_modified_wheel_is_refused(tmp_path: Path) -> None:
    spec = write_package(tmp_path, sample_spec())
    (tmp_path / spec.wheels[0]).write_bytes(b"not the wheel")
    with pytest.raises(IntegrityError):
        verify_wheels(spec, tmp_path)


def test_modified_labels_are_refused(tmp_path: Path) -> None:
    write_package(tmp_path, sample_spec())
    (tmp_path / LABELS_FILE).write_text("daisy\nrose\n")
    with pytest.raises(IntegrityError, match=r"labels\.txt"):
        load_manifest(tmp_path)


def test_not_a_package(tmp_path: Path) -> None:
    assert not is_package(tmp_path)
    with pytest.raises(PackageError, match=r"is not a scorepack package.*scorepack build"):
        load_manifest(tmp_path)
    with pytest.raises(PackageError, match="does not exist"):
        load_manifest(tmp_path / "nowhere")


def test_a_newer_format_says_to_upgrade(tmp_path: Path) -> None:
    write_package(tmp_path, sample_spec())
    path = tmp_path / MANIFEST_FILE
    data = yaml.safe_load(path.read_text())
    data["format"] = FORMAT_VERSION + 1
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(PackageError, match="Upgrade scorepack"):
        load_manifest(tmp_path)


@pytest.mark.parametrize(
    "text",
    ["format: 1\nname: [unclosed", "- just\n- a list\n", "format: 1\nname: x\n"],
    ids=["bad-yaml", "not-a-mapping", "missing-keys"],
)
def test_malformed_manifests_are_package_errors(tmp_path: Path, text: str) -> None:
    (tmp_path / MANIFEST_FILE).write_text(text)
    with pytest.raises(PackageError):
        load_manifest(tmp_path)


def test_deployment_settings_a_newer_scorepack_added_are_dropped(tmp_path: Path) -> None:
    spec = write_package(tmp_path, sample_spec())
    path = tmp_path / MANIFEST_FILE
    data = yaml.safe_load(path.read_text())
    data["deployment"]["a_future_setting"] = 3
    path.write_text(yaml.safe_dump(data))
    assert load_manifest(tmp_path).deployment == spec.deployment
