"""A package of several models for one Azure ML deployment (``scorepack build A=.. B=..`` or
``--repository``): built from two tiny real models of different backends and settings,
served by Microsoft's azmlinfsrv exactly as Azure ML runs it, each model scored through
``/score?model=NAME``; the Azure ML model layouts of SDK v1 (several registered models)
and SDK v2 (one model folder) found by the entry script. Deployment of such a package is
tested at the HTTP transport in tests/test_deploy.py."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from cli_process import ServerProcess, cli_env
from images import jpeg
from packages import AzmlinfsrvServer, backend_params, tiny_model
from scorepack.azureml import runtime
from scorepack.azureml.layout import locate_models, make_model_dir
from scorepack.cli import build_cli
from scorepack.client import ScoringClient
from scorepack.errors import PackageError
from scorepack.loading import open_package
from scorepack.manifest import load_manifest

pytest.importorskip("azureml_inference_server_http")
pytest.importorskip("azureml.contrib.services")

#: the onnx model's own settings (model-settings.yaml): two classes back, labelled,
#: batches of at most 4; the pytorch model keeps the command line's (top 5, batches of 32)
LABELS = ("ant", "bee", "cat", "dog")
NAMES = ("cnn", "tiny")


@pytest.fixture(scope="module", params=backend_params(["pytorch"]))
def package(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``scorepack build --repository repo/``: tiny (onnx, with its own settings) and cnn
    (pytorch), one CPU package named ``pair``."""
    root = tmp_path_factory.mktemp("several")
    repo = root / "repo"
    (repo / "tiny").mkdir(parents=True)
    shutil.copyfile(tiny_model("onnx", root), repo / "tiny" / "model.onnx")
    (repo / "tiny" / "labels.txt").write_text("\n".join(LABELS) + "\n")
    (repo / "tiny" / "model-settings.yaml").write_text(
        yaml.safe_dump(
            {
                "labels": "labels.txt",
                "scoring": {"postprocess": {"top_k": 2}, "batching": {"max_batch_size": 4}},
            }
        )
    )
    (repo / "cnn").mkdir()
    shutil.copyfile(tiny_model("pytorch", root), repo / "cnn" / "model.ts")
    out = root / "pair"
    result = CliRunner().invoke(
        build_cli(),
        [
            *("build", "--repository", str(repo), "-o", str(out), "--device", "cpu"),
            *("--name", "pair", "--no-check", "--top-k", "5"),
        ],
    )
    assert result.exit_code == 0, result.output + str(result.exception)
    return out


def own_scorer(package: Path, name: str) -> Any:
    """One model of the package, opened in this process, to compare answers with."""
    return open_package(package / "models" / name, model_dir=package / "model" / name, name=name)


def test_one_package_holds_both_models_with_their_own_settings(package: Path) -> None:
    spec = load_manifest(package)
    assert [m.name for m in spec.models] == list(NAMES)
    assert [m.backend for m in spec.models] == ["pytorch", "onnx"]
    tiny = spec.models[1]
    assert tiny.config.postprocess.top_k == 2 and tiny.config.postprocess.labels == LABELS
    assert tiny.config.batching.max_batch_size == 4
    assert spec.models[0].config.postprocess.top_k == 5
    # each model's files in model/NAME (checked by hash), its manifest in models/NAME
    assert (package / "model" / "tiny" / "model.onnx").is_file()
    assert (package / "model" / "cnn" / "model.ts").is_file()
    assert (package / "models" / "tiny" / "labels.txt").read_text().split() == list(LABELS)
    data = yaml.safe_load((package / "scorepack.yaml").read_text())
    assert data["format"] == 2
    assert data["models"] == [
        {"name": n, "package": f"models/{n}", "model_dir": f"model/{n}"} for n in NAMES
    ]
    # one environment and one set of wheels for both backends
    requirements = (package / "requirements.txt").read_text()
    assert "torch==" in requirements and "onnxruntime==" in requirements
    wheels = sorted(p.name.split("-")[0] for p in (package / "wheels").iterdir())
    assert wheels == ["scorepack", "scorepack_onnx", "scorepack_pytorch"]
    assert "MODELS = ('cnn', 'tiny')" in (package / "score.py").read_text()
    # the Azure ML deployment files, and only targets that serve several models
    inference = json.loads((package / "deploy/azureml-v1/inference_config.json").read_text())
    assert [m["path"] for m in inference["models"]] == ["model/cnn", "model/tiny"]
    deployment = yaml.safe_load((package / "deploy/azureml-v2/deployment.yml").read_text())
    assert deployment["model"]["path"] == "../../model" and deployment["model"]["name"] == "pair"
    assert not (package / "deploy" / "kubernetes").exists()
    # the package itself cannot be opened as one model: the error says what to do
    with pytest.raises(PackageError, match=r"holds several models \(cnn, tiny\)"):
        open_package(package)


