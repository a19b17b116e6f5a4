"""Which backend serves a path: asked of the installed plugins, never of the frameworks.

Each installed backend's ``detect`` looks at the path. When none claims it, the known
formats below tell a "backend not installed" (with the pip command) apart from a path
that nobody could serve. Built-in backends detect with :func:`format_detector`, which
runs these same sniffers, so the two always agree.

Every sniffer looks at content, never at the file name: an ONNX graph saved as
``model.bin`` is still ONNX, and a TorchScript archive named ``model.pt2`` is still
TorchScript. Sniffers read a few headers (a zip directory, a protobuf field or two) and
import no framework.
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .backend import BackendSpec
from .errors import (
    AmbiguousFormatError,
    BackendNotInstalledError,
    ModelError,
    UnknownFormatError,
)

__all__ = [
    "KNOWN_FORMATS",
    "KnownFormat",
    "detect_backend",
    "format_detector",
    "is_onnx_model",
    "is_saved_model",
    "is_torch_export",
    "is_torch_pickle",
    "is_torchscript",
    "known_format",
    "package_archive_hint",
]

logger = logging.getLogger("scorepack.detect")


# --- TensorFlow ----------------------------------------------------------------------


def is_saved_model(path: Path) -> bool:
    """A TensorFlow SavedModel directory (``saved_model.pb`` or ``.pbtxt`` inside)."""
    return path.is_dir() and (
        (path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file()
    )


# --- ONNX ----------------------------------------------------------------------------

# ModelProto's top-level fields and their protobuf wire types (onnx/onnx.proto3):
# ir_version, producer_name, producer_version, domain, model_version, doc_string, graph,
# opset_import, metadata_props, training_info, functions, configuration
_ONNX_FIELDS = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2, 26: 2}
_VARINT, _LEN = 0, 2


def _varint(f: BinaryIO) -> int | None:
    value = shift = 0
    for _ in range(10):
        byte = f.read(1)
        if not byte:
            return None
        value |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return value
        shift += 7
    return None


def is_onnx_model(path: Path) -> bool:
    """An ONNX model file: a protobuf ``ModelProto`` with an IR version and a graph.

    Walks the message's top-level fields (seeking over their bodies, so a large model
    costs a handful of reads) and accepts only ModelProto's own fields with their own
    wire types, until both ``ir_version`` and ``graph`` have been seen.
    """
    if not path.is_file():
        return False
    size = path.stat().st_size
    seen: set[int] = set()
    with path.open("rb") as f:
        for _ in range(64):
            tag = _varint(f)
            if tag is None:
                return False
            number, wire = tag >> 3, tag & 7
            if _ONNX_FIELDS.get(number) != wire:
                return False
            if wire == _VARINT:
                if _varint(f) is None:
                    return False
            else:
                length = _varint(f)
                if length is None or f.tell() + length > size:
                    return False
                f.seek(length, 1)
            seen.add(number)
            if {1, 7} <= seen:
                return True
    return False


# --- PyTorch -------------------------------------------------------------------------

# torch.save's legacy (non-zip) format: pickle protocol 2, then a long holding this number
_TORCH_LEGACY_MAGIC = (0x1950A86A20F9469CFC6C).to_bytes(10, "little")


def _zip_entries(path: Path) -> list[str] | None:
    """The member names of a zip archive (reads only its directory), or None."""
    if not path.is_file() or not zipfile.is_zipfile(path):
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return None


def _members(names: list[str]) -> set[str]:
    # PyTorch archives put everything under one top-level folder named after the file
    # at save time; drop it so the checks below do not depend on it
    return {name.split("/", 1)[1] for name in names if "/" in name}


def _is_torchscript(members: set[str]) -> bool:
    return "constants.pkl" in members and any(m.startswith("code/") for m in members)


def _is_torch_export(path: Path, names: list[str]) -> bool:
    members = _members(names)
    if "archive_format" not in members or not any(
        m.startswith("models/") and m.endswith(".json") for m in members
    ):
        return False
    entry = next(n for n in names if n.endswith("/archive_format"))
    with zipfile.ZipFile(path) as archive:
        return archive.read(entry).strip() == b"pt2"


def is_torchscript(path: Path) -> bool:
    """A TorchScript archive written by ``torch.jit.save`` (compiled code inside)."""
    names = _zip_entries(path)
    return names is not None and _is_torchscript(_members(names))


def is_torch_export(path: Path) -> bool:
    """A ``torch.export.save`` program (PT2 archive with a serialized graph inside)."""
    names = _zip_entries(path)
    return names is not None and _is_torch_export(path, names)


def is_torch_pickle(path: Path) -> bool:
    """A ``torch.save`` pickle (a state_dict or a whole nn.Module): no graph to serve.

    The PyTorch backend claims these only to refuse them with the export commands.
    """
    names = _zip_entries(path)
    if names is not None:
        members = _members(names)
        return (
            "data.pkl" in members
            and not _is_torchscript(members)
            and not _is_torch_export(path, names)
        )
    if not path.is_file():
        return False
    with path.open("rb") as f:
        head = f.read(16)
    return head[:2] == b"\x80\x02" and _TORCH_LEGACY_MAGIC in head


# --- the table -----------------------------------------------------------------------


@dataclass(frozen=True)
class KnownFormat:
    """A model format scorepack knows the backend package for.

    ``package`` is what follows ``pip install`` in the "backend not installed" error.
    """

    name: str
    backend: str
    package: str
    sniff: Callable[[Path], bool]


_TORCH_PACKAGE = "'scorepack-pytorch[cpu]' --extra-index-url https://download.pytorch.org/whl/cpu"

KNOWN_FORMATS: tuple[KnownFormat, ...] = (
    KnownFormat("TensorFlow SavedModel", "tensorflow", "scorepack-tensorflow", is_saved_model),
    KnownFormat("ONNX model", "onnx", "'scorepack-onnx[cpu]'", is_onnx_model),
    KnownFormat("TorchScript archive (torch.jit.save)", "pytorch", _TORCH_PACKAGE, is_torchscript),
    KnownFormat(
        "torch.export program (torch.export.save, .pt2)", "pytorch", _TORCH_PACKAGE, is_torch_export
    ),
    KnownFormat(
        "PyTorch checkpoint (torch.save; export it to serve it)",
        "pytorch",
        _TORCH_PACKAGE,
        is_torch_pickle,
    ),
)


def known_format(path: str | Path) -> KnownFormat | None:
    """The first known format ``path`` is in, whether or not its backend is installed."""
    p = Path(path)
    for fmt in KNOWN_FORMATS:
        if _safe(fmt.sniff, p, fmt.name):
            return fmt
    return None


def format_detector(backend: str) -> Callable[[Path], bool]:
    """A ``BackendSpec.detect`` that claims exactly the known formats of ``backend``.

    Built-in plugins use it, so what a backend claims and what the "not installed"
    error names can never drift apart.
    """
    sniffers = tuple(fmt.sniff for fmt in KNOWN_FORMATS if fmt.backend == backend)
    if not sniffers:
        raise ValueError(f"no known formats for backend {backend!r}")

    def detect(path: Path) -> bool:
        return any(sniff(Path(path)) for sniff in sniffers)

    detect.__name__ = f"detect_{backend}"
    detect.__doc__ = "Claims: " + ", ".join(
        fmt.name for fmt in KNOWN_FORMATS if fmt.backend == backend
    )
    return detect


def detect_backend(path: str | Path, backends: Mapping[str, BackendSpec]) -> BackendSpec:
    """The one installed backend that recognises ``path``.

    Raises :class:`~scorepack.errors.AmbiguousFormatError` when several claim it,
    :class:`~scorepack.errors.BackendNotInstalledError` when it is a known format whose
    backend is missing, and :class:`~scorepack.errors.UnknownFormatError` (listing the
    formats each installed backend accepts) otherwise.
    """
    p = Path(path)
    if not p.exists():
        raise ModelError(f"{str(path)!r} does not exist.")
    matches = [spec for spec in backends.values() if _claims(spec, p)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise AmbiguousFormatError(str(path), [m.name for m in matches])
    for fmt in KNOWN_FORMATS:
        if fmt.backend not in backends and _safe(fmt.sniff, p, fmt.name):
            raise BackendNotInstalledError(str(path), fmt.name, fmt.package)
    hint = package_archive_hint(p)
    if hint:
        raise ModelError(hint)
    raise UnknownFormatError(str(path), {name: spec.formats for name, spec in backends.items()})


def package_archive_hint(path: str | Path) -> str | None:
    """What to do with a package archive (``scorepack build --zip``) given where a model or
    package folder is wanted; None for anything else."""
    from .manifest import MANIFEST_FILE

    try:
        with zipfile.ZipFile(path) as archive:
            if MANIFEST_FILE not in archive.namelist():
                return None
    except (OSError, zipfile.BadZipFile):
        return None
    return (
        f"{str(path)!r} is a scoring package archive (scorepack build --zip): unpack it "
        f"first (unzip {path} -d PKG) and give the folder PKG."
    )


def _claims(spec: BackendSpec, path: Path) -> bool:
    return _safe(spec.detect, path, f"backend {spec.name!r}")


def _safe(check: Callable[[Path], bool], path: Path, who: str) -> bool:
    # a detector that crashes on an odd file must not hide the other backends
    try:
        return bool(check(path))
    except Exception as exc:
        logger.warning("format detection by %s failed on %s: %s", who, path, exc)
        return False
