"""``scorepack check``: a package's environment resolved by pip's real resolver, for the
package's target (Linux x86-64, its Python), against the package index, installing nothing.

These tests reach the package index (CI does). When it cannot be reached they FAIL with
that reason: a check that could not run never passes. Every backend × device package is
built once and the six resolves run in parallel, once per session.

They are what would have caught the GPU pins that did not exist (``torch==2.13.0+cu128``,
``onnxruntime-gpu==1.32.0``): a pin no index has is "not found" here.
"""

from __future__ import annotations

import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cli_process import run_cli
from packages import BACKENDS, installed, tiny_model
from scorepack.backend import Requirements
from scorepack.cli import build_cli
from scorepack.cuda import KNOWN_GOOD, PLAIN_UBUNTU_IMAGE, choose_environment
from scorepack.errors import PackageError
from scorepack.generator import build_package
from scorepack.generator.check import (
    CheckReport,
    check_package,
    check_spec,
    index_error,
    pip_environment,
)
from scorepack.manifest import load_manifest

DEVICES = ("cpu", "cuda")
PYPI = os.environ.get("PIP_INDEX_URL") or "https://pypi.org/simple"


def _need_index() -> None:
    problem = index_error(PYPI)
    if problem:
        pytest.fail(f"the package index {PYPI} is not reachable, so nothing was checked: {problem}")


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    """One package per installed backend and device."""
    root = tmp_path_factory.mktemp("check")
    out = {}
    for backend in BACKENDS:
        if not installed(backend):
            continue
        model = tiny_model(backend, root)
        for device in DEVICES:
            out[(backend, device)] = build_package(
                model, root / f"{backend}-{device}", device=device, targets={}
            ).path
            if backend in TRACING:
                out[(f"{backend}+tracing", device)] = build_package(
                    model,
                    root / f"{backend}-{device}-tracing",
                    device=device,
                    targets={},
                    tracing=True,
                ).path
    return out


#: the backends a package with tracing (the OTLP exporter on protobuf 5) is built for
TRACING = ("onnx", "pytorch")


#: the package of several models: an onnx and a pytorch model, for a GPU, built by the CLI
SEVERAL = {"tiny": "onnx", "cnn": "pytorch"}


@pytest.fixture(scope="session")
def several(tmp_path_factory: pytest.TempPathFactory) -> Path | None:
    """``scorepack build tiny=MODEL cnn=MODEL --device cuda`` (None: a backend is missing)."""
    if not all(installed(b) for b in SEVERAL.values()):
        return None
    root = tmp_path_factory.mktemp("check-several")
    out = root / "mix"
    result = CliRunner().invoke(
        build_cli(),
        [
            "build",
            *(f"{name}={tiny_model(backend, root)}" for name, backend in SEVERAL.items()),
            *("-o", str(out), "--device", "cuda", "--name", "mix", "--no-check"),
        ],
    )
    assert result.exit_code == 0, result.output + str(result.exception)
    return out


@pytest.fixture(scope="session")
def checks(
    built: dict[tuple[str, str], Path], several: Path | None
) -> tuple[dict[tuple[str, str], CheckReport], subprocess.CompletedProcess[str] | None]:
    """Every package checked for real, in parallel (the resolves wait on the network); the
    package of several models through the command line, ``scorepack check --json``."""
    _need_index()
    with ThreadPoolExecutor(max_workers=len(built) + 1) as pool:
        futures = {key: pool.submit(check_package, path) for key, path in built.items()}
        cli = (
            pool.submit(run_cli, "check", "--json", str(several), timeout=900)
            if several is not None
            else None
        )
        return (
            {key: future.result() for key, future in futures.items()},
            cli.result() if cli is not None else None,
        )