@pytest.fixture(scope="module")
def azml(package: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzmlinfsrvServer]:
    log = tmp_path_factory.mktemp("azml-several") / "azmlinfsrv.log"
    server = AzmlinfsrvServer(package, log=log)
    try:
        yield server.wait_up(timeout=300)
    finally:
        server.stop()


def score(url: str, query: str, body: bytes = b"", **kw: Any) -> httpx.Response:
    return httpx.post(
        f"{url}/score{query}",
        content=body or jpeg(40, 30, seed=3),
        headers={"content-type": "image/jpeg"},
        timeout=120,
        **kw,
    )


def test_azmlinfsrv_scores_each_model_by_name(azml: AzmlinfsrvServer, package: Path) -> None:
    model_dir = next(line for line in azml.log.splitlines() if line.startswith("Model Directory: "))
    assert model_dir.endswith("/azureml-models/pair/1")  # as SDK v2 mounts one model folder
    image = jpeg(40, 30, seed=3)
    for name in NAMES:
        got = score(azml.url, f"?model={name}&raw=true", image)
        assert got.status_code == 200, got.text
        with own_scorer(package, name) as scorer:
            want = scorer.start().score(image, raw=True)
        top = got.json()["predictions"][0]["top_k"]
        assert [e["index"] for e in top] == [e["index"] for e in want["predictions"][0]["top_k"]]
        for output, value in want["outputs"].items():
            np.testing.assert_allclose(got.json()["outputs"][output], value, rtol=1e-5, atol=1e-6)
    # each model answered with its own settings: tiny's two labelled classes, cnn's five
    tiny = score(azml.url, "?model=tiny").json()["predictions"][0]["top_k"]
    assert len(tiny) == 2 and {e["label"] for e in tiny} <= set(LABELS)
    cnn = score(azml.url, "?model=cnn").json()["predictions"][0]["top_k"]
    assert len(cnn) == 5 and "label" not in cnn[0]


def test_azmlinfsrv_names_the_models_for_a_wrong_or_missing_name(azml: AzmlinfsrvServer) -> None:
    unknown = score(azml.url, "?model=nope")
    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == "application/json"
    error = unknown.json()["error"]
    assert error["code"] == "model_not_found"
    assert "'nope'" in error["message"] and "cnn, tiny" in error["message"]
    missing = score(azml.url, "")
    assert missing.status_code == 400
    assert "cnn, tiny" in missing.json()["error"]["message"]
    assert "/score?model=NAME" in missing.json()["error"]["message"]
    # the worker lives on: a good request right after
    assert score(azml.url, "?model=tiny").status_code == 200


def lay_out_v1(package: Path, root: Path) -> Path:
    """The package's models as SDK v1 mounts several registered models: AZUREML_MODEL_DIR
    is azureml-models/, each model at NAME/VERSION/NAME (Model.get_model_path's layout)."""
    base = root / "azureml-models"
    for name, version in (("cnn", "3"), ("tiny", "12")):
        shutil.copytree(package / "model" / name, base / name / version / name)
    # an older version of tiny that must not be chosen (Azure mounts only what is deployed,
    # but get_model_path takes the highest version)
    (base / "tiny" / "2" / "tiny").mkdir(parents=True)
    return base


def test_models_are_found_in_both_azure_ml_layouts(package: Path, tmp_path: Path) -> None:
    spec = load_manifest(package)
    v1 = lay_out_v1(package, tmp_path / "v1")
    found = locate_models(spec, package, {"AZUREML_MODEL_DIR": str(v1)})
    assert found == {"cnn": v1 / "cnn" / "3" / "cnn", "tiny": v1 / "tiny" / "12" / "tiny"}
    v2 = make_model_dir(spec, package, tmp_path / "v2")
    assert locate_models(spec, package, {"AZUREML_MODEL_DIR": str(v2)}) == {
        n: v2 / "model" / n for n in NAMES
    }
    assert locate_models(spec, package, {}) == {n: package / "model" / n for n in NAMES}
    shutil.rmtree(v1 / "cnn")
    with pytest.raises(PackageError, match="files of model 'cnn' are not where"):
        locate_models(spec, package, {"AZUREML_MODEL_DIR": str(v1)})


