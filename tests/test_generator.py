"""Package generation: render() against golden files, deploy targets' files, quoting, and
real builds (one per installed backend) that load and score like the model itself.

Regenerate the golden files after an intended change with
``SCOREPACK_UPDATE_GOLDEN=1 pytest tests/test_generator.py`` and review the diff.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import shlex
import subprocess
import sys
import zipfile
from dataclasses import replace
from importlib.metadata import distributions
from pathlib import Path
from typing import Any

import click
import numpy as np
import pytest
import yaml
from click.testing import CliRunner

import scorepack
from images import jpeg
from packages import backend_params, package_for, sample_spec, tiny_model
from scorepack.backend import Requirements
from scorepack.cli import build_cli
from scorepack.cuda import choose_environment
from scorepack.errors import IntegrityError, PackageError
from scorepack.generator import render, resolve_spec
from scorepack.generator.rendering import requirement_lines
from scorepack.generator.spec import DeploymentSettings
from scorepack.generator.wheels import repack_wheel
from scorepack.manifest import MANIFEST_FILE, load_manifest, sha256_file
from scorepack.openapi import SWAGGER_FILES
from scorepack.signature import Signature, TensorSpec

GOLDEN = Path(__file__).parent / "golden"
#: the known-good TensorFlow GPU row, so the golden files show what GPU packages state
TF_GPU = choose_environment("tensorflow", "2.21.0", None)


def cuda_multi_input_spec() -> Any:
    """A GPU package of a two-input model with no labels."""
    spec = sample_spec(
        name="fusion.v2",
        device="cuda",
        signature=Signature(
            inputs=(
                TensorSpec("image", "float32", (None, 16, 16, 3)),
                TensorSpec("extra", "float32", (None, 4)),
            ),
            outputs=(TensorSpec("scores", "float32", (None, 5)),),
        ),
        requirements=Requirements(pip=TF_GPU.pip, base_image=TF_GPU.base_image, cuda=TF_GPU),
        deployment=DeploymentSettings(replicas=2, threads=32),
        backend_options={},
        load_seconds=42.0,
    )
    config = replace(spec.config, postprocess=replace(spec.config.postprocess, labels=None))
    return replace(spec, config=config)


#: the fields of an ONNX Runtime model's spec (the packages of several models, --tracing)
ONNX_MODEL: dict[str, Any] = dict(
    model_files=("model.onnx",),
    model_entry="model.onnx",
    backend="onnx",
    backend_distribution="scorepack-onnx",
    backend_module="scorepack_onnx",
    backend_options={},
    framework="onnxruntime",
    framework_version="1.32.0",
    requirements=Requirements(pip=("onnxruntime==1.32.0",)),
)


def several_models_spec() -> Any:
    """A CPU package of two models: flowers (labels, top 3) and digits (no labels, top 1,
    batches of 4), as ``scorepack build flowers=... digits=...`` resolves it."""
    from scorepack.generator.several import join

    flowers = sample_spec()
    digits = sample_spec(
        name="digits",
        **ONNX_MODEL,
        signature=Signature(
            inputs=(TensorSpec("pixels", "float32", (None, 1, 28, 28)),),
            outputs=(TensorSpec("logits", "float32", (None, 10)),),
        ),
        file_hashes={"model/model.onnx": "6" * 64},
    )
    config = digits.config
    digits = replace(
        digits,
        config=replace(
            config,
            postprocess=replace(config.postprocess, labels=None, top_k=1),
            batching=replace(config.batching, max_batch_size=4),
        ),
    )
    joined = join([flowers, digits], "garden")
    hashes = {
        f"model/{m.name}/{name}": digest[0] * 64
        for m in (flowers, digits)
        for name, digest in ((n, m.file_hashes[f"model/{n}"]) for n in m.model_files)
    }
    wheels = (*flowers.wheels, "wheels/scorepack_onnx-0.1.0-py3-none-any.whl")
    wheel_hashes = {w: str(7 + i) * 64 for i, w in enumerate(wheels)}
    # as write_package leaves them: every manifest lists the wheels, each model its own files
    models = tuple(
        replace(
            m,
            wheels=wheels,
            file_hashes={f"model/{n}": m.file_hashes[f"model/{n}"] for n in m.model_files}
            | wheel_hashes,
        )
        for m in joined.models
    )
    # what the build environment would pin, fixed so that the golden files stay put
    return replace(
        joined,
        scorepack_version="0.1.0",
        runtime_requirements=flowers.runtime_requirements,
        wheels=wheels,
        file_hashes=hashes | wheel_hashes,
        models=models,
    )


def onnx_tracing_spec() -> Any:
    """A CPU ONNX package built with --tracing: the OTLP exporter of azmlinfsrv's
    OpenTelemetry release in its pins, protobuf 5 in place of the package's own."""
    from scorepack.generator.tracing import tracing_requirements

    spec = sample_spec(
        name="digits",
        **ONNX_MODEL,
        wheels=(
            "wheels/scorepack-0.1.0-py3-none-any.whl",
            "wheels/scorepack_onnx-0.1.0-py3-none-any.whl",
        ),
        file_hashes={
            "model/model.onnx": "6" * 64,
            "wheels/scorepack-0.1.0-py3-none-any.whl": "7" * 64,
            "wheels/scorepack_onnx-0.1.0-py3-none-any.whl": "8" * 64,
        },
    )
    # what a package pins without tracing, grpc's protobuf 6 among them
    runtime = (*spec.runtime_requirements, "grpcio==1.85.4", "protobuf==6.33.6")
    return replace(spec, tracing=True, runtime_requirements=tracing_requirements(runtime))


