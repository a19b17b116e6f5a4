"""The ``scorepack`` command line with the TensorFlow backend: backends, inspect, serve,
score, and the errors a user meets (one clean line, exit code 1, never a traceback).

``serve`` runs as a real subprocess on 127.0.0.1; ``backends``, ``inspect`` and ``score``
run in-process through click's runner unless the test is about what the process prints.
"""

from __future__ import annotations

import io
import json
import re
import signal
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from click.testing import CliRunner, Result
from PIL import Image

import images
from cli_process import ServerProcess, cli_env, run_cli, run_python
from scorepack import Backend, BackendSpec, hookimpl, plugins
from scorepack.cli import build_cli
from serving_helpers import wait_for

tf = pytest.importorskip("tensorflow")

KEYS = ("primary-key", "secondary-key")
_TOP = re.compile(r"^\s+(?P<rank>\d+)\. class (?P<index>\d+)\s+(?P<score>[\d.]+)$")


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    """``scorepack ARGS`` in-process, with the plugins of this test's plugin manager."""
    return CliRunner(env=env).invoke(build_cli(), list(args))


def tf_version() -> str:
    version = plugins.get_backend("tensorflow").framework_version()
    assert version is not None
    return version


def tf_install() -> str:
    return str(plugins.get_backend("tensorflow").install)


# --- backends ------------------------------------------------------------------------------


def test_backends_table_shows_tensorflow_with_version_and_devices() -> None:
    result = invoke("backends")
    assert result.exit_code == 0, result.output
    header, rule, *rows = result.stdout.splitlines()
    assert header.split() == ["BACKEND", "FORMATS", "FRAMEWORK", "DEVICES"]
    assert set(rule) == {"-", " "}
    [row] = [r for r in rows if r.startswith("tensorflow ")]
    assert "TensorFlow SavedModel" in row
    assert f"tensorflow {tf_version()}" in row
    assert row.rstrip().endswith("cpu")  # no GPU here; a GPU machine adds cuda:N


def test_backends_json() -> None:
    result = invoke("backends", "--json")
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    row = rows["tensorflow"]
    assert row["framework"] == "tensorflow"
    assert row["framework_version"] == tf_version()
    assert row["devices"][0] == "cpu"
    assert all(d == "cpu" or re.fullmatch(r"cuda:\d+", d) for d in row["devices"])
    assert row["plugin"] == "tensorflow"
    assert row["problem"] is None
    assert any("SavedModel" in f for f in row["formats"])