@pytest.fixture(scope="session")
def reports(
    checks: tuple[dict[tuple[str, str], CheckReport], Any],
) -> dict[tuple[str, str], CheckReport]:
    return checks[0]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_every_package_resolves_for_its_target(
    built: dict[tuple[str, str], Path],
    reports: dict[tuple[str, str], CheckReport],
    backend: str,
    device: str,
) -> None:
    if (backend, device) not in reports:
        pytest.skip(f"the {backend} backend is not installed")
    report = reports[(backend, device)]
    text = report.text()
    assert not report.failed, text
    assert not report.problems, text
    by_name = {r.requirement.split("==")[0].split("[")[0]: r for r in report.results}
    if report.unreachable:
        # an extra index out of reach (PyTorch's, for CPU torch): what needs it is marked
        # unchecked with the reason, never reported as found
        assert all("download.pytorch.org" in u for u in report.unreachable), text
        unchecked = [r for r in report.results if r.status == "unchecked"]
        assert unchecked and all("+" in r.requirement for r in unchecked), text
        assert all(not r.found and "not reachable" in r.detail for r in unchecked), text
    else:
        assert report.ok, text
    if device == "cuda":
        expected = choose_environment(
            {"onnx": "onnxruntime", "pytorch": "torch", "tensorflow": "tensorflow"}[backend],
            load_manifest(built[(backend, device)]).framework_version,
            None,
        ).major
        assert report.cuda_expected == expected
        framework = {
            "onnx": "onnxruntime-gpu",
            "pytorch": "torch",
            "tensorflow": "tensorflow",
        }[backend]
        result = by_name[framework]
        # the framework's wheels bring the CUDA major the manifest states
        assert result.found and result.cuda_major == expected, text
    else:
        assert all(r.cuda_major is None for r in report.results), text
    # the package's own wheels (scorepack, the plugin) resolve with their dependencies
    assert any(r.requirement.endswith(".whl") and r.found for r in report.results), text


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", TRACING)
def test_a_package_with_tracing_resolves_with_the_exporter(
    reports: dict[tuple[str, str], CheckReport], backend: str, device: str
) -> None:
    """``build --tracing``: azmlinfsrv's OpenTelemetry exporter and protobuf 5 resolve with
    the framework (ONNX Runtime asks for protobuf>=4.25.8; torch for none)."""
    key = (f"{backend}+tracing", device)
    if key not in reports:
        pytest.skip(f"the {backend} backend is not installed")
    report = reports[key]
    text = report.text()
    assert not report.failed, text
    assert not report.problems, text
    found = {r.requirement: r for r in report.results}
    for pin in ("opentelemetry-exporter-otlp-proto-http==1.33.0", "protobuf==5.29.6"):
        assert found[pin].found and found[pin].version == pin.split("==")[1], text
    if not report.unreachable:  # CPU torch needs PyTorch's index, out of reach here
        assert report.ok, text


def test_a_package_of_several_models_is_checked_model_by_model(
    several: Path | None, checks: tuple[Any, subprocess.CompletedProcess[str] | None]
) -> None:
    """``scorepack check --json`` on a package of several models (one environment for an
    onnx and a pytorch model, CUDA 13): it resolves, and each model is said to."""
    done = checks[1]
    if several is None or done is None:
        pytest.skip("the onnx and pytorch backends are both needed")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] and report["cuda_expected"] == 13, done.stdout
    assert [(m["name"], m["backend"], m["status"]) for m in report["models"]] == [
        ("tiny", "onnx", "ok"),
        ("cnn", "pytorch", "ok"),
    ], done.stdout
    assert report["models"][1]["cuda_major"] == 13
    requirements = {r["requirement"].split("==")[0]: r for r in report["requirements"]}
    assert requirements["onnxruntime-gpu[cuda,cudnn]"]["found"]
    assert requirements["torch"]["found"]
    # every wheel of the package (scorepack's and both plugins') resolves
    wheels = [r for r in report["requirements"] if r["requirement"].endswith(".whl")]
    assert len(wheels) == 3 and all(w["found"] for w in wheels), done.stdout


