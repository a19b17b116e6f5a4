"""One settings object for ``serve``: the command line, ``SCOREPACK_*`` variables and a
settings file feed it, in that order of precedence; ``--help`` names every variable."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click
import httpx
import pytest

from cli_process import ServerProcess, cli_env, run_cli
from fixture_backends import write_entry_point
from scorepack.cli import build_cli
from scorepack.config import ScoringConfig
from scorepack.parsing import SERVE_FIELDS, env_name
from scorepack.settings import RuntimeSettings, ServeSettings, SettingsError

TESTS = Path(__file__).resolve().parent

#: serve's settings when its help was put in sections; options added since then show
#: under "Other options" until they are given a section
SECTIONED = frozenset(
    {
        "backend", "device", "host", "port", "settings_file", "max_batch_size",
        "max_delay_ms", "max_queue_size", "timeout_ms", "max_body_bytes",
        "max_image_pixels", "top_k", "preset", "image_input", "image_size", "layout",
        "resize", "crop_ratio", "color", "scale", "mean", "std", "exact_decode", "labels",
        "classifier_output", "backend_options", "auth_keys", "graceful_timeout",
        "model_dir", "runtime", "isolated", "threads", "no_env_check",
    }
)  # fmt: skip


@pytest.fixture(autouse=True)
def _no_scorepack_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SCOREPACK_"):
            monkeypatch.delenv(name)


def test_the_settings_fields_are_the_serve_options() -> None:
    assert set(ServeSettings.model_fields) == SERVE_FIELDS
    serve = build_cli().commands["serve"]
    names = {p.name for p in serve.params if isinstance(p, click.Option)}
    assert SERVE_FIELDS <= names


def test_every_option_has_help_and_serve_shows_every_variable() -> None:
    cli = build_cli()
    for command in (cli, *cli.commands.values()):
        for param in command.params:
            if isinstance(param, click.Option) and param.name != "help":
                assert param.help, f"{command.name} {param.opts[0]} has no help text"
    serve = cli.commands["serve"]
    shown = run_cli("serve", "--help").stdout
    for param in serve.params:
        if isinstance(param, click.Option) and param.name not in ("help", "settings_file"):
            assert param.envvar, param.opts
            if param.name in SERVE_FIELDS:
                assert param.envvar == env_name(param.name), param.opts
            assert param.show_envvar
    # click wraps the help text: compare it without the line breaks
    flat = " ".join(shown.split())
    for variable in ("SCOREPACK_MAX_BATCH_SIZE", "SCOREPACK_BACKEND_OPTIONS", "SCOREPACK_SETTINGS"):
        assert variable in flat


def test_command_line_over_environment_over_file_over_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = tmp_path / "settings.yaml"
    file.write_text("top_k: 2\nmax_batch_size: 4\nimage-size: 256x192\nmean: [0.5, 0.5, 0.5]\n")
    assert ServeSettings.load(file=file).top_k == 2
    monkeypatch.setenv("SCOREPACK_TOP_K", "3")
    monkeypatch.setenv("SCOREPACK_BACKEND_OPTIONS", "signature=serving_default fast=on")
    monkeypatch.setenv("SCOREPACK_AUTH_KEYS", "one, two")
    settings = ServeSettings.load(file=file)
    assert settings.top_k == 3
    assert settings.max_batch_size == 4
    assert settings.image_size == (256, 192)
    assert settings.mean == (0.5, 0.5, 0.5)
    assert settings.backend_options == {"signature": "serving_default", "fast": "on"}
    assert settings.auth_keys == ("one", "two")
    assert ServeSettings.load({"top_k": 4}, file=file).top_k == 4
    # what was not set anywhere stays None: the config dataclasses hold the defaults
    assert settings.max_delay_ms is None
    config = settings.scoring_config()
    assert config.postprocess.top_k == 3
    assert config.batching.max_batch_size == 4
    assert config.batching.max_delay_ms == ScoringConfig().batching.max_delay_ms
    assert config.preprocess.size == (256, 192)
    assert settings.environ() == {"SCOREPACK_MAX_BATCH_SIZE": "4", "SCOREPACK_TOP_K": "3"}


def test_a_json_settings_file_works_too(tmp_path: Path) -> None:
    file = tmp_path / "settings.json"
    file.write_text(json.dumps({"port": 0, "auth_keys": ["a", "b"], "device": "cpu"}))
    settings = ServeSettings.load(file=file)
    assert (settings.port, settings.auth_keys, settings.device) == (0, ("a", "b"), "cpu")


def test_bad_settings_name_every_way_to_give_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCOREPACK_MAX_QUEUE_SIZE", "0")
    with pytest.raises(SettingsError) as caught:
        ServeSettings.load({"port": "http"}, flags={"port": "--port"})
    message = str(caught.value)
    assert "--port / SCOREPACK_PORT: Input should be a valid integer" in message
    assert "not 'http'" in message
    assert "SCOREPACK_MAX_QUEUE_SIZE: Input should be greater than or equal to 1" in message

    file = tmp_path / "s.yaml"
    file.write_text("max_batch_sise: 8\n")
    with pytest.raises(SettingsError, match=r"unknown setting.*max_batch_sise; valid ones: "):
        ServeSettings.load(file=file)
    file.write_text("- a list\n")
    with pytest.raises(SettingsError, match="must hold a mapping"):
        ServeSettings.load(file=file)


def test_the_azureml_runtime_reads_only_the_runtime_settings() -> None:
    environ = {"SCOREPACK_TIMEOUT_MS": "1500", "SCOREPACK_DEVICE": "cuda", "SCOREPACK_X": "1"}
    settings = RuntimeSettings.load(environ=environ)
    assert settings.given() == {"timeout_ms": 1500.0}


def test_the_cli_reports_bad_settings_as_usage_errors(tmp_path: Path) -> None:
    model = tmp_path / "m.echo"
    model.write_text("x")
    env = cli_env(SCOREPACK_MAX_DELAY_MS="soon")
    done = run_cli("serve", str(model), env=env)
    assert done.returncode == 2
    assert "SCOREPACK_MAX_DELAY_MS: Input should be a valid number" in done.stderr
    settings = tmp_path / "s.yaml"
    settings.write_text("layout: sideways\n")
    done = run_cli("serve", str(model), "--settings", str(settings))
    assert done.returncode == 2
    assert f"--layout / SCOREPACK_LAYOUT / layout in {settings}" in " ".join(done.stderr.split())


def test_a_server_takes_its_settings_from_all_three_sources(tmp_path: Path) -> None:
    site = tmp_path / "site"
    write_entry_point(site)
    model = tmp_path / "model.echo"
    model.write_text("a model file for the echo fixture backend\n")
    marker = tmp_path / "rows.txt"
    settings = tmp_path / "settings.yaml"
    # the file's limit is overridden by the variable; the file's key stays in force
    settings.write_text("max_body_bytes: 20\nauth_keys: [file-key]\n")
    env = cli_env(
        [site, TESTS],
        SCOREPACK_MAX_BODY_BYTES="200",
        SCOREPACK_BACKEND_OPTIONS=f"marker={marker}",
    )
    small = {"inputs": {"x": [[1.0, 2.0]]}}
    large = {"inputs": {"x": [[1.0, 2.0]] * 20}}
    with ServerProcess(
        [str(model), "--settings", str(settings), "--timeout-ms", "20000"], env=env
    ) as server:
        url = server.wait_ready()
        with httpx.Client(base_url=url, timeout=60) as client:
            assert client.post("/score", json=small).status_code == 401
            auth = {"Authorization": "Bearer file-key"}
            assert len(json.dumps(small)) < 200 < len(json.dumps(large))
            assert len(json.dumps(small)) > 20  # the file's limit would have refused it
            assert client.post("/score", json=small, headers=auth).status_code == 200
            assert client.post("/score", json=large, headers=auth).status_code == 413
    # the backend option from the variable reached the backend
    assert "1" in marker.read_text().split()


def test_a_package_reads_its_request_limits_through_the_settings_object() -> None:
    from scorepack.azureml.settings import ReadLimits
    from scorepack.errors import PackageError

    limits = ReadLimits.from_env(
        {"SCOREPACK_READ_TIMEOUT_S": "2.5", "SCOREPACK_UPLOAD_BUFFER_BYTES": "1024"}
    )
    assert (limits.read_timeout_s, limits.buffer_bytes) == (2.5, 1024)
    assert ReadLimits.from_env({}) == ReadLimits()
    with pytest.raises(PackageError, match=r"SCOREPACK_UPLOAD_BUFFER_BYTES: .* not '0'"):
        ReadLimits.from_env({"SCOREPACK_UPLOAD_BUFFER_BYTES": "0"})


def test_the_readme_settings_file_example_is_valid(tmp_path: Path) -> None:
    readme = (TESTS.parent / "README.md").read_text()
    block = readme.split("keyed by the same names in lower\ncase:\n\n```yaml\n", 1)[1]
    file = tmp_path / "settings.yaml"
    file.write_text(block.split("```", 1)[0])
    settings = ServeSettings.load(file=file)
    assert settings.max_batch_size == 16
    assert settings.auth_keys == ("primary-key", "secondary-key")
    assert settings.backend_options == {"intra_op_threads": 2}


def test_serve_help_groups_the_options_by_the_mode_they_apply_to() -> None:
    from scorepack.cli.sections import SERVE_SECTIONS

    # every option serve had when the sections were made has its section
    placed = {name for _, names in SERVE_SECTIONS for name in names}
    assert SECTIONED <= placed
    shown = run_cli("serve", "--help").stdout
    sections: dict[str, str] = {}
    for block in shown.split("\n\n"):
        title, _, body = block.partition(":\n")
        sections[title.strip()] = body
    under_azmlinfsrv = sections[
        "A package under azmlinfsrv, as Azure ML runs it (--runtime azureml)"
    ]
    assert "--threads" in under_azmlinfsrv and "--isolated" in under_azmlinfsrv
    assert "--preset" in sections["A model only (a package fixed these when it was built)"]
    batching = sections["Batching and limits (a model; a package takes them at serve time too)"]
    assert "--max-batch-size" in batching and "--preset" not in batching
    assert "scorepack serve PKG --runtime azureml" in shown


def test_shell_completion_works_as_the_readme_says() -> None:
    # README: eval "$(_SCOREPACK_COMPLETE=bash_source scorepack)"
    script = run_cli(env=cli_env(_SCOREPACK_COMPLETE="bash_source"))
    assert script.returncode == 0, script.stderr
    assert "_scorepack_completion()" in script.stdout
    # what that script asks for when the user presses tab after "scorepack ser"
    words = run_cli(
        env=cli_env(
            _SCOREPACK_COMPLETE="bash_complete", COMP_WORDS="scorepack ser", COMP_CWORD="1"
        )
    )
    assert "plain,serve" in words.stdout.split()
