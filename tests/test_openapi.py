"""The API document made from the model's signature: valid OpenAPI (2.0, 3.0, 3.1), served
at azmlinfsrv's route, and true to the server — schemathesis fuzzes the embedded server
from it, and no generated request may get a 5xx.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from openapi_spec_validator import validate

from fixture_backends import EchoBackend, EncodedImageBackend
from fuzz_helpers import MODES, fuzz_from_document
from metrics_helpers import total
from packages import sample_spec
from scorepack import Backend, Signature, TensorSpec
from scorepack.generator import render
from scorepack.openapi import SWAGGER_FILES, ApiFacts, api_document, error_codes_by_status
from scorepack.scorer import Scorer
from scorepack.server import BackgroundServer
from serving_helpers import scoring_config, serving


class MixedBackend(Backend):
    """Integer, boolean and string inputs: ``ids`` int32 [batch, 3], ``flag`` bool [batch],
    ``tag`` string [batch] → ``total`` int64 [batch], ``flag_out`` bool, ``tag_out`` string."""

    def load(self) -> None:
        self.signature = Signature(
            inputs=(
                TensorSpec("ids", "int32", (None, 3)),
                TensorSpec("flag", "bool", (None,)),
                TensorSpec("tag", "object", (None,)),
            ),
            outputs=(
                TensorSpec("total", "int64", (None,)),
                TensorSpec("flag_out", "bool", (None,)),
                TensorSpec("tag_out", "object", (None,)),
            ),
        )

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {
            "total": inputs["ids"].astype(np.int64).sum(axis=1),
            "flag_out": inputs["flag"].copy(),
            "tag_out": inputs["tag"].copy(),
        }


def _loaded(backend: Backend) -> Scorer:
    return Scorer(backend, scoring_config(warmup=False)).start()


@pytest.fixture(scope="module")
def scorers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Scorer]]:
    root = tmp_path_factory.mktemp("openapi")
    made = {
        "echo": _loaded(EchoBackend(root / "echo.echo")),
        "image": _loaded(EncodedImageBackend(root / "image.img")),
        "mixed": _loaded(MixedBackend(root / "mixed.bin")),
    }
    yield made
    for scorer in made.values():
        scorer.close()


@pytest.mark.parametrize("kind", sorted(SWAGGER_FILES))
@pytest.mark.parametrize("model", ["echo", "image", "mixed"])
@pytest.mark.parametrize("auth", [False, True])
def test_documents_are_valid_openapi(
    scorers: dict[str, Scorer], model: str, kind: str, auth: bool
) -> None:
    document = api_document(ApiFacts.for_scorer(scorers[model], auth=auth), kind)
    validate(document)  # openapi-spec-validator: 2.0, 3.0 and 3.1 by the document's own field
    assert document.get("openapi", document.get("swagger", "")).startswith(kind[0])
    assert ("securitySchemes" in document.get("components", {})) == (auth and kind != "2.0")


def test_the_document_says_what_the_model_takes_and_gives(scorers: dict[str, Scorer]) -> None:
    image = api_document(ApiFacts.for_scorer(scorers["image"]), "3.0")
    score = image["paths"]["/score"]["post"]
    assert set(score["requestBody"]["content"]) == {"application/json", "image/jpeg", "image/png"}
    assert "'image'" in score["description"]
    schemas = image["components"]["schemas"]
    tensor = schemas["ScoreRequest"]["properties"]["inputs"]["anyOf"][0]["properties"]["image"]
    batched = tensor["anyOf"][0]
    # [batch, 16, 16, 3] float32 as nested arrays with the fixed sizes
    assert batched["items"]["minItems"] == batched["items"]["maxItems"] == 16
    assert batched["items"]["items"]["items"]["maxItems"] == 3
    assert batched["items"]["items"]["items"]["items"] == {"type": "number"}
    # a classifier (the sample package's): top-k of its output, with labels
    classifier = api_document(ApiFacts.for_package(sample_spec()), "3.0")
    response = classifier["components"]["schemas"]["ScoreResponse"]
    entry = response["properties"]["predictions"]["items"]["properties"]
    assert entry["top_k"]["items"]["properties"]["label"] == {"type": "string"}
    assert response["required"] == ["predictions"]

    mixed = api_document(ApiFacts.for_scorer(scorers["mixed"]), "3.0")
    assert set(mixed["paths"]["/score"]["post"]["requestBody"]["content"]) == {"application/json"}
    inputs = mixed["components"]["schemas"]["ScoreRequest"]["properties"]["inputs"]["properties"]
    assert inputs["ids"]["anyOf"][0]["items"]["items"] == {
        "type": "integer",
        "minimum": -(2**31),
        "maximum": 2**31 - 1,
    }
    assert inputs["flag"]["anyOf"][0]["items"] == {"type": "boolean"}
    assert inputs["tag"]["anyOf"][0]["items"] == {"type": "string"}
    outputs = mixed["components"]["schemas"]["ScoreResponse"]
    assert outputs["required"] == ["outputs"]  # no classifier: the raw outputs, always


def test_every_error_status_lists_its_codes() -> None:
    codes = error_codes_by_status()
    assert {"queue_full", "not_ready"} <= set(codes[503])
    assert "timeout" in codes[504]
    assert {"invalid_json", "invalid_tensor", "invalid_image", "empty_body"} <= set(codes[400])
    assert {"body_too_large", "image_too_large"} <= set(codes[413])
    assert {"predict_error", "internal_error"} <= set(codes[500])
    # codes only the CLI sees are not a client's business
    assert not any("deploy_error" in c or "plugin_error" in c for c in codes.values())


def test_swagger_json_is_served_with_azmlinfsrvs_versions(tmp_path: Path) -> None:
    with serving(EchoBackend(tmp_path / "m.echo"), auth_keys=("k",)) as served:
        default = served.client.get("/swagger.json")
        three = served.client.get("/swagger.json", params={"version": "3"})
        three_one = served.client.get("/swagger.json", params={"version": "3.1"})
        unknown = served.client.get("/swagger.json", params={"version": "9"})
        facts = ApiFacts.for_scorer(served.scorer, auth=True)
    assert default.status_code == 200 and default.json()["swagger"] == "2.0"
    assert three.json() == api_document(facts, "3.0")
    assert three_one.json()["openapi"] == "3.1.0"
    assert unknown.status_code == 404
    # keys are required for /score, and the document says so
    assert three.json()["paths"]["/score"]["post"]["security"] == [{"Bearer": []}]


def test_a_package_carries_the_document_where_azmlinfsrv_reads_it() -> None:
    spec = sample_spec()
    files = render(spec)
    for kind, name in SWAGGER_FILES.items():
        import json

        document = json.loads(files[name])
        assert document == api_document(ApiFacts.for_package(spec), kind)
        validate(document)
    three = json.loads(files["swagger3.json"])
    # azmlinfsrv's routes only: no /health/ready, /info or /metrics there
    assert set(three["paths"]) == {"/", "/score", "/swagger.json"}
    # Azure ML checks keys at the endpoint
    assert three["paths"]["/score"]["post"]["security"] == [{"Bearer": []}]


# --- schemathesis ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundServer]:
    root = tmp_path_factory.mktemp("fuzz")
    scorer = Scorer(MixedBackend(root / "mixed.bin"), scoring_config(max_delay_ms=0))
    with BackgroundServer(scorer) as server:
        yield server


@pytest.mark.parametrize("mode", MODES)
def test_fuzz_the_embedded_server_from_its_document(fuzzed: BackgroundServer, mode: str) -> None:
    """Requests generated from the served document (valid ones, then ones that break it),
    to ``/score`` and to every V2 REST route: never a 5xx, and valid ones get the
    statuses, content types and bodies it promises (:func:`fuzz_helpers.fuzz_from_document`,
    30 examples per operation, and the document's examples)."""
    operations, answered = fuzz_from_document(fuzzed.url, mode, max_examples=30)
    # Azure ML's routes and the V2 REST routes (scorepack.openapi_v2) alike
    assert operations >= {
        "POST /score",
        "GET /",
        "POST /v2/models/{name}/infer",
        "POST /v2/models/{name}/versions/{version}/infer",
        "GET /v2/models/{name}",
        "POST /v2/repository/index",
        "POST /v2/repository/models/{name}/load",
    }
    # the fuzzing reached the model: valid bodies were scored, invalid ones refused
    for route in ("/score", "/v2/models/{name}/infer"):
        scored = total(answered, "scorepack_requests_total", route=route, status="200")
        refused = total(answered, "scorepack_requests_total", route=route, status="400")
        assert scored > 0 and refused > 0, (route, answered)
