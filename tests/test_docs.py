"""The README's code and option tables are checked, so the docs cannot rot."""

from __future__ import annotations

import re
import types
from pathlib import Path

from click.testing import CliRunner

from scorepack import Backend, BackendSpec
from scorepack.cli import build_cli
from scorepack.plugins import Plugins, make_plugin_manager

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_the_plugin_example_registers_a_working_backend_spec(tmp_path: Path) -> None:
    block = next(b for b in _python_blocks() if "register_backends" in b)
    module = types.ModuleType("readme_plugin")
    exec(compile(block, "README.md", "exec"), module.__dict__)
    pm = make_plugin_manager(entry_points=False, defaults=False)
    pm.register(module, name="readme_plugin")
    spec = Plugins(pm).backend("mine")
    assert isinstance(spec, BackendSpec)
    assert spec.detect(tmp_path / "model.mine") and not spec.detect(tmp_path / "model.onnx")
    assert issubclass(spec.backend, Backend)
    instance = spec.create(tmp_path / "model.mine", device="cpu")
    assert instance.path.name == "model.mine"


def test_every_serve_option_in_the_readme_exists() -> None:
    help_text = CliRunner().invoke(build_cli(), ["serve", "--help"]).output
    table = README.split("`serve` options worth knowing", 1)[1].split("\n\n", 2)[1]
    documented = set(re.findall(r"`(--[a-z-]+)", table))
    assert len(documented) > 10
    missing = sorted(o for o in documented if o not in help_text)
    assert not missing, f"README documents options serve does not have: {missing}"


def test_every_cli_command_in_the_readme_exists() -> None:
    commands = set(build_cli().commands)
    used = set(re.findall(r"^scorepack ([a-z]+)", README, flags=re.M))
    assert used and used <= commands, used - commands
