"""The third-party backend example (examples/scorepack-numpy), installed as a user would
install it, then used through every command: backends, inspect, serve, score.

The package is pip-installed once into a folder of this module's own (never the shared
virtualenv); ``PYTHONPATH`` points the subprocesses at it, so scorepack finds the backend
through the entry point in its installed ``*.dist-info``, like any outside plugin.
"""

from __future__ import annotations

import importlib.metadata
import io
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import images
import scorepack
from cli_process import (
    REPO,
    ServerProcess,
    cli_env,
    imported_frameworks,
    pip_install,
    run_cli,
    run_python,
)
from scorepack import plugins
from scorepack.cli import build_cli

EXAMPLE = REPO / "examples" / "scorepack-numpy"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example package, pip-installed into its own folder."""
    return pip_install(EXAMPLE, tmp_path_factory.mktemp("example") / "site")


@pytest.fixture(scope="module")
def env(site: Path) -> dict[str, str]:
    return cli_env([site])


@pytest.fixture(scope="module")
def model(site: Path, env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model written by the package's own script, under a name that hides its format."""
    path = tmp_path_factory.mktemp("npz") / "classifier.bin"
    result = run_python(
        "from scorepack_numpy_example.make_model import main\n"
        f"main([{str(path)!r}, '--hidden', '16,12', '--classes', '7', '--seed', '5'])\n",
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"wrote {path}: input [8, 8, 3]")
    return path


