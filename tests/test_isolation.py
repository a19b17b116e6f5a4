"""The core never imports an ML framework: not on ``import scorepack``, not for
``scorepack --help``, and not when plugin modules are imported to discover backends.

Each check runs in a fresh interpreter, so nothing this test process imported counts.
"""

from __future__ import annotations

import importlib.metadata
import json

import pytest

from cli_process import REPO, cli_env, imported_frameworks, run_python

EXAMPLE_SRC = REPO / "examples" / "scorepack-numpy"

#: every installed plugin's module, and the example's (importable from its source folder)
PLUGIN_MODULES = sorted(
    {ep.module for ep in importlib.metadata.entry_points(group="scorepack")}
    | {"scorepack_tensorflow", "scorepack_numpy_example"}
)

_PRINT_MODULES = "import json, sys\nprint(json.dumps(sorted(sys.modules)))\n"


def modules_after(code: str, *pythonpath: object) -> list[str]:
    """Every module a fresh interpreter has imported after running ``code``."""
    result = run_python(code + "\n" + _PRINT_MODULES, env=cli_env(list(map(str, pythonpath))))
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout.splitlines()[-1]))


def test_import_scorepack_imports_no_framework() -> None:
    modules = modules_after("import scorepack, scorepack.cli, scorepack.server, scorepack.plugins")
    assert "scorepack.scorer" in modules
    assert imported_frameworks(modules) == []
    assert "scorepack_tensorflow" not in modules  # plugins load on first use only


def test_scorepack_help_imports_no_framework() -> None:
    """The console script's entry point, ``main()``, run for ``--help``."""
    result = run_python(
        "import sys\n"
        "from scorepack.cli import main\n"
        "try:\n    main(['--help'])\n"
        "except SystemExit as exit:\n    assert not exit.code, exit.code\n" + _PRINT_MODULES
    )
    assert result.returncode == 0, result.stderr
    *help_text, last = result.stdout.splitlines()
    assert "Commands:" in help_text and any(line.split()[:1] == ["serve"] for line in help_text)
    modules = json.loads(last)
    assert "scorepack_tensorflow" in modules  # the plugins were discovered and imported…
    assert imported_frameworks(modules) == []  # …and none of them imported its framework


def test_backends_without_devices_imports_no_framework() -> None:
    modules = modules_after(
        "from scorepack.cli import main\n"
        "try:\n    main(['backends', '--no-devices'])\n"
        "except SystemExit as exit:\n    assert not exit.code, exit.code\n"
    )
    assert imported_frameworks(modules) == []


@pytest.mark.parametrize("module", PLUGIN_MODULES)
def test_plugin_modules_import_no_framework(module: str) -> None:
    modules = modules_after(f"import {module}", EXAMPLE_SRC)
    assert module in modules
    assert imported_frameworks(modules) == []


def test_the_check_sees_a_framework_when_one_is_imported() -> None:
    """The control: asking the TensorFlow backend for its devices does import TensorFlow."""
    pytest.importorskip("tensorflow")
    modules = modules_after(
        "import scorepack_tensorflow\n"
        "assert 'cpu' in scorepack_tensorflow.TensorFlowBackend.available_devices()\n"
    )
    assert "tensorflow" in imported_frameworks(modules)
