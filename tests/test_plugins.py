"""The plugin system end to end: installed fake plugin packages found through their entry
points, broken and clashing plugins, lookups, plugin commands, and format detection.

The fake plugins under tests/plugin_packages are pip-installed once per module into
folders of their own (never the shared virtualenv); a test puts the folders it wants on
``sys.path`` (in-process) or ``PYTHONPATH`` (subprocess).
"""

from __future__ import annotations

import json
import logging
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pluggy
import pytest
from click.testing import CliRunner

import scorepack
from cli_process import cli_env, pip_install, run_cli, run_python
from scorepack import Backend, BackendSpec, hookimpl, plugins
from scorepack.cli import build_cli
from scorepack.detect import detect_backend
from scorepack.errors import (
    AmbiguousFormatError,
    BackendNotInstalledError,
    DuplicateBackendError,
    ModelError,
    PluginError,
    UnknownBackendError,
    UnknownFormatError,
)
from scorepack.loading import resolve_backend

PACKAGES = Path(__file__).parent / "plugin_packages"
BROKEN_MESSAGE = (
    "Could not load scorepack plugin 'broken': No module named 'scorepack_no_such_dependency'"
)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each fake plugin package pip-installed into its own folder: name → folder."""
    root = tmp_path_factory.mktemp("plugins")
    return {
        name: pip_install(PACKAGES / f"scorepack-{name}", root / name)
        for name in ("echo", "broken", "clash")
    }


@pytest.fixture
def baseline() -> set[str]:
    """The backends installed in this environment (tensorflow, and whatever else is)."""
    names = set(plugins.get_backends())
    plugins.reset()
    return names


@pytest.fixture
def use(installed: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """``use("echo", "broken")`` makes those installed plugins discoverable in-process."""

    def use(*names: str) -> None:
        for name in names:
            monkeypatch.syspath_prepend(str(installed[name]))
        plugins.reset()

    return use


def _messages(caplog: pytest.LogCaptureFixture, *plugin_names: str) -> list[str]:
    """What scorepack.plugins logged about these plugins (others may be installed too)."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "scorepack.plugins"
        and any(f"plugin {name!r}" in r.getMessage() for name in plugin_names)
    ]


@pytest.fixture
def echo_model(tmp_path: Path) -> Path:
    path = tmp_path / "model.echo"
    path.write_text(json.dumps({"width": 3}))
    return path


@pytest.fixture
def saved_model_dir(tmp_path: Path) -> Path:
    """A directory that looks like a SavedModel to detection (which reads no content)."""
    path = tmp_path / "saved"
    path.mkdir()
    (path / "saved_model.pb").write_bytes(b"")
    return path


