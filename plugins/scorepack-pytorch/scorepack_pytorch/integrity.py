"""A model archive checked whole before PyTorch reads it.

TorchScript archives (``torch.jit.save``) and ``torch.export`` programs are zip files whose
members carry a CRC-32. A truncated archive fails in PyTorch's reader (no central
directory), but PyTorch does not check the CRCs: an archive with a damaged weight record
loads and scores wrong without a word. Python's zipfile checks every member.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from scorepack.errors import ModelLoadError

__all__ = ["check_archive"]


def check_archive(path: Path) -> None:
    """Raise :class:`~scorepack.errors.ModelLoadError` unless every member's CRC matches.

    A file that does not begin as a zip archive is left to the format check that follows.
    """
    try:
        with open(path, "rb") as fh:
            if fh.read(4) != b"PK\x03\x04":
                return
    except OSError:
        return
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise ModelLoadError(
            f"{path} is not a complete archive ({exc}): the file is truncated or damaged. "
            "Copy it again, or export the model again."
        ) from exc
    if damaged is not None:
        raise ModelLoadError(
            f"{path} is damaged: its member {damaged!r} does not match its CRC-32. Copy the "
            "file again, or export the model again."
        )
