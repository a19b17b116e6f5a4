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
from scorepack.parsing import (
    AZUREML_SERVE_FIELDS,
    AZUREML_SERVE_SECTIONS,
    CLI_ONLY,
    SERVE_FIELDS,
    SERVE_SECTIONS,
    env_name,
)
from scorepack.settings import (
    AzureMLServeSettings,
    PackageSettings,
    RuntimeSettings,
    ServeSettings,
    SettingsError,
)

TESTS = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def _no_scorepack_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SCOREPACK_"):
            monkeypatch.delenv(name)


@pytest.mark.parametrize(
    ("command", "settings", "fields", "sections"),
    [
        ("serve", ServeSettings, SERVE_FIELDS, SERVE_SECTIONS),
        ("serve-azureml", AzureMLServeSettings, AZUREML_SERVE_FIELDS, AZUREML_SERVE_SECTIONS),
    ],
)
def test_the_settings_fields_are_the_serve_options(
    command: str, settings: type, fields: frozenset[str], sections: tuple
) -> None:
    assert set(settings.model_fields) == fields  # type: ignore[attr-defined]
    params = build_cli().commands[command].params
    visible = {p.name for p in params if isinstance(p, click.Option) and not p.hidden}
    # every visible option is in the one list the help sections come from, and back
    placed = {name for _, names in sections for name in names}
    assert visible - {"help"} == placed
    assert fields == placed - CLI_ONLY


def test_every_variable_scorepack_reads_is_a_settings_field() -> None:
    """grep the core for SCOREPACK_* names: each is a settings field, or one of the few
    read elsewhere on purpose (see the settings module's docstring)."""
    import re

    core = TESTS.parent / "core" / "scorepack"
    fields = {
        env_name(name)
        for cls in (ServeSettings, PackageSettings, AzureMLServeSettings)
        for name in cls.model_fields
    }
    elsewhere = {
        "SCOREPACK_STRICT_PLUGINS",  # read while the CLI is being built from the plugins
        "SCOREPACK_CACHE_DIR",  # a per-user cache folder, beside XDG_CACHE_HOME
        "SCOREPACK_KEY",  # score/bench's key, a client option
        "SCOREPACK_SETTINGS",  # the settings file itself
        "SCOREPACK_AUTH_KEY_FILE",  # read by click: the file's keys join auth_keys
        "SCOREPACK_LOG_LEVEL",  # the CLI group's options; PackageSettings under azmlinfsrv
        "SCOREPACK_LOG_FORMAT",
        "SCOREPACK_RUNTIME",  # serve's deprecated --runtime azureml
        "SCOREPACK_DEPLOYMENT",  # not variables: names of generated files
        "SCOREPACK_DOCKERFILE",
        "SCOREPACK_VAR",  # in a docstring
        "SCOREPACK_DECODE_",
    }
    named = set()
    for path in core.rglob("*.py"):
        named |= set(re.findall(r"SCOREPACK_[A-Z_]+", path.read_text(encoding="utf-8")))
    assert named - fields - elsewhere == set()
    # and the environment is read through the settings object, not os.environ, except
    # by those two
    raw = {
        path.relative_to(core).as_posix()
        for path in core.rglob("*.py")
        for line in path.read_text(encoding="utf-8").splitlines()
        if re.search(
            r"environ\.get\([\"']SCOREPACK_|environ\[[\"']SCOREPACK_\w+[\"']\](?!\s*=)", line
        )
        and path.name != "container.py"  # a HEALTHCHECK line it writes into a Dockerfile
    }
    assert raw == {"plugins.py", "azureml/isolated.py"}


def test_every_option_has_help_and_serve_shows_every_variable() -> None:
    cli = build_cli()
    for command in (cli, *cli.commands.values()):
        for param in command.params:
            if isinstance(param, click.Option) and param.name != "help":
                assert param.help, f"{command.name} {param.opts[0]} has no help text"
    for name, fields in (("serve", SERVE_FIELDS), ("serve-azureml", AZUREML_SERVE_FIELDS)):
        for param in cli.commands[name].params:
            if not isinstance(param, click.Option) or param.hidden:
                continue  # hidden: serve's deprecated spellings of serve-azureml's options
            if param.name not in ("help", "settings_file"):
                assert param.envvar, param.opts
                if param.name in fields:
                    assert param.envvar == env_name(param.name), param.opts
                assert param.show_envvar
    shown = run_cli("serve", "--help").stdout
    # click wraps the help text: compare it without the line breaks
    flat = " ".join(shown.split())
    for variable in ("SCOREPACK_MAX_BATCH_SIZE", "SCOREPACK_BACKEND_OPTIONS", "SCOREPACK_SETTINGS"):
        assert variable in flat