CASES = {
    "cpu-labels": sample_spec,
    "cuda-multi-input": cuda_multi_input_spec,
    "several-models": several_models_spec,
    "onnx-tracing": onnx_tracing_spec,
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_render_matches_the_golden_files(case: str) -> None:
    # the OpenAPI documents list every error code of the error tree, which grows with
    # every protocol: they are checked against scorepack.openapi in test_openapi.py instead
    files = {k: v for k, v in render(CASES[case]()).items() if k not in SWAGGER_FILES.values()}
    folder = GOLDEN / case
    if os.environ.get("SCOREPACK_UPDATE_GOLDEN"):
        for path, text in files.items():
            (folder / path).parent.mkdir(parents=True, exist_ok=True)
            (folder / path).write_text(text, encoding="utf-8")
    golden = {
        p.relative_to(folder).as_posix(): p.read_text("utf-8")
        for p in folder.rglob("*")
        if p.is_file()
    }
    assert sorted(files) == sorted(golden)
    for path, text in files.items():
        if text != golden[path]:
            diff = "\n".join(
                difflib.unified_diff(
                    golden[path].splitlines(), text.splitlines(), "golden", "rendered", lineterm=""
                )
            )
            pytest.fail(f"{case}/{path} differs from the golden file:\n{diff}")


def test_render_is_pure_and_repeatable() -> None:
    spec = sample_spec()
    assert render(spec) == render(spec)


def test_rendered_files_agree_with_each_other() -> None:
    spec = cuda_multi_input_spec()
    files = render(spec)
    env = yaml.safe_load(files["environment.yml"])
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    requirements = [
        line for line in files["requirements.txt"].splitlines() if line and not line.startswith("#")
    ]
    assert pip_section == requirements == requirement_lines(spec)
    # GPU TensorFlow is tensorflow[and-cuda]; the tensorflow-gpu stub is gone upstream
    assert "tensorflow[and-cuda]==2.21.0" in requirements
    assert not any(line.startswith("tensorflow-gpu") for line in requirements)
    assert "azureml-inference-server-http==1.5.1" in requirements
    assert requirements[-2:] == [f"./{w}" for w in spec.wheels]
    assert "python=3.11" in env["dependencies"]
    assert yaml.safe_load(files[MANIFEST_FILE])["device"] == "cuda"


def test_score_py_is_an_azureml_entry_script() -> None:
    source = render(sample_spec())["score.py"]
    compile(source, "score.py", "exec")
    assert "from azureml.contrib.services.aml_request import AMLRequest, rawhttp" in source
    assert "@rawhttp\ndef run(request: AMLRequest) -> AMLResponse:" in source
    assert "def init() -> None:" in source
    assert "BACKEND = 'tensorflow'" in source
    assert "BACKEND_MODULE = 'scorepack_tensorflow'" in source


def test_shell_commands_in_the_readme_are_quoted() -> None:
    nasty = "gpu aks; rm -rf ~"
    spec = sample_spec(deployment=DeploymentSettings(compute_name=nasty, gpu_cores=0))
    readme = render(spec)["README.md"]
    line = next(x for x in readme.splitlines() if x.startswith("scorepack deploy"))
    assert shlex.split(line) == [
        "scorepack",
        "deploy",
        ".",
        "--workspace-config",
        "config.json",
        "--compute",
        nasty,
        "--sdk",
        "v2",
    ]


def _readme_commands(readme: str) -> list[list[str]]:
    """The ``scorepack ...`` lines of a README's code blocks, split as a shell would."""
    commands, in_block = [], False
    for line in readme.splitlines():
        if line.startswith("```"):
            in_block = not in_block
        elif in_block and line.startswith("scorepack "):
            commands.append(shlex.split(line, comments=True))
    return commands


@pytest.mark.parametrize("case", sorted(CASES))
def test_readme_commands_use_only_current_options(case: str) -> None:
    """Every scorepack command a generated README shows is a command of the CLI with
    options it lists: no hidden (deprecated) spelling such as ``serve . --runtime azureml``,
    which the one-model README had left behind and the several-models one still showed."""
    cli = build_cli()
    commands = _readme_commands(render(CASES[case]())["README.md"])
    assert any(c[1] == "serve-azureml" for c in commands), commands
    for argv in commands:
        command = cli.commands[argv[1]]
        options = {
            name: param
            for param in command.params
            if isinstance(param, click.Option)
            for name in (*param.opts, *param.secondary_opts)
        }
        for token in argv[2:]:
            if token.startswith("-"):
                name = token.split("=", 1)[0]
                assert name in options, f"{' '.join(argv)}: {name} is not an option"
                assert not options[name].hidden, f"{' '.join(argv)}: {name} is deprecated"


class FakeTarget:
    """A deploy target that renders one file per package."""

    name = "fake"
    description = "writes deploy/fake.txt"

    def __init__(self, path: str = "deploy/fake.txt") -> None:
        self.path = path

    def render(self, spec: Any) -> dict[str, str]:
        return {self.path: f"deploy {spec.name} with {spec.deployment.threads} threads\n"}


def test_deploy_targets_files_are_part_of_the_package() -> None:
    files = render(sample_spec(), {"fake": FakeTarget()})
    assert files["deploy/fake.txt"] == "deploy flowers with 16 threads\n"
    assert "`deploy/fake.txt`" in files["README.md"]


@pytest.mark.parametrize("path", ["score.py", "model/x.pb", "../outside.txt", "/etc/passwd"])
def test_a_target_cannot_overwrite_or_escape_the_package(path: str) -> None:
    with pytest.raises(PackageError, match="fake"):
        render(sample_spec(), {"fake": FakeTarget(path)})


# --- real builds ---------------------------------------------------------------------


@pytest.fixture(scope="module", params=backend_params())
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.getbasetemp() / "packages"


def test_build_writes_a_self_contained_package(backend: str, work: Path) -> None:
    package = package_for(backend, work)
    spec = load_manifest(package)
    assert spec.backend == backend
    assert spec.device == "cpu"
    names = {p.relative_to(package).as_posix() for p in package.rglob("*") if p.is_file()}
    assert {"score.py", MANIFEST_FILE, "environment.yml", "requirements.txt", "README.md"} <= names
    # every model file and wheel is there, with the sha256 the manifest records
    for relative, digest in spec.file_hashes.items():
        assert sha256_file(package / relative) == digest, relative
    assert {f"model/{n}" for n in spec.model_files} | set(spec.wheels) == set(spec.file_hashes)
    wheels = [package / w for w in spec.wheels]
    assert [w.name.split("-")[0] for w in wheels] == ["scorepack", f"scorepack_{backend}"]
    with zipfile.ZipFile(wheels[0]) as archive:
        contents = set(archive.namelist())
    # the runtime score.py calls and the templates ship in the wheel
    assert {
        "scorepack/azureml/runtime.py",
        "scorepack/generator/templates/score.py.tmpl",
    } <= contents
    with zipfile.ZipFile(wheels[1]) as archive:
        assert f"scorepack_{backend}/__init__.py" in archive.namelist()
    requirements = (package / "requirements.txt").read_text()
    assert spec.requirements.pip[-1] in requirements


def test_a_package_loads_and_scores_like_its_model(backend: str, work: Path) -> None:
    package = package_for(backend, work)
    image = jpeg(40, 30, seed=3)
    with scorepack.load(tiny_model(backend, work), device="cpu") as direct:
        expected = direct.score(image, raw=True)
    with scorepack.load(package) as packaged:
        assert packaged.name == load_manifest(package).name
        got = packaged.score(image, raw=True)
    assert [e["index"] for e in got["predictions"][0]["top_k"]] == [
        e["index"] for e in expected["predictions"][0]["top_k"]
    ]
    for name, value in expected["outputs"].items():
        np.testing.assert_allclose(np.asarray(got["outputs"][name]), np.asarray(value), rtol=1e-5)


def test_loading_a_tampered_package_is_refused(work: Path, tmp_path: Path) -> None:
    backend = next((b for b in ("onnx", "tensorflow", "pytorch") if _has(b)), None)
    if backend is None:
        pytest.skip("no backend installed")
    import shutil

    package = shutil.copytree(package_for(backend, work), tmp_path / "copy")
    spec = load_manifest(package)
    victim = package / "model" / spec.model_files[0]
    victim.write_bytes(victim.read_bytes() + b"\0")
    with pytest.raises(IntegrityError, match=spec.model_files[0]):
        scorepack.load(package)


def _has(backend: str) -> bool:
    from packages import installed

    return installed(backend)


def test_build_from_the_command_line_and_as_a_zip(tmp_path: Path, work: Path) -> None:
    pytest.importorskip("tensorflow")
    model = tiny_model("tensorflow", work)
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"class {i}\n" for i in range(10)))
    runner = CliRunner()
    out = tmp_path / "pkg"
    result = runner.invoke(
        build_cli(),
        [
            "build",
            str(model),
            "-o",
            str(out),
            "--device",
            "cpu",
            "--name",
            "tiny-cnn",
            "--labels",
            str(labels),
            "--max-batch-size",
            "8",
            "--threads",
            "12",
            "--zip",
        ],
    )
    assert result.exit_code == 0, result.output
    archive = tmp_path / "pkg.zip"
    assert archive.is_file() and not out.exists()
    # the archive given where a folder is wanted: unpack it, not "no backend recognises"
    # or "a model, not a package: build one"
    for command in (["inspect"], ["serve-azureml"], ["serve", "--port", "0"]):
        refused = runner.invoke(build_cli(), [*command, str(archive)])
        assert refused.exit_code != 0
        assert "is a scoring package archive (scorepack build --zip): unpack it" in (
            refused.output
        ), refused.output
    extracted = tmp_path / "extracted"
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(extracted)
    spec = load_manifest(extracted)
    assert spec.name == "tiny-cnn"
    assert spec.config.batching.max_batch_size == 8
    assert spec.deployment.threads == 12
    # Azure ML sends no more than the package's threads take (beyond them: 503 at once)
    assert spec.deployment.max_concurrent_requests == 12
    assert spec.config.postprocess.labels == tuple(f"class {i}" for i in range(10))
    with scorepack.load(extracted) as scorer:
        top = scorer.score(jpeg())["predictions"][0]["top_k"][0]
    assert top["label"] == f"class {top['index']}"

    again = runner.invoke(
        build_cli(), ["build", str(model), "-o", str(archive), "--device", "cpu", "--zip"]
    )
    assert again.exit_code != 0
    assert "already exists" in again.output


