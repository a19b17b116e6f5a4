"""A fresh virtual environment made from a package's own requirements.txt and wheels.

Serving a package from it proves the package is self-contained: nothing of the building
environment (or of this repository) is visible. Environments are cached by the hash of
what they are made from, under ``$SCOREPACK_CACHE_DIR`` (default ``~/.cache/scorepack``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from ..errors import PackageError
from ..generator.resolve import normalize
from ..generator.spec import PackageSpec
from ..manifest import verify_wheels
from .envcheck import parse_pins

__all__ = ["cache_dir", "isolated_python"]

logger = logging.getLogger("scorepack.azureml")

_DONE = ".scorepack-complete"


def cache_dir() -> Path:
    """Where scorepack keeps what it can make again (isolated environments)."""
    explicit = os.environ.get("SCOREPACK_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "scorepack"


def _key(spec: PackageSpec, requirements: str) -> str:
    digest = hashlib.sha256(requirements.encode())
    digest.update(sys.version.encode())
    for wheel in spec.wheels:
        digest.update(spec.file_hashes.get(wheel, wheel).encode())
    return digest.hexdigest()[:16]


def _clean_env() -> dict[str, str]:
    # nothing of the calling environment may leak into the new one
    env = {
        k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}
    }
    env["PYTHONNOUSERSITE"] = "1"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _run(argv: list[str], cwd: Path, what: str) -> None:
    logger.info("%s: %s", what, " ".join(argv))
    result = subprocess.run(
        argv, cwd=cwd, env=_clean_env(), capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
        raise PackageError(f"{what} failed (exit {result.returncode}):\n{tail}")


def isolated_python(
    spec: PackageSpec,
    package: Path,
    *,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """The Python of a virtual environment with exactly the package's requirements.

    Made on first use (``python -m venv``, then ``pip install -r requirements.txt`` from
    the package directory; a pinned torch is installed first, on its own, so that pip
    never resolves a bare ``torch`` to the CUDA build), then reused.
    """
    say = progress or logger.info
    requirements = package / "requirements.txt"
    if not requirements.is_file():
        raise PackageError(f"{requirements} is missing; rebuild the package.")
    verify_wheels(spec, package)
    text = requirements.read_text("utf-8")
    slug = "".join(c if c.isalnum() else "-" for c in spec.name.lower())
    venv = cache_dir() / "venvs" / f"{slug}-{_key(spec, text)}"
    python = venv / "bin" / "python"
    if (venv / _DONE).is_file() and python.exists():
        say(f"using the isolated environment {venv}")
        return python
    if venv.exists():
        shutil.rmtree(venv)  # an interrupted earlier attempt
    say(f"making an isolated environment from {requirements} in {venv} (once; this takes a while)")
    venv.parent.mkdir(parents=True, exist_ok=True)
    _run([sys.executable, "-m", "venv", str(venv)], package, "python -m venv")
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    torch = [p.line for p in parse_pins(text) if normalize(p.name) == "torch"]
    if torch:
        # with the file's index options (--extra-index-url …), which a local build needs
        options = [
            token
            for line in text.splitlines()
            if line.strip().startswith("--")
            for token in shlex.split(line, comments=True)
        ]
        _run([*pip, *options, *torch], package, f"pip install {torch[0]}")
    _run([*pip, "-r", str(requirements)], package, "pip install -r requirements.txt")
    (venv / _DONE).write_text(text, encoding="utf-8")
    return python
