"""``scripts/gpu-check``: on a machine without an NVIDIA GPU it says so and exits 0; its
report says, per GPU path, ran / skipped (why) / failed (the error)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from benchmarks.gpu_check import PathResult, Row, read_junit, report

REPO = Path(__file__).resolve().parent.parent


def test_without_a_gpu_it_says_so_and_exits_0(tmp_path: Path) -> None:
    # a PATH whose nvidia-smi finds no GPU, whatever this machine has
    fake = tmp_path / "bin"
    fake.mkdir()
    smi = fake / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed: no devices' >&2\nexit 9\n")
    smi.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ.get('PATH', '')}"}
    done = subprocess.run(
        [str(REPO / "scripts" / "gpu-check")],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "no NVIDIA GPU here" in done.stderr


def test_the_prepared_wheels_are_ignored_by_git() -> None:
    done = subprocess.run(
        ["git", "check-ignore", "-q", ".gpu-check/wheels/scorepack-0.1.0-py3-none-any.whl"],
        cwd=REPO,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0


def test_the_report_says_what_ran_was_skipped_and_failed() -> None:
    text = report(
        {"GPU": "NVIDIA H200, 143771 MiB, 9.0, 580.65.06"},
        [
            PathResult("test_pytorch::test_gpu_half", "ran"),
            PathResult("test_onnx::test_gpu_tensorrt", "skipped", "needs onnxruntime-gpu"),
            PathResult("test_tensorflow::test_cuda_path", "failed", "AssertionError: x | y"),
        ],
        [Row("pytorch", "fp16", "served", 32, 812.5, 38.2)],
        ["tensorflow: no GPU build of its framework here"],
    )
    assert "| GPU | NVIDIA H200, 143771 MiB, 9.0, 580.65.06 |" in text
    assert "1 ran, 1 skipped, 1 failed" in text
    assert "| `test_onnx::test_gpu_tensorrt` | skipped | needs onnxruntime-gpu |" in text
    assert "AssertionError: x / y" in text  # a pipe would break the table
    assert "| pytorch | fp16 | served | 32 | 812.5 | 38.20 |  |" in text
    assert "- tensorflow: no GPU build of its framework here" in text


def test_the_report_reads_each_test_from_pytests_junit_xml(tmp_path: Path) -> None:
    """What a GPU test measured (``record_property``) comes back as its detail."""
    (tmp_path / "test_paths.py").write_text(
        "import pytest\n"
        "def test_measures(record_property):\n"
        "    record_property('ts MiB', '900 / 1412 / 901')\n"
        "def test_skips():\n"
        "    pytest.skip('needs a CUDA build of torch and a GPU')\n"
        "def test_fails():\n"
        "    assert 1 == 2, 'after unload 1400 MiB'\n"
    )
    xml = tmp_path / "out.xml"
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}"],
        cwd=tmp_path,
        capture_output=True,
        timeout=120,
        check=False,
    )
    found = {p.name: (p.outcome, p.detail) for p in read_junit(xml)}
    assert found == {
        "test_paths::test_measures": ("ran", "ts MiB: 900 / 1412 / 901"),
        "test_paths::test_skips": ("skipped", "needs a CUDA build of torch and a GPU"),
        "test_paths::test_fails": ("failed", "AssertionError: after unload 1400 MiB"),
    }