def load_manifest_text(files: dict[str, str]) -> Any:
    return yaml.safe_load(files[MANIFEST_FILE])


def test_a_cuda_package_pins_the_gpu_framework(tmp_path: Path, work: Path) -> None:
    pytest.importorskip("tensorflow")
    # the signature is read on the CPU, so a GPU package builds on a machine without one
    spec = resolve_spec(tiny_model("tensorflow", work), device="cuda")
    assert spec.device == "cuda"
    assert spec.requirements.pip == (f"tensorflow[and-cuda]=={spec.framework_version}",)
    # the wheels bring CUDA 12; the manifest states the driver floor it needs
    assert spec.requirements.base_image == TF_GPU.base_image
    assert spec.requirements.cuda == TF_GPU
    assert load_manifest_text(render(spec))["requirements"]["cuda"]["driver_min"] == 555
    with pytest.raises(PackageError, match="offers CUDA 12"):
        resolve_spec(tiny_model("tensorflow", work), device="cuda", cuda=13)
    with pytest.raises(PackageError, match="CPU package"):
        resolve_spec(tiny_model("tensorflow", work), device="cpu", cuda=12)
    assert spec.deployment.gpu_cores == 1
    # Azure's scoring timeout leaves the runtime's own (which answers 504) room to fire first
    assert spec.deployment.scoring_timeout_ms > spec.config.batching.timeout_ms


