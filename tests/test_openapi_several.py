"""One API document for several models: the embedded server's over a repository, a package
of several models' files, and azmlinfsrv serving them — each lists ``/score``'s ``model``
(and ``version``) parameters and every model's own schemas, and a client that follows it
is answered 200; ``?model=`` narrows it to one model's document, as with one model.
schemathesis fuzzes a two-model server from it, bounded, with no 5xx.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate

from fixture_backends import EchoBackend
from fuzz_helpers import MODES, fuzz_from_document
from metrics_helpers import total
from packages import AzmlinfsrvServer, backend_params, tiny_model
from scorepack.generator import build_package, render
from scorepack.openapi import SWAGGER_FILES, ApiFacts, api_document, package_facts
from scorepack.repository import ModelSource, Repository
from scorepack.scorer import Scorer
from scorepack.server import BackgroundServer
from serving_helpers import scoring_config, serving_repository
from test_generator import several_models_spec
from test_openapi import MixedBackend


def _source(name: str, version: str | None, backend: Any, **batching: Any) -> ModelSource:
    config = scoring_config(warmup=False, **batching)
    return ModelSource(name, version, lambda: Scorer(backend, config, name=name, version=version))


def _score_parameters(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in document["paths"]["/score"]["post"]["parameters"]}


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Repository]]:
    """echo (no versions) and mixed in versions 1 and 2, served on a loopback port."""
    root = tmp_path_factory.mktemp("several-openapi")
    repository = Repository(
        [
            _source("echo", None, EchoBackend(root / "echo.echo")),
            _source("mixed", "1", MixedBackend(root / "mixed1.bin")),
            _source("mixed", "2", MixedBackend(root / "mixed2.bin")),
        ]
    )
    with serving_repository(repository) as (server, _client):
        yield server.url, repository


def test_the_embedded_server_describes_every_model_in_one_document(
    repository: tuple[str, Repository],
) -> None:
    url, models = repository
    with httpx.Client(base_url=url, timeout=60) as client:
        three = client.get("/swagger.json", params={"version": "3"}).json()
        two = client.get("/swagger.json").json()
        three_one = client.get("/swagger.json", params={"version": "3.1"}).json()
        echo = client.get("/swagger.json", params={"version": "3", "model": "echo"}).json()
        mixed1 = client.get(
            "/swagger.json", params={"version": "3", "model": "mixed", "model_version": "1"}
        )
        unknown = client.get("/swagger.json", params={"model": "nope"})
        version_alone = client.get("/swagger.json", params={"model_version": "1"})
    for document in (three, two, three_one):
        validate(document)
    scorers = [models.get("echo"), models.get("mixed", "1"), models.get("mixed", "2")]
    assert three == api_document([ApiFacts.for_scorer(s) for s in scorers], "3.0")
    # /score names its models and versions: what a client needs to be answered 200
    parameters = _score_parameters(three)
    assert parameters["model"]["required"] is True
    assert parameters["model"]["schema"]["enum"] == ["echo", "mixed"]
    assert parameters["version"]["schema"]["enum"] == ["1", "2"]
    assert {"top_k", "raw"} <= set(parameters)
    schemas = three["components"]["schemas"]
    assert {"ScoreRequest.echo", "ScoreRequest.mixed.1", "ScoreRequest.mixed.2"} <= set(schemas)
    assert len(schemas["ScoreRequest"]["anyOf"]) == len(schemas["ScoreResponse"]["anyOf"]) == 3
    assert schemas["ScoreRequest.mixed.1"]["properties"]["inputs"]["required"] == [
        "ids",
        "flag",
        "tag",
    ]
    assert "404" in three["paths"]["/score"]["post"]["responses"]  # an unknown model
    # Swagger 2.0 lists each model's definitions beside a body it cannot choose among
    assert {"ScoreRequest.echo", "ScoreRequest.mixed.2"} <= set(two["definitions"])
    assert [p["name"] for p in two["paths"]["/score"]["post"]["parameters"]][:2] == [
        "model",
        "version",
    ]
    # ?model= (and ?model_version=) narrow it to one model's document, as with one model
    assert echo == api_document(ApiFacts.for_scorer(models.get("echo")), "3.0")
    assert "model" not in _score_parameters(echo)
    assert mixed1.status_code == 200
    assert mixed1.json()["info"]["title"] == "mixed (version 1)"
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
    assert version_alone.status_code == 400
    # about the document's parameters, not /score's (found by schemathesis: ?model_version=)
    assert "?model_version= goes with ?model=NAME" in version_alone.json()["error"]["message"]


def test_a_client_that_follows_the_document_is_answered(
    repository: tuple[str, Repository],
) -> None:
    url, _ = repository
    bodies = {
        "echo": {"inputs": {"x": [[1.0, 2.0]]}},
        "mixed": {"inputs": {"ids": [[1, 2, 3]], "flag": [True], "tag": ["a"]}},
    }
    with httpx.Client(base_url=url, timeout=60) as client:
        document = client.get("/swagger.json", params={"version": "3"}).json()
        parameters = _score_parameters(document)
        for name in parameters["model"]["schema"]["enum"]:
            scored = client.post("/score", params={"model": name}, json=bodies[name])
            assert scored.status_code == 200, scored.text
        for version in parameters["version"]["schema"]["enum"]:
            scored = client.post(
                "/score", params={"model": "mixed", "version": version}, json=bodies["mixed"]
            )
            assert scored.status_code == 200, scored.text
        assert scored.json()["outputs"]["total"] == [6]
        # the model is required, as the document says: 400 naming the models
        missing = client.post("/score", json=bodies["echo"])
    assert missing.status_code == 400
    assert "echo, mixed" in missing.json()["error"]["message"]
    assert "400" in document["paths"]["/score"]["post"]["responses"]


def test_a_package_of_several_models_carries_one_document() -> None:
    spec = several_models_spec()
    files = render(spec)
    for kind, name in SWAGGER_FILES.items():
        document = json.loads(files[name])
        assert document == api_document(package_facts(spec), kind, title="garden")
        validate(document)
    three = json.loads(files["swagger3.json"])
    assert three["info"]["title"] == "garden"
    assert set(three["paths"]) == {"/", "/score", "/swagger.json"}  # azmlinfsrv's routes
    parameters = _score_parameters(three)
    assert parameters["model"]["schema"]["enum"] == ["digits", "flowers"]
    assert "version" not in parameters  # Azure ML versions the registered models
    schemas = three["components"]["schemas"]
    digits = schemas["ScoreRequest.digits"]["properties"]["inputs"]["anyOf"][0]
    assert digits["required"] == ["pixels"]
    # each model's own settings: flowers has labels, digits none

    def entry(key: str) -> dict[str, Any]:
        predictions = schemas[f"ScoreResponse.{key}"]["properties"]["predictions"]
        return predictions["items"]["properties"]["top_k"]["items"]["properties"]

    assert "label" in entry("flowers") and "label" not in entry("digits")
    assert "image/jpeg" in three["paths"]["/score"]["post"]["requestBody"]["content"]


@pytest.mark.parametrize("backend", backend_params(["onnx"]))
def test_azmlinfsrv_serves_the_document_of_several_models(
    backend: str, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The package's own documents reach clients through azmlinfsrv's /swagger.json (not
    its generic one), and each model it names answers /score?model=NAME."""
    from images import jpeg

    pytest.importorskip("azureml_inference_server_http")
    pytest.importorskip("azureml.contrib.services")
    model = tiny_model(backend, tmp_path_factory.getbasetemp())
    package = build_package(
        [("left", model), ("right", model)], tmp_path / "pkg", device="cpu", targets={}
    ).path
    log = tmp_path / "azmlinfsrv.log"
    with AzmlinfsrvServer(package, log=log) as server, httpx.Client(timeout=120) as client:
        default = client.get(server.url + "/swagger.json")
        three = client.get(server.url + "/swagger.json", params={"version": "3"})
        names = _score_parameters(three.json())["model"]["schema"]["enum"]
        answers = {
            name: client.post(
                server.url + "/score",
                params={"model": name},
                content=jpeg(40, 30, seed=1),
                headers={"content-type": "image/jpeg"},
            )
            for name in names
        }
    assert default.json() == json.loads((package / "swagger.json").read_text())
    assert three.json() == json.loads((package / "swagger3.json").read_text())
    assert names == ["left", "right"]
    for name, answer in answers.items():
        assert answer.status_code == 200, (name, answer.text)
        assert "predictions" in answer.json()


