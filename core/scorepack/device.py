"""Device requests: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Device"]

_PATTERN = re.compile(r"^(auto|cpu|cuda|gpu)(?::(\d+))?$")


@dataclass(frozen=True)
class Device:
    """A device asked for by the user, or resolved by a backend.

    ``kind`` is ``"auto"``, ``"cpu"`` or ``"cuda"``; ``index`` is the CUDA ordinal.
    Backends turn ``auto`` into a concrete device in :meth:`Backend.resolve_device`.
    """

    kind: str = "auto"
    index: int = 0

    @classmethod
    def parse(cls, text: str | Device | None) -> Device:
        """Parse ``auto|cpu|cuda[:N]`` (``gpu`` is accepted as ``cuda``)."""
        if isinstance(text, Device):
            return text
        value = (text or "auto").strip().lower()
        match = _PATTERN.match(value)
        if not match:
            raise ValueError(f"invalid device {text!r}: use auto, cpu, cuda or cuda:N")
        kind, index = match.group(1), match.group(2)
        if kind == "gpu":
            kind = "cuda"
        if index is not None and kind != "cuda":
            raise ValueError(f"invalid device {text!r}: only cuda takes an index")
        return cls(kind, int(index or 0))

    @property
    def is_cuda(self) -> bool:
        return self.kind == "cuda"

    def __str__(self) -> str:
        return f"cuda:{self.index}" if self.kind == "cuda" else self.kind
