"""The deploy targets' templates: package-data files filled with ``string.Template``."""

from __future__ import annotations

import json
import string
from functools import cache
from importlib import resources
from typing import Any

__all__ = ["render_template"]


@cache
def _template(name: str) -> string.Template:
    text = (
        resources.files("scorepack.targets").joinpath("templates", name).read_text(encoding="utf-8")
    )
    return string.Template(text)


def render_template(name: str, **values: Any) -> str:
    """Fill ``templates/NAME``; a ``*_literal`` value is written as a Python/JSON literal."""
    filled = {
        key: json.dumps(value) if key.endswith("_literal") else str(value)
        for key, value in values.items()
    }
    return _template(name).substitute(filled)