#: variables more than one command reads on purpose, besides the settings (README, Settings)
SHARED_VARIABLES = {"SCOREPACK_SETTINGS", "SCOREPACK_KEY"}


def test_every_command_names_every_options_variable_by_one_rule() -> None:
    """Every visible option of every command has a variable, shown in --help: a setting is
    SCOREPACK_<SETTING> wherever it is (one meaning), serve's and serve-azureml's options
    are SCOREPACK_<OPTION>, any other is SCOREPACK_<COMMAND>_<OPTION>."""
    from scorepack.cli.options import Setting

    cli = build_cli()
    settings_fields = set(ServeSettings.model_fields) | set(AzureMLServeSettings.model_fields)
    readers: dict[str, list[tuple[str, click.Option]]] = {}
    checked = 0
    for command in (cli, *cli.commands.values()):
        for param in command.params:
            if not isinstance(param, click.Option) or param.hidden or not param.expose_value:
                continue
            where = f"{command.name} {param.opts[0]}"
            assert isinstance(param.envvar, str) and param.show_envvar, where
            assert param.name is not None
            if isinstance(param, Setting):
                assert param.name in settings_fields, where
                assert param.envvar == env_name(param.name), where
            elif command is cli or command.name in ("serve", "serve-azureml"):
                assert param.envvar == env_name(param.name) or param.envvar in (
                    "SCOREPACK_SETTINGS",
                    "SCOREPACK_AUTH_KEY_FILE",  # joins auth_keys: not a field of its own
                ), where
            elif param.envvar not in SHARED_VARIABLES:
                scope = (command.name or "").upper().replace("-", "_")
                assert param.envvar == f"SCOREPACK_{scope}_{param.name.upper()}", where
            readers.setdefault(param.envvar, []).append((command.name or "", param))
            checked += 1
    assert checked > 150  # every command was walked
    # a variable read by several commands is one setting (the same option everywhere), or
    # one of the few shared on purpose
    for variable, users in readers.items():
        if len({name for name, _ in users}) == 1 or variable in SHARED_VARIABLES:
            continue
        assert all(isinstance(param, Setting) for _, param in users), (variable, users)
        assert len({param.name for _, param in users}) == 1, variable
    # the ones the audit named: one rule, both shown
    build = readers["SCOREPACK_MAX_BATCH_SIZE"]
    assert {"serve", "serve-azureml", "build"} <= {name for name, _ in build}
    assert {name for name, _ in readers["SCOREPACK_TOP_K"]} == {"serve", "serve-azureml", "build"}
    assert {name for name, _ in readers["SCOREPACK_DEVICE"]} >= {"serve", "inspect"}
    # build --device (cpu|cuda: what the package is built for) is build's own
    assert "SCOREPACK_BUILD_DEVICE" in readers
    for name in ("score", "bench", "inspect", "build", "check", "deploy", "delete"):
        flat = " ".join(run_cli(name, "--help").stdout.split())
        assert "env var: SCOREPACK_" in flat, name


def test_build_reads_the_settings_variables_as_serve_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SCOREPACK_TOP_K and SCOREPACK_MAX_BATCH_SIZE mean for build what they mean for serve:
    the package gets them; a command's own variable (SCOREPACK_BUILD_NAME) is its alone."""
    from click.testing import CliRunner

    from packages import backend_params, tiny_model
    from scorepack.manifest import load_manifest

    backend = next((p.values[0] for p in backend_params() if not p.marks), None)
    if backend is None:
        pytest.skip("no backend installed")
    model = tiny_model(str(backend), tmp_path / "models")
    out = tmp_path / "pkg"
    monkeypatch.setenv("SCOREPACK_TOP_K", "2")
    monkeypatch.setenv("SCOREPACK_MAX_BATCH_SIZE", "4")
    monkeypatch.setenv("SCOREPACK_BUILD_NAME", "from-env")
    monkeypatch.setenv("SCOREPACK_DEPLOY_NAME", "not-for-build")
    result = CliRunner().invoke(
        build_cli(), ["build", str(model), "-o", str(out), "--device", "cpu", "--no-check"]
    )
    assert result.exit_code == 0, result.output + str(result.exception)
    spec = load_manifest(out)
    assert spec.name == "from-env"
    assert spec.config.postprocess.top_k == 2
    assert spec.config.batching.max_batch_size == 4


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