def test_a_model_that_does_not_resolve_is_named(several: Path | None) -> None:
    """One model's pin does not exist (onnxruntime-gpu 1.32.0): that model fails, by name and
    with pip's reason; the other model still resolves; the package does not."""
    if several is None:
        pytest.skip("the onnx and pytorch backends are both needed")
    _need_index()
    spec = load_manifest(several)
    bad = "onnxruntime-gpu[cuda,cudnn]==1.32.0"
    models = tuple(
        replace(m, requirements=replace(m.requirements, pip=(bad,))) if m.name == "tiny" else m
        for m in spec.models
    )
    # the framework pins and the package's wheels, without the runtime's pins: shorter
    broken = replace(
        spec,
        models=models,
        requirements=replace(
            spec.requirements, pip=tuple(ln for m in models for ln in m.requirements.pip)
        ),
        runtime_requirements=(),
    )
    report = check_spec(broken, several)
    text = report.text()
    assert report.failed and "does NOT resolve" in text
    verdicts = {m.name: m for m in report.models}
    assert verdicts["tiny"].status == "fails", text
    (culprit,) = verdicts["tiny"].culprits
    assert culprit.startswith(f"{bad} (not found: ") and "1.32.0" in culprit[len(bad) :], text
    assert verdicts["cnn"].status == "ok" and verdicts["cnn"].cuda_major == 13, text
    assert "model tiny (onnx): does NOT resolve: onnxruntime-gpu" in text
    assert "model cnn (pytorch): ok" in text
    # a plugin's wheel, resolved apart from the rest, still has scorepack's wheel beside it
    for result in report.results:
        if result.requirement.endswith(".whl"):
            assert result.found, text


def test_pins_that_do_not_exist_are_not_found(built: dict[tuple[str, str], Path]) -> None:
    """The old pins: onnxruntime-gpu copied from the CPU version (1.32.0 has no GPU release),
    and a CUDA-13 torch beside a CUDA-12 TensorFlow in one environment."""
    _need_index()
    key = ("onnx", "cuda") if ("onnx", "cuda") in built else next(iter(built))
    path = built[key]
    spec = load_manifest(path)
    # the pins alone (no runtime, no wheels): one short resolve
    broken = replace(
        spec,
        requirements=replace(spec.requirements, pip=("onnxruntime-gpu[cuda,cudnn]==1.32.0",)),
        runtime_requirements=(),
        wheels=(),
    )
    report = check_spec(broken, path)
    assert report.failed
    result = next(r for r in report.results if r.requirement.startswith("onnxruntime-gpu"))
    assert (result.status, result.found) == ("not found", False), report.text()
    assert "1.32.0" in result.detail
    assert "does NOT resolve" in report.text()


def test_a_mixed_cuda_environment_is_a_problem(built: dict[tuple[str, str], Path]) -> None:
    _need_index()
    path = next(iter(built.values()))
    spec = load_manifest(path)
    ort = choose_environment("onnxruntime", "1.32.0", 13)
    # a CUDA 13 onnxruntime beside a CUDA 12 cuDNN (as a CUDA 12 TensorFlow would bring)
    mixed = replace(
        spec,
        device="cuda",
        requirements=Requirements(
            pip=(*ort.pip, "nvidia-cudnn-cu12==9.28.0.42"),
            base_image=PLAIN_UBUNTU_IMAGE,
            cuda=ort,
        ),
        runtime_requirements=(),
        wheels=(),
    )
    report = check_spec(mixed, path)
    assert any("CUDA 13; the wheels bring CUDA 12 and 13" in p for p in report.problems), (
        report.text()
    )
    result = next(r for r in report.results if r.requirement.startswith("onnxruntime-gpu"))
    assert result.cuda_major == 13
    assert not report.ok


def test_an_unreachable_extra_index_is_said_never_guessed(
    built: dict[tuple[str, str], Path],
) -> None:
    _need_index()
    path = next(iter(built.values()))
    spec = load_manifest(path)
    torch12 = choose_environment("torch", "2.13.0", 12)
    cu12 = replace(
        spec,
        device="cuda",
        requirements=Requirements(pip=torch12.pip, base_image=PLAIN_UBUNTU_IMAGE, cuda=torch12),
    )
    # the extra index is made unreachable here, whatever the network does
    report = check_spec(
        cu12, path, reachable=lambda url: "refused (test)" if "pytorch" in url else None
    )
    assert not report.complete and not report.ok
    assert report.unreachable == ("https://download.pytorch.org/whl/cu126 (refused (test))",)
    unchecked = [r for r in report.results if r.status == "unchecked"]
    assert [r.requirement for r in unchecked] == list(torch12.pip[1:])
    assert "could not be checked from here" in report.text()


