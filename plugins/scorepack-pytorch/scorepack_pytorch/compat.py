"""Which torchvision goes with which torch (no import of either)."""

from __future__ import annotations


def torchvision_release(torch_version: str) -> str | None:
    """torchvision 0.(N+15).P goes with torch 2.N.P; None for versions outside that rule.

    >>> torchvision_release("2.13.0+cpu")
    '0.28.0'
    """
    parts = torch_version.split("+", 1)[0].split(".")
    if len(parts) < 2 or parts[0] != "2" or not parts[1].isdigit():
        return None
    patch = parts[2] if len(parts) > 2 and parts[2].isdigit() else "0"
    return f"0.{int(parts[1]) + 15}.{patch}"
