"""Backend options (``-O KEY=VALUE``) as typed schemas: parsed once in the core, checked
before the model loads, listed by ``scorepack backends NAME``."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from click.testing import CliRunner, Result

from scorepack import Backend, BackendOption, BackendSpec, Signature, TensorSpec, hookimpl, plugins
from scorepack.cli import build_cli
from scorepack.errors import BackendOptionError, ModelLoadError

LOADS: list[dict[str, Any]] = []


class TunableBackend(Backend):
    """``y = x * scale`` for float32 [batch, 2]; records the options load() saw."""

    option_schema = (
        BackendOption("scale", float, 1.0, "multiply by this"),
        BackendOption("threads", int, help="worker threads (default: the backend's)", minimum=1),
        BackendOption("fast", bool, False, "take the fast path"),
        BackendOption("mode", str, "auto", "how to run", choices=("auto", "eager", "graph")),
        BackendOption("label", str, help="free text"),
    )

    def load(self) -> None:
        LOADS.append(dict(self.options))
        self.signature = Signature(
            inputs=(TensorSpec("x", "float32", (None, 2)),),
            outputs=(TensorSpec("y", "float32", (None, 2)),),
        )

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"y": inputs["x"] * self.option("scale")}


class LegacyBackend(TunableBackend):
    """A backend written before options had types: ``options_help`` only."""

    option_schema = ()
    options_help: ClassVar[Mapping[str, str]] = {"delay": "seconds to wait", "name": "a name"}


class _Plugin:
    @hookimpl
    def register_backends(self, register: Callable[[BackendSpec], None]) -> None:
        register(
            BackendSpec(
                name="tunable",
                backend=TunableBackend,
                formats=("*.tune (test)",),
                detect=lambda p: p.suffix == ".tune",
                framework="numpy",
                distributions=("numpy",),
                install="pip install numpy",
            )
        )


@pytest.fixture
def tunable(tmp_path: Path) -> Path:
    pm = plugins.make_plugin_manager()
    pm.register(_Plugin(), name="tunable-plugin")
    plugins.set_plugin_manager(pm)
    LOADS.clear()
    model = tmp_path / "m.tune"
    model.write_bytes(b"")
    return model


def invoke(*args: str) -> Result:
    return CliRunner().invoke(build_cli(), list(args))


# --- the schema ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("true", True),
        ("Yes", True),
        ("on", True),
        ("1", True),
        ("false", False),
        ("no", False),
        ("OFF", False),
        ("0", False),
        (True, True),
        (False, False),
    ],
)
def test_booleans_are_parsed_as_configuration_files_spell_them(text: Any, value: bool) -> None:
    assert BackendOption("fast", bool).parse(text) is value


def test_values_are_parsed_to_their_declared_types() -> None:
    parsed = TunableBackend.parse_options(
        {"scale": "0.5", "threads": "4", "fast": "yes", "mode": "GRAPH", "label": " x "}
    )
    assert parsed == {"scale": 0.5, "threads": 4, "fast": True, "mode": "graph", "label": "x"}
    assert type(parsed["threads"]) is int
    # typed values, as a package manifest records them, pass through unchanged
    assert TunableBackend.parse_options({"threads": 4, "fast": False}) == {
        "threads": 4,
        "fast": False,
    }


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"fast": "maybe"}, "option fast must be true or false"),
        ({"threads": "many"}, "option threads must be a whole number >= 1, not 'many'"),
        ({"threads": "0"}, "option threads must be a whole number >= 1, not '0'"),
        ({"threads": True}, "option threads must be a whole number"),
        ({"scale": "big"}, "option scale must be a number, not 'big'"),
        ({"mode": "turbo"}, "option mode must be one of auto, eager, graph, not 'turbo'"),
    ],
)
def test_a_bad_value_names_the_option_and_what_it_takes(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(BackendOptionError, match=message):
        TunableBackend("m.tune", options=raw)


def test_a_misspelt_option_names_the_valid_ones() -> None:
    with pytest.raises(BackendOptionError) as caught:
        TunableBackend("m.tune", options={"thread": "2"})
    assert caught.value.message == (
        "unknown option(s) for TunableBackend: thread (did you mean threads?); "
        "valid options: fast, label, mode, scale, threads"
    )
    # an option error is a load error to callers that catch those
    assert isinstance(caught.value, ModelLoadError)


def test_option_returns_the_given_value_or_the_declared_default() -> None:
    backend = TunableBackend("m.tune", options={"fast": "on"})
    assert backend.option("fast") is True
    assert backend.option("scale") == 1.0
    assert backend.option("threads") is None  # None: the backend decides
    assert "scale" not in backend.options  # only what was given
    with pytest.raises(KeyError):
        backend.option("nope")


def test_backends_declaring_only_options_help_keep_working() -> None:
    backend = LegacyBackend("m.tune", options={"delay": "0.25", "name": "x"})
    assert backend.options == {"delay": 0.25, "name": "x"}
    assert LegacyBackend.declared_options()["delay"].type_name == "any"
    with pytest.raises(BackendOptionError, match="valid options: delay, name"):
        LegacyBackend("m.tune", options={"dealy": 1})


def test_an_option_type_outside_the_schema_is_refused_when_declared() -> None:
    with pytest.raises(TypeError, match="type must be one of"):
        BackendOption("shape", list)


# --- the command line ---------------------------------------------------------------------


def test_backends_name_lists_every_option(tunable: Path) -> None:
    shown = invoke("backends", "tunable", "--no-devices")
    assert shown.exit_code == 0, shown.output
    assert "options (-O KEY=VALUE):" in shown.stdout
    assert "  threads (int >= 1)\n      worker threads (default: the backend's)" in shown.stdout
    assert "  fast (bool, default false)" in shown.stdout
    assert "  mode (auto | eager | graph, default auto)" in shown.stdout

    record = json.loads(invoke("backends", "tunable", "--no-devices", "--json").stdout)
    assert record["name"] == "tunable"
    assert {o["name"]: o["type"] for o in record["options"]} == {
        "scale": "float",
        "threads": "int",
        "fast": "bool",
        "mode": "str",
        "label": "str",
    }
    missing = invoke("backends", "nope", "--no-devices")
    assert missing.exit_code == 1
    assert "No backend named 'nope'. Installed backends:" in missing.stderr
    assert "tunable" in missing.stderr


def test_options_are_checked_before_the_model_loads(tunable: Path) -> None:
    bad = invoke("inspect", str(tunable), "-O", "fast=perhaps")
    assert bad.exit_code == 2
    assert "option fast must be true or false" in bad.stderr
    misspelt = invoke("inspect", str(tunable), "-O", "scael=2")
    assert misspelt.exit_code == 2
    # the backend as users name it, and the option they most likely meant
    assert (
        "unknown option(s) for the tunable backend: scael (did you mean scale?); valid options:"
        in misspelt.stderr
    )
    wrong = invoke("inspect", str(tunable), "-O", "threads=many")
    assert "option threads must be a whole number >= 1, not 'many' (the tunable backend)" in (
        wrong.stderr
    )
    assert LOADS == []  # neither got as far as load()

    good = invoke("inspect", str(tunable), "-O", "fast=off", "-O", "threads=2", "--json")
    assert good.exit_code == 0, good.output
    assert LOADS == [{"fast": False, "threads": 2}]