# --- schemathesis ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundServer]:
    root = tmp_path_factory.mktemp("fuzz-several")
    repository = Repository(
        [
            _source("echo", None, EchoBackend(root / "echo.echo"), max_delay_ms=0),
            _source("mixed", None, MixedBackend(root / "mixed.bin"), max_delay_ms=0),
        ]
    )
    with BackgroundServer(repository) as server:
        yield server


@pytest.mark.parametrize("mode", MODES)
def test_fuzz_a_two_model_server_from_its_document(fuzzed: BackgroundServer, mode: str) -> None:
    """As the one-model fuzz run (tests/test_openapi.py), with fewer examples per operation
    (a few seconds): never a 5xx, and valid requests get what the document promises."""
    operations, answered = fuzz_from_document(fuzzed.url, mode, max_examples=12)
    assert {"POST /v2/models/{name}/infer", "GET /v2/docs/dataplane.json"} <= operations
    if mode == "positive":
        # the fuzzing reached the models: some bodies were scored, over /score and V2 (the
        # document's example per model, each sent to the model it names)
        assert total(answered, "scorepack_requests_total", route="/score", status="200") > 0
        for model in ("echo", "mixed"):
            assert (
                total(
                    answered,
                    "scorepack_requests_total",
                    route="/v2/models/{name}/infer",
                    model=model,
                    status="200",
                )
                > 0
            ), answered
