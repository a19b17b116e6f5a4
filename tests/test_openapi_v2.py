"""The V2 REST routes in the embedded server's API document (scorepack.openapi_v2): every
route the server serves is documented and nothing else, the infer bodies come from each
model's signature, every status a route answers with is listed with V2's error body, and
MLServer's dataplane paths serve the V2 part (the server's, and one model's own).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate

from fixture_backends import EchoBackend, EncodedImageBackend
from scorepack.openapi import ApiFacts, api_document
from scorepack.openapi_v2 import (
    DATAPLANE_PATH,
    dataplane_document,
    model_dataplane_document,
    model_dataplane_path,
)
from scorepack.repository import ModelSource, Repository
from scorepack.scorer import Scorer
from scorepack.server import BackgroundServer
from serving_helpers import scoring_config, serving_repository
from test_openapi import MixedBackend

KEY = "sesame"


def _source(name: str, version: str | None, backend: Any, **config: Any) -> ModelSource:
    settings = scoring_config(warmup=False, **config)
    return ModelSource(name, version, lambda: Scorer(backend, settings, name=name, version=version))


def _repository(root: Path) -> Repository:
    return Repository(
        [
            _source("echo", None, EchoBackend(root / "echo.echo")),
            _source("mixed", "1", MixedBackend(root / "mixed1.bin"), max_body_bytes=4096),
            _source("mixed", "2", MixedBackend(root / "mixed2.bin")),
            _source("image", None, EncodedImageBackend(root / "image.img")),
        ]
    )


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BackgroundServer, Any]]:
    """Four model versions behind a key, on a loopback port."""
    repository = _repository(tmp_path_factory.mktemp("openapi-v2"))
    with serving_repository(repository, auth_keys=(KEY,)) as (server, client):
        client.headers["authorization"] = f"Bearer {KEY}"
        yield server, client


def _document(client: httpx.Client) -> dict[str, Any]:
    answer = client.get("/swagger.json", params={"version": "3"})
    assert answer.status_code == 200, answer.text
    return answer.json()


def _template(route_path: str) -> str:
    return re.sub(r"\{(\w+)(:\w+)?\}", r"{\1}", route_path)


@pytest.mark.parametrize("metrics", [True, False])
def test_the_document_lists_exactly_the_routes_the_server_serves(
    tmp_path: Path, metrics: bool
) -> None:
    """Every (path, method) of the embedded server's router is in its document, and the
    document has nothing the server does not serve (HEAD, which GET routes also take, is
    left out as OpenAPI documents leave it)."""
    repository = _repository(tmp_path)
    with serving_repository(repository, metrics=metrics) as (server, client):
        document = _document(client)
        routes = {
            (_template(route.path), method.lower())
            for route in server.app.router.routes
            for method in getattr(route, "allowed", ())
            if method != "HEAD"
        }
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    assert documented == routes
    assert ("/metrics" in document["paths"]) == metrics
    assert {"/v2/models/{name}/infer", DATAPLANE_PATH, "/v2/repository/index"} <= set(
        document["paths"]
    )


def test_every_document_is_valid_in_every_kind(
    served: tuple[BackgroundServer, httpx.Client],
) -> None:
    _, client = served
    kinds = {k: client.get("/swagger.json", params={"version": k}).json() for k in ("2", "3")}
    documents = [
        *kinds.values(),
        client.get("/swagger.json", params={"version": "3.1"}).json(),
        client.get("/swagger.json", params={"model": "mixed", "model_version": "1"}).json(),
        client.get(DATAPLANE_PATH).json(),
    ]
    for name, version in (("echo", None), ("mixed", "1"), ("image", None)):
        documents.append(client.get(model_dataplane_path(name, version)).json())
    for document in documents:
        validate(document)  # openapi-spec-validator, by the document's own version field

    def statuses(document: dict[str, Any]) -> set[tuple[str, str, tuple[str, ...]]]:
        return {
            (path, method, tuple(sorted(operation["responses"])))
            for path, item in document["paths"].items()
            for method, operation in item.items()
        }

    # Swagger 2.0 says the same: the same operations, each with the same statuses
    assert statuses(kinds["2"]) == statuses(kinds["3"])


def test_the_infer_body_comes_from_the_models_signature(
    served: tuple[BackgroundServer, httpx.Client],
) -> None:
    _, client = served
    document = _document(client)
    schemas = document["components"]["schemas"]
    # one body per model version, anyOf them on the shared path (as /score's)
    assert {"InferRequest.echo", "InferRequest.mixed.1", "InferRequest.mixed.2"} <= set(schemas)
    infer = document["paths"]["/v2/models/{name}/infer"]["post"]
    names = {p["name"]: p for p in infer["parameters"]}
    assert names["name"]["schema"]["enum"] == ["echo", "image", "mixed"]
    assert names["Inference-Header-Content-Length"]["in"] == "header"
    assert set(infer["requestBody"]["content"]) == {"application/json", "application/octet-stream"}
    versioned = document["paths"]["/v2/models/{name}/versions/{version}/infer"]["post"]
    assert {p["name"]: p for p in versioned["parameters"]}["version"]["schema"]["enum"] == [
        "1",
        "2",
    ]
    mixed = schemas["InferRequest.mixed.1"]["properties"]["inputs"]["items"]["anyOf"]
    by_name = {i["properties"]["name"]["enum"][0]: i["properties"] for i in mixed}
    # as GET /v2/models/mixed says: ids INT32 [-1, 3], flag BOOL [-1], tag BYTES [-1]
    metadata = client.get("/v2/models/mixed/versions/1").json()
    for tensor in metadata["inputs"]:
        properties = by_name[tensor["name"]]
        assert properties["datatype"]["enum"][0] == tensor["datatype"]
        rank = len(tensor["shape"])
        assert properties["shape"]["minItems"] == properties["shape"]["maxItems"] == rank
    ids = by_name["ids"]["data"]["anyOf"][0]
    assert ids["items"]["minItems"] == ids["items"]["maxItems"] == 3
    assert ids["items"]["items"]["maximum"] == 2**31 - 1
    assert by_name["flag"]["data"]["anyOf"][1]["items"] == {"type": "boolean"}
    response = schemas["InferResponse.mixed.2"]["properties"]
    assert response["model_version"]["enum"] == ["2"]
    outputs = {o["properties"]["name"]["enum"][0]: o for o in response["outputs"]["items"]["anyOf"]}
    assert set(outputs) == {o["name"] for o in metadata["outputs"]}
    assert outputs["total"]["properties"]["datatype"]["enum"] == ["INT64"]
    # an example request per model, under the key its path parameters name it with
    examples = infer["requestBody"]["content"]["application/json"]["examples"]
    assert set(examples) == set(names["name"]["examples"]) == {"echo", "image", "mixed"}
    for key, example in examples.items():
        answer = client.post(f"/v2/models/{key}/infer", json=example["value"])
        assert answer.status_code == 200, answer.text
    by_version = versioned["requestBody"]["content"]["application/json"]["examples"]
    assert set(by_version) == {"mixed.1", "mixed.2"}
    # FP32 inputs also take BF16 (it widens exactly); an image model's input says so
    echo = schemas["InferRequest.echo"]["properties"]["inputs"]["items"]["properties"]
    assert echo["datatype"]["enum"] == ["FP32", "BF16"]
    assert "BYTES holding encoded JPEG" in infer["description"]


def test_a_client_that_follows_a_models_own_document_is_answered(
    served: tuple[BackgroundServer, httpx.Client],
) -> None:
    """MLServer's per-model path: the model's routes with its name (and version) written
    in, its example infer request answered 200 as the response schema says."""
    _, client = served
    mixed = client.get("/v2/models/mixed/versions/2/docs/dataplane.json").json()
    echo = client.get("/v2/models/echo/docs/dataplane.json").json()
    assert set(mixed["paths"]) == {
        "/v2/models/mixed/versions/2" + suffix
        for suffix in ("", "/ready", "/config", "/stats", "/infer", "/docs/dataplane.json")
    }
    assert "/v2/models/echo/infer" in echo["paths"]
    assert mixed["info"]["title"].endswith("model 'mixed' version 2")
    assert mixed == model_dataplane_document(
        ApiFacts.for_scorer(served[0].app.repository.get("mixed", "2"), auth=True)
    )
    for document in (mixed, echo):
        (path,) = [p for p in document["paths"] if p.endswith("/infer")]
        operation = document["paths"][path]["post"]
        example = operation["requestBody"]["content"]["application/json"]["example"]
        answer = client.post(path, json=example)
        assert answer.status_code == 200, answer.text
        assert "200" in operation["responses"]
        body = answer.json()
        schema = document["components"]["schemas"]["InferResponse"]
        assert body["model_name"] == schema["properties"]["model_name"]["enum"][0]
        assert {o["name"] for o in body["outputs"]} == {
            o["properties"]["name"]["enum"][0]
            for o in schema["properties"]["outputs"]["items"].get(
                "anyOf", [schema["properties"]["outputs"]["items"]]
            )
        }
    # the server's V2 document: the V2 routes alone, as MLServer's dataplane.json
    dataplane = client.get(DATAPLANE_PATH).json()
    assert all(p.startswith("/v2") for p in dataplane["paths"])
    assert set(dataplane["paths"]) == {p for p in _document(client)["paths"] if p.startswith("/v2")}


# every V2 route's refusals: (method, path as sent, documented path, request kwargs, status)
_REFUSALS: list[tuple[str, str, str, dict[str, Any], int]] = [
    ("GET", "/v2/models/nope", "/v2/models/{name}", {}, 404),
    ("GET", "/v2/models/mixed/versions/9", "/v2/models/{name}/versions/{version}", {}, 404),
    (
        "GET",
        "/v2/models/echo/versions/1/ready",
        "/v2/models/{name}/versions/{version}/ready",
        {},
        404,
    ),
    ("GET", "/v2/models/nope/config", "/v2/models/{name}/config", {}, 404),
    ("GET", "/v2/models/nope/stats", "/v2/models/{name}/stats", {}, 404),
    (
        "GET",
        "/v2/models/nope/docs/dataplane.json",
        "/v2/models/{name}/docs/dataplane.json",
        {},
        404,
    ),
    ("POST", "/v2/models/nope/infer", "/v2/models/{name}/infer", {"json": {}}, 404),
    ("POST", "/v2/models/echo/infer", "/v2/models/{name}/infer", {"content": b"{"}, 400),
    (
        "POST",
        "/v2/models/echo/infer",
        "/v2/models/{name}/infer",
        {"content": b"x", "headers": {"content-type": "text/plain"}},
        415,
    ),
    (
        "POST",
        "/v2/models/mixed/versions/1/infer",
        "/v2/models/{name}/versions/{version}/infer",
        {"content": b"[" * 5000},
        413,
    ),
    ("POST", "/v2/repository/index", "/v2/repository/index", {"json": {"ready": "yes"}}, 400),
    (
        "POST",
        "/v2/repository/index",
        "/v2/repository/index",
        {"content": b"{}", "headers": {"content-encoding": "gzip"}},
        415,
    ),
    ("POST", "/v2/repository/models/echo/load", "/v2/repository/models/{name}/load", {}, 400),
    ("POST", "/v2/repository/models/echo/unload", "/v2/repository/models/{name}/unload", {}, 400),
    ("GET", "/v2/models", "/v2/models", {"headers": {"authorization": "Bearer wrong"}}, 401),
    (
        "POST",
        "/v2/models/echo/infer",
        "/v2/models/{name}/infer",
        {"json": {}, "headers": {"authorization": ""}},
        401,
    ),
]


@pytest.mark.parametrize(("method", "sent", "path", "kwargs", "status"), _REFUSALS)
def test_every_refusal_is_a_documented_status_with_v2s_error_body(
    served: tuple[BackgroundServer, httpx.Client],
    method: str,
    sent: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
) -> None:
    _, client = served
    document = _document(client)
    answer = client.request(method, sent, **kwargs)
    assert answer.status_code == status, answer.text
    responses = document["paths"][path][method.lower()]["responses"]
    assert str(status) in responses, (path, sorted(responses))
    assert responses[str(status)]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/V2Error"
    }
    body = answer.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"]


def test_keyed_routes_say_so_and_probes_do_not(
    served: tuple[BackgroundServer, httpx.Client],
) -> None:
    _, client = served
    paths = _document(client)["paths"]
    keyed = {p for p, item in paths.items() for op in item.values() if op.get("security")}
    for path in ("/v2/health/live", "/v2/health/ready", "/v2", "/v2/models/{name}/ready"):
        assert path not in keyed
        assert httpx.get(str(client.base_url) + path.replace("{name}", "echo")).status_code == 200
    for path in ("/v2/models", "/v2/models/{name}", "/v2/models/{name}/infer", "/metrics"):
        assert path in keyed
        assert "401" in next(iter(paths[path].values()))["responses"]


def test_a_model_not_loaded_has_no_document_yet(tmp_path: Path) -> None:
    """Explicit model control: an unloaded model's own document is a 503 saying so, and the
    document of the server says load and unload can succeed there."""
    repository = Repository(
        [_source("echo", None, EchoBackend(tmp_path / "e.echo"))],
        model_control="explicit",
        load_at_start=(),
    )
    with serving_repository(repository, wait_ready=False) as (_server, client):
        unloaded = client.get("/v2/models/echo/docs/dataplane.json")
        everything = client.get(DATAPLANE_PATH)
        assert client.post("/v2/repository/models/echo/load").status_code == 200
        loaded = client.get("/v2/models/echo/docs/dataplane.json")
        dataplane = client.get(DATAPLANE_PATH).json()
        swagger = client.get("/swagger.json", params={"version": "3"}).json()
        assert client.post("/v2/repository/models/echo/unload").status_code == 200
        swagger_unloaded = client.get("/swagger.json")
    assert unloaded.status_code == 503 and "not loaded" in unloaded.json()["error"]
    assert everything.status_code == 503
    assert loaded.status_code == 200
    assert swagger_unloaded.status_code == 503
    # each 503 is documented (found by schemathesis on an explicit-control server, where
    # the documents' own routes answered 503 after an unload)
    for document in (dataplane, swagger):
        assert "503" in document["paths"][DATAPLANE_PATH]["get"]["responses"]
    assert "503" in swagger["paths"]["/swagger.json"]["get"]["responses"]
    load = dataplane["paths"]["/v2/repository/models/{name}/load"]["post"]
    assert "--model-control explicit" in load["description"]
    assert "500" in load["responses"]  # a load that fails says why, as a 500


def test_the_dataplane_documents_are_pure_functions_of_the_facts(tmp_path: Path) -> None:
    scorer = Scorer(MixedBackend(tmp_path / "m.bin"), scoring_config(warmup=False)).start()
    try:
        facts = ApiFacts.for_scorer(scorer)
        assert dataplane_document([facts]) == dataplane_document([facts])
        one = api_document(facts, "3.0")
        assert one["components"]["schemas"]["InferRequest"]["properties"]["inputs"]
        # a package under azmlinfsrv: no V2 routes (azmlinfsrv serves none)
        package = api_document(ApiFacts(**{**facts.__dict__, "host": "azureml"}), "3.0")
        assert not [p for p in package["paths"] if p.startswith("/v2")]
    finally:
        scorer.close()