def test_the_embedded_server_takes_decoding_and_http_limits_from_the_settings(
    tmp_path: Path,
) -> None:
    site = tmp_path / "site"
    write_entry_point(site)
    model = tmp_path / "model.echo"
    model.write_text("a model file for the echo fixture backend\n")
    settings = tmp_path / "settings.yaml"
    settings.write_text("decode_threads: 2\ndecode_lookahead: 5\nmax_header_count: 20\n")
    env = cli_env([site, TESTS], SCOREPACK_DECODE_THREADS="3")
    args = [str(model), "--settings", str(settings), "--decode-nice", "0"]
    with ServerProcess(args, env=env) as server:
        url = server.wait_ready()
        with httpx.Client(base_url=url, timeout=60) as client:
            # the variable over the file; the file; the command line
            decode = client.get("/info").json()["decode"]
            assert decode == {"decode_threads": 3, "decode_lookahead": 5, "decode_nice": 0}
            body = {"inputs": {"x": [[1.0, 2.0]]}}
            assert client.post("/score", json=body).status_code == 200
            many = {f"x-extra-{i}": "1" for i in range(25)}
            refused = client.post("/score", json=body, headers=many)
            assert refused.status_code == 431
            assert "SCOREPACK_MAX_HEADER_COUNT" in refused.json()["error"]["message"]


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


def _help_sections(*command: str) -> dict[str, str]:
    shown = run_cli(*command, "--help").stdout
    sections: dict[str, str] = {"": shown}
    for block in shown.split("\n\n"):
        title, _, body = block.partition(":\n")
        sections[title.strip()] = body
    return sections


def test_serve_help_groups_the_options_by_the_mode_they_apply_to() -> None:
    sections = _help_sections("serve")
    assert "--preset" in sections["A model only (a package fixed these when it was built)"]
    batching = sections["Batching and limits (a model; a package takes them at serve time too)"]
    assert "--max-batch-size" in batching and "--preset" not in batching
    assert (
        "--decode-threads"
        in sections["Decoding (every mode; a package takes them at serve time too)"]
    )
    embedded = sections["The embedded server"]
    assert "--drain-seconds" in embedded and "--max-header-count" in embedded
    assert "--" not in sections["Other options"].replace("--help", "")  # only help is
    # the package-under-azmlinfsrv mode is a command of its own, named in serve's help
    assert "scorepack serve-azureml PKG" in " ".join(sections[""].split())
    for gone in ("--runtime", "--threads", "--isolated", "--no-env-check", "--metrics-port"):
        assert gone not in sections[""]


def test_serve_azureml_takes_only_what_applies_under_azmlinfsrv(tmp_path: Path) -> None:
    sections = _help_sections("serve-azureml")
    server = sections["The server"]
    assert "--threads" in server and "--isolated" in server and "--metrics-port" in server
    assert (
        "--upload-buffer-bytes" in sections["How requests are read (the package's gunicorn worker)"]
    )
    assert "--" not in sections["Other options"].replace("--help", "")  # only help is
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "scorepack.yaml").write_text("name: x\n")
    # the embedded server's options are not options here at all
    for option in (
        ["--grpc-port", "8001"],
        ["--auth-key", "k"],
        ["-O", "a=b"],
        ["--preset", "raw"],
    ):
        done = run_cli("serve-azureml", str(package), *option)
        assert done.returncode == 2
        assert f"No such option '{option[0]}'" in done.stderr, done.stderr
        assert "`scorepack serve PKG`'s" in done.stderr
    # a model is not a package: say how to make one
    model = tmp_path / "m.echo"
    model.write_text("x")
    done = run_cli("serve-azureml", str(model))
    assert done.returncode == 2
    assert "scorepack build" in done.stderr
    # serve points the old azmlinfsrv options to the new command
    done = run_cli("serve", str(model), "--threads", "4")
    assert done.returncode == 2
    assert "scorepack serve-azureml PKG --threads" in " ".join(done.stderr.split())


def test_shell_completion_works_as_the_readme_says() -> None:
    # README: eval "$(_SCOREPACK_COMPLETE=bash_source scorepack)"
    script = run_cli(env=cli_env(_SCOREPACK_COMPLETE="bash_source"))
    assert script.returncode == 0, script.stderr
    assert "_scorepack_completion()" in script.stdout
    # what that script asks for when the user presses tab after "scorepack ser"
    words = run_cli(
        env=cli_env(_SCOREPACK_COMPLETE="bash_complete", COMP_WORDS="scorepack ser", COMP_CWORD="1")
    )
    assert "plain,serve" in words.stdout.split()
    # and after "scorepack backends ": the installed backends' names
    names = run_cli(
        env=cli_env(
            _SCOREPACK_COMPLETE="bash_complete", COMP_WORDS="scorepack backends ", COMP_CWORD="2"
        )
    )
    assert {"plain,onnx", "plain,pytorch", "plain,tensorflow"} <= set(names.stdout.split())