def test_an_unreachable_package_index_is_an_error_not_a_pass(tmp_path: Path) -> None:
    with pytest.raises(PackageError, match="not reachable"):
        check_package(
            _any_package(tmp_path), index="http://127.0.0.1:9/simple", reachable=index_error
        )


def _any_package(tmp_path: Path) -> Path:
    from packages import sample_spec
    from scorepack.generator import render

    spec = sample_spec()
    for name, text in render(spec).items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


def test_pip_runs_without_this_machines_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    # this machine's pip config adds a local folder with the CPU torch wheel and a
    # constraints file: a GPU check must see neither
    monkeypatch.setenv("PIP_FIND_LINKS", "/opt/wheels")
    monkeypatch.setenv("PIP_CONSTRAINT", "/etc/xdg/pip/constraints.txt")
    env = pip_environment()
    assert "PIP_FIND_LINKS" not in env and "PIP_CONSTRAINT" not in env
    assert env["PIP_CONFIG_FILE"] == os.devnull
    seen: dict[str, Any] = {}

    def runner(args: Any, env: dict[str, str], timeout: float) -> Any:
        seen["args"], seen["env"] = list(args), env
        return subprocess.CompletedProcess(args, 1, "", "ERROR: offline (test)")

    report = check_spec(
        replace(_sample(), wheels=()), Path("."), runner=runner, reachable=lambda url: None
    )
    args = seen["args"]
    assert {"--dry-run", "--only-binary=:all:", "--ignore-installed"} <= set(args)
    assert args[args.index("--python-version") + 1] == "3.11"
    assert "manylinux_2_28_x86_64" in args and "manylinux_2_17_x86_64" in args
    assert "--target" in args and "--report" in args
    assert "PIP_FIND_LINKS" not in seen["env"]
    assert report.failed


def _sample() -> Any:
    from packages import sample_spec

    return sample_spec()


def test_the_table_has_one_default_per_framework_and_states_the_driver() -> None:
    frameworks = {row.framework for row in KNOWN_GOOD}
    assert frameworks == {"torch", "onnxruntime", "tensorflow"}
    for framework in frameworks:
        rows = [r for r in KNOWN_GOOD if r.framework == framework]
        assert sum(r.default for r in rows) == 1
        for row in rows:
            # CUDA 13 needs a 580 driver; CUDA 12 at least 525
            assert row.driver_min >= (580 if row.major == 13 else 525)
            assert row.native_archs and row.base_image == PLAIN_UBUNTU_IMAGE
            assert all("cu128" not in line for line in row.pip)
    # PyPI's torch is the CUDA 13 build: no extra index, no local label
    assert choose_environment("torch", "2.13.0+cpu", 13).index_url is None
    assert choose_environment("onnxruntime", "1.32.0", None).pip == (
        "onnxruntime-gpu[cuda,cudnn]==1.31.1",
    )
    with pytest.raises(PackageError, match="knows no working GPU environment"):
        choose_environment("torch", "2.5.1", None)


def test_build_runs_the_check_and_says_what_the_gpu_needs(
    built: dict[tuple[str, str], Path], tmp_path: Path
) -> None:
    """`scorepack build` resolves the package it wrote (unless --no-check) and states CUDA."""
    if not installed("onnx"):
        pytest.skip("the onnx backend is not installed")
    _need_index()
    model = tiny_model("onnx", tmp_path)
    out = tmp_path / "pkg"
    result = CliRunner().invoke(
        build_cli(), ["build", str(model), "-o", str(out), "--device", "cuda"]
    )
    assert result.exit_code == 0, result.output
    assert "NVIDIA driver >= 580" in result.output
    assert "resolves:" in result.output and "onnxruntime-gpu[cuda,cudnn]==1.31.1" in result.output
    skipped = CliRunner().invoke(
        build_cli(),
        ["build", str(model), "-o", str(tmp_path / "p2"), "--device", "cuda", "--no-check"],
    )
    assert skipped.exit_code == 0 and "resolves:" not in skipped.output
