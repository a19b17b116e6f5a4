"""Does this Python environment have what a package pins? Checked before serving it.

The pins are read from the package's own ``requirements.txt`` (what an image would
install), and the wheels from its manifest (scorepack and the backend plugin, at the
versions that built it). Serving a CUDA package on the CPU, a GPU-only pin is satisfied by
its CPU build at the same version: ``tensorflow[and-cuda]==2.21.0`` by ``tensorflow`` or
``tensorflow-cpu`` 2.21.0, ``onnxruntime-gpu`` by ``onnxruntime``, ``torch==X+cu124`` by
``torch`` X; the ``nvidia-*`` CUDA libraries are not needed. GPU and CPU releases are not
always made in lock-step (onnxruntime-gpu 1.31.1 beside onnxruntime 1.32.0), so on the CPU
a GPU-only pin is satisfied by the CPU build of the version the package was built with.
"""

from __future__ import annotations

import importlib.metadata
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..generator.resolve import normalize
from ..generator.spec import PackageSpec

__all__ = ["Pin", "check_environment", "parse_pins"]

_PIN = re.compile(
    r"^\s*(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[(?P<extras>[^\]]*)\])?\s*"
    r"==\s*(?P<version>[^\s;,]+)\s*(?:;\s*(?P<marker>.+))?$"
)

VersionOf = Callable[[str], "str | None"]


@dataclass(frozen=True)
class Pin:
    """One ``name[extras]==version ; marker`` line."""

    line: str
    name: str
    version: str
    marker: str = ""


def parse_pins(text: str) -> list[Pin]:
    """The exact pins of a requirements file; options, paths and comments are skipped."""
    pins = []
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith(("#", "-", ".", "/")):
            continue
        match = _PIN.match(line)
        if match:
            pins.append(Pin(line, match["name"], match["version"], (match["marker"] or "").strip()))
    return pins


def _applies(marker: str) -> bool:
    if not marker:
        return True
    try:
        from packaging.markers import Marker
    except ImportError:  # without packaging, check the pin rather than skip it
        return True
    try:
        return bool(Marker(marker).evaluate())
    except Exception:
        return True


def _installed(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _public(version: str) -> str:
    return version.split("+", 1)[0]


def _candidates(name: str, cpu_serving: bool) -> list[str]:
    key = normalize(name)
    if not cpu_serving:
        return [key]
    base = key.removesuffix("-gpu").removesuffix("-cpu")
    return list(dict.fromkeys([key, base, f"{base}-cpu", f"{base}-gpu"]))


def _check_pin(pin: Pin, cpu_serving: bool, version_of: VersionOf) -> str | None:
    if cpu_serving and normalize(pin.name).startswith("nvidia-"):
        return None
    found = [(n, v) for n in _candidates(pin.name, cpu_serving) if (v := version_of(n)) is not None]
    if not found:
        return f"{pin.line}: not installed"
    # a pin without a local label (+cu124) accepts any local build, as pip does
    exact = "+" in pin.version and not cpu_serving
    wanted = pin.version if exact else _public(pin.version)
    for _name, version in found:
        if (version if exact else _public(version)) == wanted:
            return None
    name, version = found[0]
    return f"{pin.line}: {name} {version} is installed"


def _gpu_only(pin: Pin) -> bool:
    """A GPU build's pin: ``x-gpu==…`` or ``x[cuda…]==…``."""
    head = pin.line.split("==", 1)[0]
    return normalize(pin.name).endswith("-gpu") or ("[" in head and "cuda" in head)


def check_environment(
    spec: PackageSpec,
    package: Path,
    *,
    cpu_serving: bool = False,
    version_of: VersionOf = _installed,
    python: str | None = None,
) -> list[str]:
    """What this environment lacks to serve the package, one line each (empty: all there).

    ``cpu_serving`` is true when a CUDA package is about to be served on the CPU.
    """
    problems = []
    here = python or f"{sys.version_info.major}.{sys.version_info.minor}"
    if spec.python_version and spec.python_version != here:
        problems.append(f"Python {spec.python_version}: this is Python {here}")
    requirements = Path(package) / "requirements.txt"
    pins = parse_pins(requirements.read_text("utf-8")) if requirements.is_file() else []
    pins += [
        Pin(f"scorepack=={spec.scorepack_version} (wheel)", "scorepack", spec.scorepack_version)
    ]
    if spec.backend_distribution and spec.backend_distribution != "scorepack":
        pins.append(
            Pin(
                f"{spec.backend_distribution}=={spec.backend_version} (wheel)",
                spec.backend_distribution,
                spec.backend_version,
            )
        )
    on_cpu = cpu_serving and spec.device == "cuda"
    for pin in pins:
        if not pin.version or not _applies(pin.marker):
            continue
        problem = _check_pin(pin, on_cpu, version_of)
        if problem and on_cpu and spec.framework_version and _gpu_only(pin):
            # or the CPU build that built and checked the package (onnxruntime 1.32.0 for
            # onnxruntime-gpu 1.31.1: the two are not released in lock-step)
            built = Pin(pin.line, pin.name, spec.framework_version, pin.marker)
            problem = _check_pin(built, on_cpu, version_of)
        if problem:
            problems.append(problem)
    return problems
