"""The model's OpenMP threads stop spinning soon after a call (scorepack/openmp.py).

The rule as a function over a given environment, then end to end: ``scorepack serve`` of a
real TorchScript model, where libgomp itself (the one PyTorch loads) prints the spin count
it read (``OMP_DISPLAY_ENV=VERBOSE``), and ``/info`` says the same.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from cli_process import ServerProcess, cli_env
from scorepack.openmp import IDLE_SPINCOUNT, bound_idle_spin


def _maps(tmp_path: Path, *libraries: str) -> str:
    path = tmp_path / "maps"
    lines = [f"7f00-7f01 r-xp 00000000 00:00 0 /usr/lib/{name}" for name in libraries]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_an_unset_spin_count_is_bounded(tmp_path: Path) -> None:
    env: dict[str, str] = {}
    said = bound_idle_spin(env, maps=_maps(tmp_path, "libc.so.6"))
    assert env == {"GOMP_SPINCOUNT": str(IDLE_SPINCOUNT)}
    assert said == f"GOMP_SPINCOUNT={IDLE_SPINCOUNT}"
    assert IDLE_SPINCOUNT < 300_000  # libgomp's own default, what it replaces


@pytest.mark.parametrize(
    "user",
    [{"GOMP_SPINCOUNT": "300000"}, {"OMP_WAIT_POLICY": "ACTIVE"}],
    ids=["GOMP_SPINCOUNT", "OMP_WAIT_POLICY"],
)
def test_the_users_own_setting_wins(tmp_path: Path, user: dict[str, str]) -> None:
    env = dict(user)
    said = bound_idle_spin(env, maps=_maps(tmp_path))
    assert env == user  # nothing added, nothing changed
    ((name, value),) = user.items()
    assert said == f"{name}={value} (set by the user)"


def test_nothing_is_set_once_libgomp_is_loaded(tmp_path: Path) -> None:
    env: dict[str, str] = {}
    said = bound_idle_spin(env, maps=_maps(tmp_path, "libc.so.6", "libgomp-a34b3233.so.1"))
    assert env == {}  # libgomp read its variables when it loaded: setting one now misleads
    assert "loaded before the model" in said


def _spin_count_libgomp_read(log: str) -> str:
    # OMP_DISPLAY_ENV=VERBOSE: libgomp prints its settings when it loads
    lines = [line for line in log.splitlines() if "GOMP_SPINCOUNT =" in line]
    assert lines, f"libgomp printed no settings:\n{log}"
    return lines[0].split("=", 1)[1].strip().strip("'")


@pytest.mark.parametrize("user", [None, "300000"], ids=["automatic", "user"])
def test_the_served_models_libgomp_reads_the_bound(tmp_path: Path, user: str | None) -> None:
    pytest.importorskip("torch")
    from parity_models import torch_models

    model = torch_models(tmp_path / "torch")["torchscript"]
    env = cli_env(OMP_DISPLAY_ENV="VERBOSE")
    for name in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY"):
        env.pop(name, None)
    if user:
        env["GOMP_SPINCOUNT"] = user
    with ServerProcess([str(model), "--device", "cpu"], env=env) as server:
        info = httpx.get(server.url + "/info", timeout=30).json()
        log = server.log_text
    want = user or str(IDLE_SPINCOUNT)
    assert _spin_count_libgomp_read(log) == want
    said = info["openmp_idle_spin"]
    assert said == (
        f"GOMP_SPINCOUNT={user} (set by the user)" if user else f"GOMP_SPINCOUNT={want}"
    )
