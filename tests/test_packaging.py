"""The distributions as pip would install them: wheels built from this checkout, their
metadata read back (extras, requirements, versions, licence)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from email.message import Message
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from scorepack import __version__

ROOT = Path(__file__).resolve().parent.parent
PLUGINS = {
    "scorepack-tensorflow": ROOT / "plugins" / "scorepack-tensorflow",
    "scorepack-onnx": ROOT / "plugins" / "scorepack-onnx",
    "scorepack-pytorch": ROOT / "plugins" / "scorepack-pytorch",
}
EXAMPLE = ROOT / "examples" / "scorepack-numpy"


def _metadata(wheel: Path) -> Message:
    with zipfile.ZipFile(wheel) as archive:
        [name] = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return Parser().parsestr(archive.read(name).decode())


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Message]:
    """Every distribution's wheel, built as `python -m build` does (without isolation:
    the build backend is already in the dev environment and nothing is downloaded)."""
    out = tmp_path_factory.mktemp("wheels")
    for source in (ROOT, *PLUGINS.values(), EXAMPLE):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "build",
                "--wheel",
                "--no-isolation",
                "--outdir",
                str(out),
                str(source),
            ],
            check=True,
            capture_output=True,
            timeout=300,
        )
    found = {}
    for wheel in out.glob("*.whl"):
        meta = _metadata(wheel)
        found[meta["Name"]] = meta
        with zipfile.ZipFile(wheel) as archive:  # the licence travels in every wheel
            assert any(n.endswith(".dist-info/licenses/LICENSE") for n in archive.namelist())
    return found


def _requires(meta: Message) -> list[Requirement]:
    return [Requirement(r) for r in meta.get_all("Requires-Dist") or []]


def test_the_core_offers_the_frameworks_and_azure_as_extras(wheels: dict[str, Message]) -> None:
    core = wheels["scorepack"]
    assert core["Version"] == __version__
    assert core["License-Expression"] == "MIT"
    extras = set(core.get_all("Provides-Extra") or [])
    assert {"onnx", "onnx-gpu", "tensorflow", "tensorflow-gpu", "pytorch", "azureml"} <= extras
    by_extra: dict[str, list[Requirement]] = {}
    plain = []
    for req in _requires(core):
        marker = str(req.marker or "")
        if "extra ==" in marker:
            extra = marker.split("extra ==")[1].strip().strip("'\"")
            by_extra.setdefault(extra, []).append(req)
        else:
            plain.append(req.name)
    # no framework and no cloud SDK without asking for it
    heavy = {"tensorflow", "tensorflow-cpu", "torch", "onnxruntime", "azureml-core", "azure-ai-ml"}
    assert not heavy & set(plain)
    assert [(r.name, r.extras) for r in by_extra["onnx"]] == [("scorepack-onnx", {"cpu"})]
    assert [(r.name, r.extras) for r in by_extra["onnx-gpu"]] == [("scorepack-onnx", {"gpu"})]
    assert [(r.name, r.extras) for r in by_extra["tensorflow"]] == [
        ("scorepack-tensorflow", {"cpu"})
    ]
    assert [r.name for r in by_extra["pytorch"]] == ["scorepack-pytorch"]
    assert {"azureml-core", "azure-ai-ml", "azureml-inference-server-http"} <= {
        r.name for r in by_extra["azureml"]
    }
    # the extras ask for plugins of this very release series
    for extra in ("onnx", "tensorflow", "pytorch"):
        [req] = by_extra[extra]
        assert __version__ in req.specifier


def test_plugins_are_versioned_with_the_core_and_require_its_compatible_range(
    wheels: dict[str, Message],
) -> None:
    major, minor, _ = __version__.split(".", 2)
    next_minor = f"{major}.{int(minor) + 1}"
    for name in (*PLUGINS, "scorepack-numpy-example"):
        meta = wheels[name]
        assert meta["Version"] == __version__, name
        assert meta["License-Expression"] == "MIT", name
        [core] = [r for r in _requires(meta) if r.name == "scorepack"]
        assert core.specifier == SpecifierSet(f">={__version__},<{next_minor}"), name
        assert __version__ in core.specifier
        assert f"{next_minor}.0" not in core.specifier
