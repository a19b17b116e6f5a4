"""Wheels of installed distributions, so a package carries scorepack and its backend plugin.

An editable (or local directory) install is built from its source with ``pip wheel``;
a regular install is re-packed from its installed files and RECORD, the way ``pip`` would
have unpacked it. Either way the package needs no access to this repository or an index.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import logging
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from email.parser import Parser
from importlib.metadata import Distribution, PackageNotFoundError, distribution
from pathlib import Path
from urllib.parse import unquote, urlparse

from ..errors import PackageError

__all__ = ["build_wheel", "repack_wheel", "source_dir"]

logger = logging.getLogger("scorepack.generator")

# files an installer adds to .dist-info; they do not belong in a wheel
_INSTALLER_FILES = {"INSTALLER", "REQUESTED", "direct_url.json", "RECORD"}


def source_dir(dist: Distribution) -> Path | None:
    """The local source directory a distribution was installed from, if any (PEP 610)."""
    text = dist.read_text("direct_url.json")
    if not text:
        return None
    try:
        info = json.loads(text)
    except ValueError:
        return None
    url = urlparse(str(info.get("url", "")))
    if url.scheme != "file" or "dir_info" not in info:
        return None
    path = Path(unquote(url.path))
    return path if (path / "pyproject.toml").is_file() or (path / "setup.py").is_file() else None


def build_wheel(name: str, dest: Path, dist: Distribution | None = None) -> Path:
    """A wheel of the installed distribution ``name`` in ``dest``; returns its path."""
    if dist is None:
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            raise PackageError(
                f"{name} is not installed, so it cannot be put in the package."
            ) from None
    source = source_dir(dist)
    if source is not None:
        return _pip_wheel(name, source, dest)
    return repack_wheel(dist, dest)


def _pip_wheel(name: str, source: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="scorepack-wheel-") as tmp:
        base = [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--quiet",
            "--disable-pip-version-check",
            "--wheel-dir",
            tmp,
        ]
        # without build isolation the installed build backend is used (no index needed);
        # when it is missing, pip may fetch one into an isolated build environment
        for extra in (["--no-build-isolation"], []):
            result = subprocess.run(
                [*base, *extra, str(source)], capture_output=True, text=True, check=False
            )
            if result.returncode == 0:
                break
            logger.debug("pip wheel %s %s failed: %s", " ".join(extra), source, result.stderr)
        else:
            tail = "\n".join(result.stderr.strip().splitlines()[-8:])
            raise PackageError(f"Could not build a wheel of {name} from {source}:\n{tail}")
        wheels = list(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise PackageError(f"pip wheel {source} made {len(wheels)} wheels, expected one.")
        target = dest / wheels[0].name
        shutil.move(str(wheels[0]), target)
        return target


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def repack_wheel(dist: Distribution, dest: Path) -> Path:
    """Rebuild the wheel of a regular (non-editable) install from its installed files."""
    meta = Parser().parsestr(dist.read_text("METADATA") or "")
    name, version = meta["Name"], meta["Version"]
    wheel_info = Parser().parsestr(dist.read_text("WHEEL") or "")
    tags = wheel_info.get_all("Tag") or ["py3-none-any"]
    if not name or not version or not dist.files:
        raise PackageError(f"The installed {name or dist} has no RECORD; reinstall it with pip.")
    info_dir = f"{re.sub(r'[-_.]+', '_', name)}-{version}.dist-info"
    entries: list[tuple[str, bytes]] = []
    for file in dist.files:
        relative = file.as_posix()
        parts = relative.split("/")
        # scripts live outside site-packages (pip makes them again from entry_points.txt)
        if parts[0] == ".." or "__pycache__" in parts or relative.endswith(".pyc"):
            continue
        if parts[0].endswith(".dist-info") and parts[-1] in _INSTALLER_FILES:
            continue
        if parts[0].endswith(".dist-info"):
            relative = "/".join([info_dir, *parts[1:]])
        entries.append((relative, Path(str(file.locate())).read_bytes()))
    entries.sort()
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    for relative, data in entries:
        writer.writerow([relative, _record_hash(data), str(len(data))])
    writer.writerow([f"{info_dir}/RECORD", "", ""])
    filename = f"{re.sub(r'[-_.]+', '_', name)}-{version}-{tags[0]}.whl"
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / filename
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for relative, data in entries:
            archive.writestr(relative, data)
        archive.writestr(f"{info_dir}/RECORD", record.getvalue())
    return target