def test_bad_names_and_devices_are_refused(work: Path) -> None:
    pytest.importorskip("tensorflow")
    model = tiny_model("tensorflow", work)
    with pytest.raises(PackageError, match="--name"):
        resolve_spec(model, device="cpu", name="my model; rm")
    with pytest.raises(PackageError, match="cpu or cuda"):
        resolve_spec(model, device="tpu")


def test_build_tracing_refuses_tensorflow_and_says_why(work: Path, tmp_path: Path) -> None:
    """TensorFlow needs protobuf 6, azmlinfsrv's OTLP exporter protobuf 5: no package."""
    pytest.importorskip("tensorflow")
    model = tiny_model("tensorflow", work)
    out = tmp_path / "pkg"
    result = CliRunner().invoke(
        build_cli(),
        ["build", str(model), "-o", str(out), "--device", "cpu", "--tracing", "--no-check"],
    )
    assert result.exit_code == 1, result.output
    assert "--tracing cannot go with the tensorflow backend" in result.output
    assert "protobuf==5.29.6" in result.output
    assert "tensorflow-cpu 2.21.0 needs protobuf" in result.output
    assert not out.exists()


@pytest.mark.parametrize("backend", ["onnx", "pytorch"])
def test_build_tracing_pins_the_otlp_exporter(backend: str, work: Path, tmp_path: Path) -> None:
    """ONNX Runtime (protobuf>=4.25.8) and PyTorch (no protobuf) take the exporter's set;
    the manifest says so and reads back (``check`` resolves it: test_check.py)."""
    pytest.importorskip({"onnx": "onnxruntime", "pytorch": "torch"}[backend])
    model = tiny_model(backend, work)
    out = tmp_path / "pkg"
    result = CliRunner().invoke(
        build_cli(),
        ["build", str(model), "-o", str(out), "--device", "cpu", "--tracing", "--no-check"],
    )
    assert result.exit_code == 0, result.output + str(result.exception)
    spec = load_manifest(out)
    assert spec.tracing
    pins = set(spec.runtime_requirements)
    assert {"opentelemetry-exporter-otlp-proto-http==1.33.0", "protobuf==5.29.6"} <= pins
    assert not any(p.startswith("protobuf==6") for p in pins)
    assert "protobuf==5.29.6" in (out / "requirements.txt").read_text()
    assert "SCOREPACK_OTLP_ENDPOINT" in (out / "README.md").read_text()
    # without --tracing: none of it
    plain = resolve_spec(model, device="cpu")
    assert not plain.tracing
    assert not any(p.startswith("opentelemetry-exporter") for p in plain.runtime_requirements)