class _NeverLoaded(Backend):
    def load(self) -> None:
        raise NotImplementedError

    def predict(self, inputs: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError


def _spec(name: str, detect: Callable[[Path], bool]) -> BackendSpec:
    return BackendSpec(
        name=name,
        backend=_NeverLoaded,
        formats=(f"{name} format",),
        detect=detect,
        framework=name,
        distributions=(),
        install=f"pip install {name}",
    )


class InlinePlugin:
    """A plugin object registered directly on a plugin manager (no package needed)."""

    def __init__(self, *specs: BackendSpec) -> None:
        self.specs = specs

    @hookimpl
    def register_backends(self, register: Callable[[BackendSpec], None]) -> None:
        for spec in self.specs:
            register(spec)


def _with_inline(**inline: object) -> None:
    """The installed plugins plus ``inline`` ones (name → plugin object), made current."""
    pm = plugins.make_plugin_manager()
    for name, plugin in inline.items():
        pm.register(plugin, name=name)
    plugins.set_plugin_manager(pm)


# --- discovery ---------------------------------------------------------------------------


def test_installed_plugin_is_discovered_through_its_entry_point(
    baseline: set[str], use: Callable[..., None], installed: dict[str, Path], echo_model: Path
) -> None:
    assert "tensorflow" in baseline  # the built-in backend is found the same way
    assert "echo" not in baseline
    use("echo")
    backends = plugins.get_backends()
    assert set(backends) == baseline | {"echo"}
    found = plugins.get_plugins()
    assert found.owner("echo") == "echo"
    assert found.distribution("echo") == "scorepack-echo-plugin"
    assert found.distribution("tensorflow") == "scorepack-tensorflow"
    module = plugins.get_plugin_manager().get_plugin("echo")
    assert module is not None
    assert Path(module.__file__).is_relative_to(installed["echo"])
    assert backends["echo"].framework_version() == "0.1.0"

    # the discovered backend serves a model end to end: detection, load, batched predict
    assert resolve_backend(echo_model).name == "echo"
    with scorepack.load(echo_model) as scorer:
        out = scorer.predict({"x": [[1, 2, 3], [4, 5, 6]]})
    np.testing.assert_array_equal(out["y"], np.array([[1, 2, 3], [4, 5, 6]], np.float32))


def test_broken_plugin_is_a_warning_and_the_rest_keep_working(
    baseline: set[str], use: Callable[..., None], caplog: pytest.LogCaptureFixture
) -> None:
    use("broken", "echo")
    with caplog.at_level(logging.WARNING, logger="scorepack.plugins"):
        backends = plugins.get_backends()
    assert set(backends) == baseline | {"echo"}
    assert _messages(caplog, "broken", "echo") == [BROKEN_MESSAGE]


def test_broken_plugin_cli_still_lists_the_others(
    baseline: set[str], installed: dict[str, Path]
) -> None:
    env = cli_env([installed["broken"], installed["echo"]])
    result = run_cli("backends", "--no-devices", env=env)
    assert result.returncode == 0, result.stderr
    assert BROKEN_MESSAGE in result.stderr
    assert "Traceback" not in result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[2:]}
    assert set(rows) == baseline | {"echo"}
    assert "TensorFlow SavedModel" in rows["tensorflow"]
    assert "echo 0.1.0" in rows["echo"]


