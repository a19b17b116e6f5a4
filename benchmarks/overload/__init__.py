"""Overload and hostile-client benchmarks: ``python -m benchmarks.overload --help``.

Not part of the tests: the numbers need a quiet machine. The tests check the same
behaviour without timing (tests/test_hostile_*.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def tests_on_path() -> None:
    """Reuse the tests' hostile clients and tiny packages (tests/hostile.py, packages.py)."""
    tests = str(ROOT / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