def test_a_regular_install_is_repacked_into_an_installable_wheel(
    tmp_path: Path, work: Path
) -> None:
    pytest.importorskip("tensorflow")
    wheel = tmp_path / "first"
    spec = load_manifest(package_for("tensorflow", work))
    original = package_for("tensorflow", work) / spec.wheels[0]
    # install the wheel as a user would (not editable), then rebuild a wheel from that install
    site = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--target",
            str(site),
            str(original),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    dist = next(d for d in distributions(path=[str(site)]) if d.metadata["Name"] == "scorepack")
    rebuilt = repack_wheel(dist, wheel)
    assert rebuilt.name == original.name

    def members(path: Path) -> set[str]:
        with zipfile.ZipFile(path) as zf:
            return {
                n for n in zf.namelist() if not n.endswith(("RECORD", "INSTALLER", "REQUESTED"))
            }

    assert members(rebuilt) == members(original)
    with zipfile.ZipFile(rebuilt) as zf, zipfile.ZipFile(original) as zo:
        assert zf.read("scorepack/azureml/runtime.py") == zo.read("scorepack/azureml/runtime.py")
        record = zf.read(f"scorepack-{scorepack.__version__}.dist-info/RECORD").decode()
    runtime_line = next(
        line for line in record.splitlines() if line.startswith("scorepack/azureml/runtime.py,")
    )
    digest = hashlib.sha256((site / "scorepack/azureml/runtime.py").read_bytes()).digest()
    import base64

    assert base64.urlsafe_b64encode(digest).rstrip(b"=").decode() in runtime_line


def test_a_package_of_several_models_reads_back_as_rendered(tmp_path: Path) -> None:
    spec = several_models_spec()
    for path, text in render(spec).items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text, encoding="utf-8")
    loaded = load_manifest(tmp_path)
    assert loaded.models == spec.models  # backend, signature, scoring, labels, hashes
    assert loaded == spec
    # a reader of format 1 only would refuse it rather than take it for one model
    data = yaml.safe_load((tmp_path / MANIFEST_FILE).read_text())
    assert data["format"] == 2 and "signature" not in data and "scoring" not in data
    assert load_manifest(tmp_path / "models" / "digits").config.postprocess.top_k == 1