def flask_request(body: bytes, query: str) -> Any:
    """The Flask request azmlinfsrv hands run(), for POST /score?QUERY."""
    from flask import Request
    from werkzeug.test import EnvironBuilder

    return Request(
        EnvironBuilder(
            path="/score", method="POST", data=body, content_type="image/jpeg", query_string=query
        ).get_environ()
    )


def test_the_entry_script_serves_both_models_from_the_v1_layout(
    package: Path, tmp_path: Path
) -> None:
    base = lay_out_v1(package, tmp_path)
    made = runtime.init(
        package / "score.py", models=NAMES, environ={"AZUREML_MODEL_DIR": str(base)}
    )
    try:
        for name, classes in (("tiny", 2), ("cnn", 5)):
            answer = made.run(flask_request(jpeg(20, 20, seed=4), f"model={name}"))
            assert answer.status_code == 200, answer.get_data()
            assert len(json.loads(answer.get_data())["predictions"][0]["top_k"]) == classes
        wrong = made.run(flask_request(b"x", "model=resnet"))
        assert wrong.status_code == 404 and b"cnn, tiny" in wrong.get_data()
    finally:
        made.close()
        runtime._runtime = None  # other tests check that no runtime is left in this process
    # an entry script that does not list the manifest's models is refused at init()
    with pytest.raises(PackageError, match="rebuild the package"):
        runtime.init(package / "score.py", models=("tiny",), environ={})


def test_the_embedded_server_serves_the_package_with_the_same_selection(package: Path) -> None:
    with ServerProcess([str(package)], cli_env()) as server:
        server.wait_ready(timeout=300)
        assert "the package pair (cnn, tiny)" in server.log_text
        for name, classes in (("tiny", 2), ("cnn", 5)):
            got = score(server.url, f"?model={name}")
            assert got.status_code == 200, got.text
            assert len(got.json()["predictions"][0]["top_k"]) == classes
        unknown = score(server.url, "?model=nope")
        assert unknown.status_code == 404 and "cnn, tiny" in unknown.json()["error"]["message"]
        # scorepack's own client: the model in the URL, or given (scorepack score --model)
        with ScoringClient(f"{server.url}/score?model=tiny") as client:
            assert len(client.score(jpeg(30, 30, seed=5)).body["predictions"][0]["top_k"]) == 2
        with ScoringClient(server.url, model="cnn") as client:
            answer = client.score(jpeg(30, 30, seed=5), top_k=1)
            assert len(answer.body["predictions"][0]["top_k"]) == 1
        # and over V2 under the same names
        assert httpx.get(f"{server.url}/v2/models", timeout=30).json() == {"models": list(NAMES)}


def test_build_says_what_is_wrong_with_the_models_it_is_given(
    package: Path, tmp_path: Path
) -> None:
    cli = build_cli()
    out = str(tmp_path / "out")
    model = str(package / "model" / "tiny" / "model.onnx")
    cases = [
        (["build", f"a={model}", "-o", out], "needs two or more"),
        (["build", f"a={model}", "b", "-o", out], "name each one: NAME=PATH"),
        (["build", f"a={model}", f"b={tmp_path}/nothing", "-o", out], "does not exist"),
        (["build", f"a={model}", f"b={package}", "-o", out], "is a scoring package"),
        (["build", f"a={model}", f"a={model}", "-o", out], "Two models are named 'a'"),
        (["build", f"a={model}", f"b={model}", "--name", "a", "-o", out], "both named 'a'"),
    ]
    versions = tmp_path / "repo" / "m" / "1"
    versions.mkdir(parents=True)
    shutil.copyfile(model, versions / "model.onnx")
    cases.append((["build", "--repository", str(tmp_path / "repo"), "-o", out], "version folders"))
    for args, words in cases:
        result = CliRunner().invoke(cli, [*args, "--device", "cpu", "--no-check"])
        assert result.exit_code != 0, args
        assert words in result.output + str(result.exception), (args, result.output)
    assert not (tmp_path / "out").exists()