def test_strict_mode_makes_a_broken_plugin_an_error(
    use: Callable[..., None], installed: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    use("broken")
    monkeypatch.setenv("SCOREPACK_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError) as caught:
        plugins.get_backends()
    assert str(caught.value) == BROKEN_MESSAGE
    assert isinstance(caught.value.__cause__, ModuleNotFoundError)

    env = cli_env([installed["broken"]], SCOREPACK_STRICT_PLUGINS="1")
    result = run_cli("backends", "--no-devices", env=env)
    assert result.returncode == 1
    assert result.stderr == f"Error: {BROKEN_MESSAGE}\n"


def test_two_plugins_claiming_one_backend_name_is_an_error_naming_both(
    use: Callable[..., None], installed: dict[str, Path]
) -> None:
    use("echo", "clash")
    with pytest.raises(DuplicateBackendError) as caught:
        plugins.get_backends()
    err = caught.value
    assert err.name == "echo"
    assert {err.first, err.second} == {"echo", "clash"}
    assert "'echo' is registered by two plugins" in str(err)

    env = cli_env([installed["echo"], installed["clash"]])
    result = run_cli("backends", "--no-devices", env=env)
    assert result.returncode == 1
    assert result.stderr.startswith("Error: Backend name 'echo' is registered by two plugins")
    assert "clash" in result.stderr and "Traceback" not in result.stderr


def test_a_plugin_whose_hook_fails_loses_only_its_own_backends(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Failing:
        @hookimpl
        def register_backends(self, register: Callable[[BackendSpec], None]) -> None:
            register(_spec("half", lambda p: False))
            raise RuntimeError("boom")

    class Wrong:
        @hookimpl
        def register_backends(self, register: Callable[[object], None]) -> None:
            register("not a spec")

    _with_inline(failing=Failing(), wrong=Wrong())
    with caplog.at_level(logging.WARNING, logger="scorepack.plugins"):
        backends = plugins.get_backends()
    assert "half" not in backends  # registered before the hook failed: dropped too
    assert "tensorflow" in backends
    failing, wrong = _messages(caplog, "failing"), _messages(caplog, "wrong")
    assert failing == ["Could not load scorepack plugin 'failing': boom"]
    assert wrong == [
        "Could not load scorepack plugin 'wrong': it registered 'not a spec', not a BackendSpec"
    ]

    monkeypatch.setenv("SCOREPACK_STRICT_PLUGINS", "1")
    _with_inline(failing=Failing())
    with pytest.raises(PluginError, match="'failing': boom"):
        plugins.get_backends()


def test_a_hook_with_wrong_arguments_is_a_broken_plugin(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """pluggy refuses the hook at registration; that plugin alone is dropped."""
    module = types.ModuleType("badargs_plugin")

    @hookimpl
    def register_backends(registr: object) -> None:  # misspelled argument
        raise AssertionError("never called")

    module.register_backends = register_backends  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "badargs_plugin", module)
    real = plugins.importlib.metadata.entry_points

    def entry_points(**kw: Any) -> Any:
        found = list(real(**kw))
        extra = plugins.importlib.metadata.EntryPoint("badargs", "badargs_plugin", "scorepack")
        return [*found, extra]

    monkeypatch.setattr(plugins.importlib.metadata, "entry_points", entry_points)
    with caplog.at_level(logging.WARNING, logger="scorepack.plugins"):
        assert "tensorflow" in plugins.get_backends()
    [message] = _messages(caplog, "badargs")
    assert message.startswith("Could not load scorepack plugin 'badargs':")
    assert "registr" in message


# --- lookups and commands ----------------------------------------------------------------


def test_unknown_backend_name_lists_the_valid_ones(
    baseline: set[str], use: Callable[..., None], saved_model_dir: Path
) -> None:
    use("echo")
    valid = sorted(baseline | {"echo"})
    message = f"No backend named 'xgboost'. Installed backends: {', '.join(valid)}."
    with pytest.raises(UnknownBackendError) as caught:
        plugins.get_backend("xgboost")
    assert caught.value.available == valid
    assert str(caught.value) == message

    result = CliRunner().invoke(
        build_cli(), ["inspect", str(saved_model_dir), "--backend", "xgboost"]
    )
    assert result.exit_code == 1
    assert result.stderr == f"Error: {message}\n"


def test_register_commands_adds_a_cli_command(use: Callable[..., None]) -> None:
    assert "echo-hello" not in build_cli().commands
    use("echo")
    cli = build_cli()
    assert "echo-hello" in cli.commands
    result = CliRunner().invoke(cli, ["echo-hello", "tester"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "hello tester, from the echo plugin\n"
    assert "echo-hello" in CliRunner().invoke(cli, ["--help"]).stdout


def test_misspelled_hookimpl_fails_check_pending(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("typo_plugin")

    @hookimpl
    def register_backend(register: Callable[[BackendSpec], None]) -> None:  # no "s"
        raise AssertionError("never called")

    module.register_backend = register_backend  # type: ignore[attr-defined]
    pm = plugins.make_plugin_manager(entry_points=False)
    pm.register(module, name="typo")
    with pytest.raises(PluginError) as caught:
        plugins.check_pending(pm)
    message = str(caught.value)
    assert "scorepack plugin 'typo' implements unknown hook(s) register_backend" in message
    assert "register_backends" in message  # the real hooks are listed
    assert isinstance(caught.value.__cause__, pluggy.PluginValidationError)

    # the same plugin loaded the normal way fails the whole load, loudly
    monkeypatch.setitem(sys.modules, "typo_plugin", module)
    monkeypatch.setattr(plugins, "DEFAULT_PLUGINS", ("typo_plugin",))
    with pytest.raises(PluginError, match="unknown hook"):
        plugins.get_backends()
    # and the CLI says so in one line instead of a traceback
    with pytest.raises(SystemExit) as exited:
        scorepack.cli.main(["backends"])
    assert exited.value.code == 1


def test_plugin_manager_is_built_lazily() -> None:
    code = (
        "import json, sys\n"
        "import scorepack, scorepack.cli, scorepack.plugins as p\n"
        "before = {'built': bool(p._state), 'plugin': 'scorepack_tensorflow' in sys.modules}\n"
        "p.get_backends()\n"
        "after = {'built': bool(p._state), 'plugin': 'scorepack_tensorflow' in sys.modules}\n"
        "print(json.dumps([before, after]))\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    before, after = json.loads(result.stdout)
    assert before == {"built": False, "plugin": False}
    assert after == {"built": True, "plugin": True}


_seen: dict[str, object] = {}


def test_a_test_may_install_its_own_plugin_manager() -> None:
    _with_inline(memory=InlinePlugin(_spec("memory", lambda p: False)))
    assert "memory" in plugins.get_backends()
    _seen["plugins"] = plugins.get_plugins()


def test_the_next_test_starts_from_a_fresh_plugin_manager() -> None:
    # conftest resets the plugins around every test: the one above must not leak here
    assert "memory" not in plugins.get_backends()
    assert plugins.get_plugins() is not _seen.get("plugins")


def test_reset_forgets_the_loaded_plugins() -> None:
    first = plugins.get_plugins()
    assert plugins.get_plugins() is first
    plugins.reset()
    assert plugins.get_plugins() is not first
    assert "tensorflow" in plugins.get_backends()


# --- format detection ----------------------------------------------------------------------


def test_unknown_path_lists_the_formats_of_each_backend(
    use: Callable[..., None], tmp_path: Path
) -> None:
    use("echo")
    odd = tmp_path / "model.bin"
    odd.write_bytes(b"\x00" * 16)
    with pytest.raises(UnknownFormatError) as caught:
        resolve_backend(odd)
    err = caught.value
    assert {"echo", "tensorflow"} <= set(err.formats)
    assert err.formats["echo"] == ("echo file (*.echo)",)
    text = str(err)
    assert "  echo: echo file (*.echo)" in text
    assert "  tensorflow: TensorFlow SavedModel directory (saved_model.pb)" in text

    with pytest.raises(ModelError, match="does not exist"):
        resolve_backend(tmp_path / "missing")


def test_several_backends_claiming_a_path_is_ambiguous(saved_model_dir: Path) -> None:
    _with_inline(greedy=InlinePlugin(_spec("greedy", lambda p: True)))
    with pytest.raises(AmbiguousFormatError) as caught:
        resolve_backend(saved_model_dir)
    assert caught.value.backends == ["tensorflow", "greedy"]  # in registration order
    assert "--backend NAME" in str(caught.value)
    # naming the backend settles it
    assert resolve_backend(saved_model_dir, backend="tensorflow").name == "tensorflow"


def test_a_crashing_detector_is_ignored_with_a_warning(
    saved_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def crash(path: Path) -> bool:
        raise RuntimeError("cannot read this")

    _with_inline(crashy=InlinePlugin(_spec("crashy", crash)))
    with caplog.at_level(logging.WARNING, logger="scorepack.detect"):
        assert resolve_backend(saved_model_dir).name == "tensorflow"
    [record] = [r for r in caplog.records if r.name == "scorepack.detect"]
    assert "backend 'crashy' failed" in record.getMessage()
    assert "cannot read this" in record.getMessage()


def test_known_format_without_its_plugin_names_the_package(saved_model_dir: Path) -> None:
    pm = plugins.make_plugin_manager(entry_points=False)
    pm.register(InlinePlugin(_spec("other", lambda p: False)), name="other")
    backends = plugins.set_plugin_manager(pm).backends
    with pytest.raises(BackendNotInstalledError) as caught:
        detect_backend(saved_model_dir, backends)
    assert caught.value.package == "scorepack-tensorflow"
    assert "pip install scorepack-tensorflow" in str(caught.value)