@pytest.fixture
def in_process(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The installed example visible to this test's own plugin manager."""
    monkeypatch.syspath_prepend(str(site))
    plugins.reset()


def forward(model: Path, x: np.ndarray) -> np.ndarray:
    """The model's probabilities, computed here from its arrays with plain NumPy."""
    with np.load(model) as arrays:
        layers = []
        i = 0
        while f"W{i}" in arrays:
            layers.append((arrays[f"W{i}"], arrays[f"b{i}"]))
            i += 1
    h = x.reshape(len(x), -1).astype(np.float64)
    for k, (w, b) in enumerate(layers):
        h = h @ w + b
        if k < len(layers) - 1:
            h = np.maximum(h, 0)
    e = np.exp(h - h.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def pixels(body: bytes) -> np.ndarray:
    """A JPEG/PNG as the model's 8x8 RGB float32 input row (stretch resize, raw 0..255)."""
    img = Image.open(io.BytesIO(body)).convert("RGB")
    return np.asarray(img.resize((8, 8), Image.Resampling.BILINEAR), dtype=np.float32)


# --- backends and inspect --------------------------------------------------------------------


def test_backends_lists_the_installed_example(env: dict[str, str]) -> None:
    # --no-devices: the other backends' frameworks stay unimported, so this stays quick
    result = run_cli("backends", "--no-devices", env=env)
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[2:]}
    assert "tensorflow" in rows  # the built-in plugin is still there
    assert "NumPy .npz MLP classifier (arrays W0, b0, ...)" in rows["numpy"]
    assert f"numpy {np.__version__}" in rows["numpy"]


def test_backends_json_in_process(in_process: None) -> None:
    result = CliRunner().invoke(build_cli(), ["backends", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    row = rows["numpy"]
    assert row["plugin"] == "numpy"
    assert row["framework"] == "numpy"
    assert row["framework_version"] == np.__version__
    assert row["devices"] == ["cpu"]
    assert row["formats"] == ["NumPy .npz MLP classifier (arrays W0, b0, ...)"]
    assert row["problem"] is None
    assert plugins.get_plugins().distribution("numpy") == "scorepack-numpy-example"


def test_inspect_detects_by_content_without_importing_a_framework(
    model: Path, env: dict[str, str]
) -> None:
    result = run_cli("inspect", str(model), env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert f"backend:    numpy (numpy {np.__version__})" in lines
    assert "layers:     192 -> 16 -> 12 -> 7" in lines
    rows = [line.split(None, 2) for line in lines]
    assert ["input", "float32", "[batch, 8, 8, 3]"] in rows
    assert ["probs", "float32", "[batch, 7]"] in rows
    assert "classifier output: probs (responses carry top-k)" in lines
    assert any(line.startswith("images go to 'input': 8x8, 3 channel(s), NHWC") for line in lines)

    # the same, asking the process what it imported: detection read the archive, no framework
    code = (
        "import json, sys\n"
        "from scorepack.cli import main\n"
        f"try:\n    main(['inspect', {str(model)!r}, '--json'])\n"
        "except SystemExit as exit:\n    assert not exit.code, exit.code\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    result = run_python(code, env=env)
    assert result.returncode == 0, result.stderr
    info_text, modules_text = _split_json(result.stdout)
    info = json.loads(info_text)
    assert info["backend"] == "numpy"
    assert info["signature"]["inputs"] == [
        {"name": "input", "dtype": "float32", "shape": [None, 8, 8, 3], "batched": True}
    ]
    assert info["signature"]["outputs"] == [
        {"name": "probs", "dtype": "float32", "shape": [None, 7], "batched": True}
    ]
    modules = json.loads(modules_text)
    assert "scorepack_numpy_example" in modules and "scorepack_tensorflow" in modules
    assert imported_frameworks(modules) == []


def _split_json(stdout: str) -> tuple[str, str]:
    """The indented JSON document ``inspect --json`` printed, then the one-line module list."""
    head, _, last = stdout.rstrip("\n").rpartition("\n")
    return head, last


def test_errors_from_the_example_are_clean(model: Path, env: dict[str, str]) -> None:
    result = run_cli("inspect", str(model), "--device", "cuda", env=env)
    assert result.returncode == 1
    assert result.stderr.startswith(
        "Error: cuda:0 was requested but NumpyBackend can use only: cpu."
    )
    assert len(result.stderr.splitlines()) == 1

    broken = model.with_name("broken.npz")
    with broken.open("wb") as out:
        np.savez(out, W0=np.zeros((4, 3), np.float32), b0=np.zeros(2, np.float32))
    result = run_cli("inspect", str(broken), env=env)
    assert result.returncode == 1
    assert result.stderr == (
        f"Error: {broken}: layer 0 needs W0 [in, out] and b0 [out]; got [4, 3] and [2]\n"
    )


# --- in-process use ------------------------------------------------------------------------


def test_python_api_and_requirements(in_process: None, model: Path) -> None:
    spec = scorepack.resolve_backend(model)
    assert spec.name == "numpy"
    pin = f"numpy=={importlib.metadata.version('numpy')}"
    assert spec.requirements("cpu").pip == (pin,)
    assert spec.requirements("cuda").pip == (pin,)  # NumPy has no GPU build

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, size=(5, 8, 8, 3)).astype(np.float32)
    with scorepack.load(model) as scorer:
        out = scorer.predict({"input": x})
        assert out["probs"].shape == (5, 7)
        np.testing.assert_allclose(out["probs"], forward(model, x), rtol=1e-4, atol=1e-6)
        body = scorer.score(images.jpeg(30, 20, seed=2), top_k=2)
    [prediction] = body["predictions"]
    assert len(prediction["top_k"]) == 2

    with scorepack.load(model, options={"softmax": False}) as scorer:
        assert scorer.signature.output_names == ["logits"]


# --- serve ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(model: Path, env: dict[str, str]) -> Iterator[ServerProcess]:
    with ServerProcess([str(model), "--exact-decode"], env=env) as proc:
        yield proc


def test_serve_scores_a_jpeg(server: ServerProcess, model: Path) -> None:
    body = images.jpeg(64, 48, seed=7)
    response = httpx.post(
        server.url + "/score",
        content=body,
        headers={"Content-Type": "image/jpeg"},
        params={"raw": "true", "top_k": "3"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    expected = forward(model, pixels(body)[None])[0]
    np.testing.assert_allclose(answer["outputs"]["probs"], [expected], rtol=1e-4, atol=1e-6)
    [prediction] = answer["predictions"]
    assert [e["index"] for e in prediction["top_k"]] == list(np.argsort(-expected)[:3])


def test_serve_scores_json_tensors(server: ServerProcess, model: Path) -> None:
    rng = np.random.default_rng(1)
    batch = rng.uniform(0, 255, size=(3, 8, 8, 3)).astype(np.float32)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        response = client.post("/score?raw=true", json={"inputs": {"input": batch.tolist()}})
        assert response.status_code == 200, response.text
        answer = response.json()
        expected = forward(model, batch)
        assert len(answer["predictions"]) == 3  # one result row per input row
        np.testing.assert_allclose(answer["outputs"]["probs"], expected, rtol=1e-4, atol=1e-6)
        for row, prediction in zip(expected, answer["predictions"], strict=True):
            assert prediction["top_k"][0]["index"] == int(np.argmax(row))

        # one row may leave out the batch dimension; a wrong shape names the input
        single = client.post("/score", json={"inputs": {"input": batch[0].tolist()}})
        assert single.status_code == 200 and len(single.json()["predictions"]) == 1
        wrong = client.post("/score", json={"inputs": {"input": [[1.0, 2.0]]}})
        assert wrong.status_code == 400
        assert wrong.json()["error"]["code"] == "invalid_tensor"
        assert "'input'" in wrong.json()["error"]["message"]
        assert "[batch, 8, 8, 3]" in wrong.json()["error"]["message"]
        # the server is still fine afterwards
        assert client.post("/score", json={"inputs": {"input": batch.tolist()}}).status_code == 200


def test_score_command_against_the_example(
    server: ServerProcess, model: Path, tmp_path: Path
) -> None:
    picture = tmp_path / "picture.png"
    body = images.png(24, 24, seed=9)
    picture.write_bytes(body)
    tensors = tmp_path / "tensors.json"
    tensors.write_text(json.dumps({"inputs": {"input": np.ones((2, 8, 8, 3)).tolist()}}))
    result = CliRunner().invoke(
        build_cli(), ["score", server.url, str(picture), str(tensors), "--json"]
    )
    assert result.exit_code == 0, result.output
    image_answer, tensor_answer = json.loads(result.stdout)
    expected = forward(model, pixels(body)[None])[0]
    assert image_answer["predictions"][0]["top_k"][0]["index"] == int(np.argmax(expected))
    assert len(tensor_answer["predictions"]) == 2


def test_make_model_command_line(site: Path, env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "flat.npz"
    # python -m scorepack_numpy_example.make_model OUT --input-shape 20 --hidden 4
    result = run_python(
        "import runpy\n"
        "runpy.run_module('scorepack_numpy_example.make_model', run_name='__main__')\n",
        str(out),
        "--input-shape",
        "20",
        "--hidden",
        "4",
        env=env,
    )
    assert result.returncode == 0, result.stderr
    with np.load(out) as arrays:
        assert sorted(arrays.files) == ["W0", "W1", "b0", "b1", "input_shape"]
        assert arrays["W0"].shape == (20, 4) and arrays["W1"].shape == (4, 10)