class _Missing(Backend):
    def load(self) -> None:
        raise NotImplementedError

    def predict(self, inputs: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError


class _MissingFrameworkPlugin:
    @hookimpl
    def register_backends(self, register: Callable[[BackendSpec], None]) -> None:
        register(
            BackendSpec(
                name="ghost",
                backend=_Missing,
                formats=("ghost files",),
                detect=lambda p: False,
                framework="ghostlib",
                distributions=("ghostlib-no-such-distribution",),
                install="pip install 'scorepack-ghost[cpu]'",
            )
        )


def test_backends_says_how_to_install_a_missing_framework(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pm = plugins.make_plugin_manager()
    pm.register(_MissingFrameworkPlugin(), name="ghost")
    plugins.set_plugin_manager(pm)
    # tensorflow's metadata is there but the module cannot be imported
    monkeypatch.setitem(__import__("sys").modules, "tensorflow", None)

    result = invoke("backends")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    [ghost] = [r for r in lines if r.startswith("ghost ")]
    assert "not installed: pip install 'scorepack-ghost[cpu]'" in ghost
    [tf_row] = [r for r in lines if r.startswith("tensorflow ")]
    assert f"needs tensorflow: {tf_install()}" in tf_row  # devices could not be probed

    rows = {row["name"]: row for row in json.loads(invoke("backends", "--json").stdout)}
    assert rows["ghost"]["framework_version"] is None
    assert rows["ghost"]["problem"] == "not installed: pip install 'scorepack-ghost[cpu]'"


# --- inspect -------------------------------------------------------------------------------


def test_inspect_shows_backend_signature_and_preprocessing(small_cnn_path: Path) -> None:
    result = invoke("inspect", str(small_cnn_path))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert f"backend:    tensorflow (tensorflow {tf_version()})" in lines
    assert "signature:  serving_default" in lines
    rows = [line.split(None, 2) for line in lines]
    assert ["image", "float32", "[batch, 32, 32, 3]"] in rows
    assert ["probs", "float32", "[batch, 10]"] in rows
    assert "classifier output: probs (responses carry top-k)" in lines
    [plan] = [line for line in lines if line.startswith("images go to")]
    assert plan.startswith(
        "images go to 'image': 32x32, 3 channel(s), NHWC, float32, resize=stretch, color=RGB, "
        "scale=1,"
    )


def test_inspect_json_and_preprocessing_options(small_cnn_path: Path) -> None:
    result = invoke(
        "inspect", str(small_cnn_path), "--json", "--preset", "imagenet", "--resize", "crop"
    )
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["backend"] == "tensorflow"
    assert info["signature"]["inputs"] == [
        {"name": "image", "dtype": "float32", "shape": [None, 32, 32, 3], "batched": True}
    ]
    assert info["signature"]["outputs"] == [
        {"name": "probs", "dtype": "float32", "shape": [None, 10], "batched": True}
    ]
    assert info["classifier_output"] == "probs"
    plan = info["image_preprocessing"]
    assert (plan["input"], plan["size"], plan["layout"], plan["resize"]) == (
        "image",
        [32, 32],
        "NHWC",
        "crop",
    )
    assert plan["scale"] == pytest.approx(1 / 255)
    assert plan["mean"] == pytest.approx([0.485, 0.456, 0.406])


def test_inspect_takes_a_settings_file_under_its_options(
    small_cnn_path: Path, tmp_path: Path
) -> None:
    # one file for serve and inspect/build alike: keys inspect does not use are fine
    settings = tmp_path / "settings.yaml"
    settings.write_text("preset: imagenet\nresize: crop\nport: 0\nauth_keys: [k]\n")
    result = invoke(
        "inspect", str(small_cnn_path), "--json", "--settings", str(settings), "--resize", "stretch"
    )
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)["image_preprocessing"]
    assert plan["resize"] == "stretch"  # the command line over the file
    assert plan["mean"] == pytest.approx([0.485, 0.456, 0.406])  # the file's preset
    settings.write_text("preset: sideways\n")
    result = invoke("inspect", str(small_cnn_path), "--settings", str(settings))
    assert result.exit_code == 2
    assert f"--preset / SCOREPACK_PRESET / preset in {settings}" in " ".join(result.output.split())


def test_inspect_lists_every_input_of_a_multi_input_model(multi_input_path: Path) -> None:
    info = json.loads(invoke("inspect", str(multi_input_path), "--json").stdout)
    inputs = {s["name"]: s["shape"] for s in info["signature"]["inputs"]}
    assert inputs == {"image": [None, 16, 16, 3], "extra": [None, 4]}


def test_bad_options_are_usage_errors(small_cnn_path: Path) -> None:
    result = invoke("inspect", str(small_cnn_path), "--device", "tpu")
    assert result.exit_code == 2
    assert "invalid device 'tpu'" in result.stderr
    result = invoke("inspect", str(small_cnn_path), "-O", "nope=1")
    assert result.exit_code == 2
    # named as users name the backend (scorepack backends tensorflow), not its class
    assert "unknown option(s) for the tensorflow backend: nope; valid options:" in result.stderr
    assert "signature" in result.stderr


# --- errors, as the process prints them ---------------------------------------------------

# the CLI's own entry point in a process where `import tensorflow` fails, as without it
_WITHOUT_TF = (
    "import sys\n"
    "sys.modules['tensorflow'] = None\n"
    "from scorepack.cli import main\n"
    "main(sys.argv[1:])\n"
)


def test_unknown_format_is_a_clean_error(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a model")
    result = run_cli("inspect", str(notes))
    assert result.returncode == 1
    assert result.stdout == ""
    first, *listing = result.stderr.splitlines()
    assert first == f"Error: No installed backend recognises {str(notes)!r}. Formats accepted here:"
    assert listing and all(line.startswith("  ") for line in listing)
    assert any(line.startswith("  tensorflow: ") for line in listing)


def test_missing_framework_is_a_one_line_error(small_cnn_path: Path) -> None:
    expected = f"Error: The tensorflow backend needs tensorflow: {tf_install()}\n"
    result = run_python(_WITHOUT_TF, "inspect", str(small_cnn_path))
    assert result.returncode == 1
    assert result.stderr == expected


def test_serve_exits_with_the_error_when_the_model_cannot_load(small_cnn_path: Path) -> None:
    result = run_python(_WITHOUT_TF, "serve", str(small_cnn_path), "--port", "0", timeout=60)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"Error: The tensorflow backend needs tensorflow: {tf_install()}"
    )


def test_a_key_on_the_command_line_is_warned_about(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"  # not a model: serve stops right after its options
    notes.write_text("not a model")
    result = run_cli("serve", str(notes), "--auth-key", "secret-key")
    assert "--auth-key puts the key in the process list" in result.stderr
    assert "secret-key" not in result.stderr
    # from the environment: no warning
    result = run_cli("serve", str(notes), env=cli_env(SCOREPACK_AUTH_KEYS="k"))
    assert "process list" not in result.stderr
    # a key file others can read is warned about, an empty one refused
    keys = tmp_path / "keys"
    keys.write_text("k1\n")
    keys.chmod(0o644)
    result = run_cli("serve", str(notes), "--auth-key-file", str(keys))
    assert "can be read by other users" in result.stderr
    keys.write_text("# nothing\n")
    result = run_cli("serve", str(notes), "--auth-key-file", str(keys))
    assert result.returncode == 2 and "holds no key" in result.stderr


# --- serve and score -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(
    small_cnn_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """``scorepack serve`` on the small CNN, keys required (two: primary and secondary),
    read from a key file so that they never appear in the process list."""
    key_file = tmp_path_factory.mktemp("keys") / "keys"
    key_file.write_text(f"# primary, then secondary\n{KEYS[0]}\n\n{KEYS[1]}\n")
    key_file.chmod(0o600)
    proc = ServerProcess(
        [str(small_cnn_path), "--auth-key-file", str(key_file), "--exact-decode"],
        env=cli_env(),
    )
    with proc:
        yield proc
    # a graceful stop: uvicorn re-raises the SIGTERM it handled once it has finished
    assert proc.proc.returncode in (0, -signal.SIGTERM), proc.log_text


@pytest.fixture(scope="module")
def reference(small_cnn_path: Path) -> Callable[[bytes], np.ndarray]:
    """The small CNN's probabilities for an image, computed here with TensorFlow."""
    fn = tf.saved_model.load(str(small_cnn_path)).signatures["serving_default"]

    def probs(body: bytes) -> np.ndarray:
        img = Image.open(io.BytesIO(body)).convert("RGB")
        x = np.asarray(img.resize((32, 32), Image.Resampling.BILINEAR), dtype=np.float32)
        return np.asarray(fn(image=tf.constant(x[None]))["probs"].numpy()[0])

    return probs


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("pictures")
    files = {
        "jpeg": (folder / "cat.jpg", images.jpeg(64, 48, seed=3)),
        "png": (folder / "dog.png", images.png(40, 56, seed=4)),
        "text": (folder / "notes.txt", b"hello, not an image"),
    }
    for path, body in files.values():
        path.write_bytes(body)
    return {name: path for name, (path, _) in files.items()}


def _top(probs: np.ndarray, k: int) -> list[int]:
    return [int(i) for i in np.argsort(-probs, kind="stable")[:k]]


def test_score_prints_readable_results(
    server: ServerProcess, pictures: dict[str, Path], reference: Callable[[bytes], np.ndarray]
) -> None:
    jpeg = pictures["jpeg"]
    result = invoke("score", server.url, str(jpeg), "--key", KEYS[0], "--top-k", "3")
    assert result.exit_code == 0, result.output
    head, *entries = result.stdout.splitlines()
    assert re.fullmatch(rf"{re.escape(str(jpeg))}  \(\d+\.\d ms, batch 1\)", head)
    matches = [_TOP.match(line) for line in entries]
    assert all(matches) and len(matches) == 3
    expected = reference(jpeg.read_bytes())
    assert [int(m["rank"]) for m in matches if m] == [1, 2, 3]
    assert [int(m["index"]) for m in matches if m] == _top(expected, 3)
    for m in matches:
        assert m is not None
        assert float(m["score"]) == pytest.approx(expected[int(m["index"])], abs=2e-6)


def test_score_json_for_several_files(
    server: ServerProcess, pictures: dict[str, Path], reference: Callable[[bytes], np.ndarray]
) -> None:
    files = [pictures["jpeg"], pictures["png"]]
    result = invoke("score", server.url + "/score", *map(str, files), "--key", KEYS[1], "--json")
    assert result.exit_code == 0, result.output
    answers = json.loads(result.stdout)
    assert [a["file"] for a in answers] == [str(f) for f in files]
    for path, answer in zip(files, answers, strict=True):
        expected = reference(path.read_bytes())
        [prediction] = answer["predictions"]
        top = prediction["top_k"]
        assert [e["index"] for e in top] == _top(expected, 5)
        assert [e["score"] for e in top] == pytest.approx(np.sort(expected)[::-1][:5], abs=1e-5)


def test_score_key_from_the_environment(server: ServerProcess, pictures: dict[str, Path]) -> None:
    result = invoke("score", server.url, str(pictures["png"]), env={"SCOREPACK_KEY": KEYS[1]})
    assert result.exit_code == 0, result.output
    assert len([line for line in result.stdout.splitlines() if _TOP.match(line)]) == 5


def test_score_without_or_with_a_wrong_key_is_a_clean_error(
    server: ServerProcess, pictures: dict[str, Path]
) -> None:
    result = invoke("score", server.url, str(pictures["jpeg"]))
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: HTTP 401 unauthorized: Missing key: send the header 'Authorization: Bearer KEY'.\n"
    )
    result = invoke("score", server.url, str(pictures["jpeg"]), "--key", "guess")
    assert result.exit_code == 1
    assert result.stderr == "Error: HTTP 401 unauthorized: The key is not valid for this service.\n"


def test_score_reports_what_the_server_refused(
    server: ServerProcess, pictures: dict[str, Path]
) -> None:
    result = invoke("score", server.url, str(pictures["text"]), "--key", KEYS[0])
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: HTTP 400 invalid_image: ")
    assert len(result.stderr.splitlines()) == 1


def test_auth_guards_score_but_not_the_probes(
    server: ServerProcess, pictures: dict[str, Path]
) -> None:
    body = pictures["jpeg"].read_bytes()
    headers = {"Content-Type": "image/jpeg"}
    with httpx.Client(base_url=server.url, timeout=30) as client:
        refused = client.post("/score", content=body, headers=headers)
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Bearer")
        assert refused.json()["error"]["code"] == "unauthorized"
        wrong_scheme = client.post(
            "/score", content=body, headers={**headers, "Authorization": f"Basic {KEYS[0]}"}
        )
        assert wrong_scheme.status_code == 401
        assert client.get("/").status_code == 200
        assert client.get("/health/ready").status_code == 200
        for key in KEYS:
            ok = client.post(
                "/score", content=body, headers={**headers, "Authorization": f"Bearer {key}"}
            )
            assert ok.status_code == 200, ok.text
            assert len(ok.json()["predictions"][0]["top_k"]) == 5
        last = ok
    # one log line per request, keys never in it (access lines are written in batches,
    # every 100 ms, and this server goes on running: wait for them)
    # (the last request's line is the last written: once it is there, all are)
    wait_for(
        lambda: f"id={last.headers['x-request-id']}" in server.log_text,
        "the last request's access line",
        60,
    )
    assert re.search(r"POST /score 401 ", server.log_text)
    assert re.search(r"POST /score 200 ", server.log_text)
    assert KEYS[0] not in server.log_text


def test_score_an_unreachable_url_is_a_clean_error(pictures: dict[str, Path]) -> None:
    with socket.socket() as sock:  # a port nobody listens on once this closes
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = invoke("score", f"http://127.0.0.1:{port}", str(pictures["jpeg"]), "--timeout", "5")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: could not reach http://127.0.0.1:{port}/score: ")
    assert len(result.stderr.splitlines()) == 1
