"""The scoring API of one model as OpenAPI, generated from its real signature.

:func:`api_document` is pure: the same :class:`ApiFacts` always give the same document.
The embedded server serves it at ``/swagger.json``, and a package carries it as the files
azmlinfsrv serves in place of its generic one — so both hosts describe the same API:

    /swagger.json              Swagger 2.0  (azmlinfsrv's default)   package: swagger.json
    /swagger.json?version=3    OpenAPI 3.0                           package: swagger3.json
    /swagger.json?version=3.1  OpenAPI 3.1                           package: swagger3.1.json

What it says comes from the model and the scoring settings: which image types go to which
input, the JSON tensors (names, nested-array shapes, dtypes with their ranges), the
response (top-k of the classifier output, raw outputs), the query parameters, and every
error status with the codes that can come with it (taken from the one error table).

Several models (a repository, or a package of several): one document for them all.
``/score`` takes ``model`` (required with several names; an enum of them) and, where
models have versions, ``version``; each model has its own ``ScoreRequest.KEY`` and
``ScoreResponse.KEY`` schemas (KEY is the name, ``NAME.VERSION`` with a version), and
``ScoreRequest``/``ScoreResponse`` are ``anyOf`` them. anyOf, not oneOf: two models with
one signature accept the same body, and oneOf would then refuse it (exactly one must
match); Swagger UI and Redoc render both alike, an alternative per schema by its title.
OpenAPI cannot tie a body schema to a query value, so the description says which model
takes what. Swagger 2.0 has no anyOf: there the body is an object, and the per-model
definitions are listed beside it.

The embedded server's document also holds its V2 REST routes (:mod:`scorepack.openapi_v2`,
which says why they are served again at MLServer's dataplane paths); azmlinfsrv serves no
V2, so a package's document has none.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from . import errors
from .repository import version_key
from .signature import Signature, TensorSpec

__all__ = [
    "SWAGGER_FILES",
    "SWAGGER_VERSIONS",
    "ApiFacts",
    "api_document",
    "error_codes_by_status",
    "model_key",
    "package_facts",
]

#: ``?version=`` values azmlinfsrv accepts → the document kind
SWAGGER_VERSIONS: Mapping[str, str] = {
    "2": "2.0",
    "2.0": "2.0",
    "3": "3.0",
    "3.0": "3.0",
    "3.1": "3.1",
}
#: the file azmlinfsrv reads from the app root for each document kind (server/swagger.py)
SWAGGER_FILES: Mapping[str, str] = {
    "2.0": "swagger.json",
    "3.0": "swagger3.json",
    "3.1": "swagger3.1.json",
}

_IMAGE_TYPES = ("image/jpeg", "image/png")
# statuses /score can answer, and the errors of the tree that belong to each; codes that
# only the CLI sees (plugins, packages, deployment) never reach a client
_REQUEST_ERRORS: tuple[type[errors.ScorepackError], ...] = (
    errors.RequestError,
    errors.ServiceUnavailableError,
    errors.ScoringTimeoutError,
    errors.PredictError,
    errors.BackendContractError,
)
_STATUS_TEXT = {
    400: "The request is malformed: the body, a tensor or a query parameter (see the code).",
    401: "No key, or a wrong one: send 'Authorization: Bearer KEY'.",
    404: "No such route.",
    405: "The route does not take this method (see the Allow header).",
    413: "The body or the image is larger than the server accepts.",
    415: "The content type is not an image type or JSON.",
    431: "A request header is too large.",
    500: "The model failed on input that passed validation.",
    503: "The queue is full or the model is not ready: retry after Retry-After seconds.",
    504: "The request was not scored within the server's timeout.",
}


@dataclass(frozen=True)
class ApiFacts:
    """What the document is generated from; build it with :meth:`for_scorer` or
    :meth:`for_package` so that both hosts describe one API."""

    name: str
    signature: Signature
    #: the input images go to, when the model takes a single image input
    image_input: str | None
    #: the output top-k is taken from, when the model is a classifier
    classifier: str | None
    top_k: int
    labels: bool
    version: str | None = None
    #: "embedded" (scorepack serve) or "azureml" (azmlinfsrv)
    host: str = "embedded"
    #: keys are checked: by the embedded server when given, by Azure ML at the endpoint
    auth: bool = False
    max_body_bytes: int | None = None
    #: the server's --model-control (embedded): whether V2 load/unload can succeed
    model_control: str = "none"
    #: the embedded server serves /metrics (not with --no-metrics)
    metrics: bool = True

    @classmethod
    def for_scorer(
        cls,
        scorer: Any,
        *,
        auth: bool = False,
        model_control: str = "none",
        metrics: bool = True,
    ) -> ApiFacts:
        """The facts of a loaded :class:`~scorepack.scorer.Scorer` (embedded server)."""
        signature = scorer.signature
        plan = scorer.image_plan
        single = plan is not None and len(signature.inputs) == 1
        return cls(
            name=scorer.name,
            signature=signature,
            image_input=plan.input if single else None,
            classifier=scorer.output_plan.classifier,
            top_k=scorer.output_plan.top_k,
            labels=scorer.output_plan.labels is not None,
            version=getattr(scorer, "version", None),
            host="embedded",
            auth=auth,
            max_body_bytes=scorer.config.max_body_bytes,
            model_control=model_control,
            metrics=metrics,
        )

    @classmethod
    def for_package(cls, spec: Any) -> ApiFacts:
        """The facts of a :class:`~scorepack.generator.spec.PackageSpec` of one model
        (azmlinfsrv); see :func:`package_facts` for a package of several."""
        from .postprocess import plan_outputs
        from .preprocess import plan_image

        try:
            plan = plan_image(spec.signature, spec.config.preprocess)
        except ValueError:
            plan = None  # the package README says images cannot be scored
        try:
            out = plan_outputs(spec.signature, spec.config.postprocess)
            classifier, top_k = out.classifier, out.top_k
        except ValueError:
            classifier, top_k = None, spec.config.postprocess.top_k
        return cls(
            name=spec.name,
            signature=spec.signature,
            image_input=plan.input
            if plan is not None and len(spec.signature.inputs) == 1
            else None,
            classifier=classifier,
            top_k=top_k,
            labels=spec.config.postprocess.labels is not None,
            version=None,
            host="azureml",
            auth=bool(spec.deployment.auth_enabled),
            max_body_bytes=spec.config.max_body_bytes,
        )


def package_facts(spec: Any) -> list[ApiFacts]:
    """The facts of every model of a package: one, or each of several (with the package's
    own deployment settings, which decide whether Azure ML checks keys)."""
    if not spec.models:
        return [ApiFacts.for_package(spec)]
    auth = bool(spec.deployment.auth_enabled)
    return [replace(ApiFacts.for_package(model), auth=auth) for model in spec.models]


def api_document(
    facts: ApiFacts | Sequence[ApiFacts], kind: str = "3.0", *, title: str | None = None
) -> dict[str, Any]:
    """The API document of ``kind`` ("2.0", "3.0" or "3.1"; see :data:`SWAGGER_VERSIONS`)
    for one model, or one document for several (``title`` names them: a package's name)."""
    if kind not in SWAGGER_FILES:
        raise ValueError(f"unknown document kind {kind!r}; choose from {sorted(SWAGGER_FILES)}")
    models = [facts] if isinstance(facts, ApiFacts) else list(facts)
    if not models:
        raise ValueError("an API document needs at least one model")
    document = _openapi3(models[0]) if len(models) == 1 else _openapi3_several(models, title)
    if kind == "3.1":
        document["openapi"] = "3.1.0"
        return _nullable_31(document)
    if kind == "2.0":
        return _swagger2(document)
    return document


def error_codes_by_status() -> dict[int, list[str]]:
    """Every error code a scoring request can get, by HTTP status, from the error tree."""
    from .server.errors import STATUS_BY_ERROR

    found: dict[int, set[str]] = {}
    for cls in _subclasses(errors.ScorepackError):
        if not issubclass(cls, _REQUEST_ERRORS):
            continue
        status = next(s for base, s in STATUS_BY_ERROR if issubclass(cls, base))
        found.setdefault(status, set()).add(cls.code)
    found.setdefault(500, set()).add("internal_error")  # anything unexpected
    return {status: sorted(codes) for status, codes in sorted(found.items())}


def _subclasses(cls: type) -> Iterator[type]:
    yield cls
    for sub in cls.__subclasses__():
        yield from _subclasses(sub)


# --- OpenAPI 3 ---------------------------------------------------------------------------


def _openapi3(facts: ApiFacts) -> dict[str, Any]:
    title = facts.name + (f" (version {facts.version})" if facts.version else "")
    host = "scorepack's embedded server" if facts.host == "embedded" else "azmlinfsrv"
    paths: dict[str, Any] = {
        "/": {"get": _liveness()},
        "/score": {"post": _score(facts)},
        "/swagger.json": {"get": _swagger_route(embedded=facts.host == "embedded")},
    }
    schemas = _schemas(facts)
    if facts.host == "embedded":
        paths["/health/ready"] = {"get": _ready()}
        paths["/info"] = {"get": _info(facts)}
        if facts.metrics:
            paths["/metrics"] = {"get": _metrics(facts.auth)}
        _add_v2(paths, schemas, [facts])
    document: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {
            "title": title,
            "description": (
                f"Scoring API of the model {facts.name!r}, served by {host}. Generated by "
                "scorepack from the model's signature."
            ),
            "version": facts.version or "1",
        },
        "paths": paths,
        "components": {"schemas": schemas},
    }
    if facts.auth:
        document["components"]["securitySchemes"] = _bearer()
    return document


def _bearer() -> dict[str, Any]:
    # as azmlinfsrv's own document names it
    return {
        "Bearer": {
            "type": "apiKey",
            "name": "Authorization",
            "in": "header",
            "description": "For example: Bearer abc123",
        }
    }


def _openapi3_several(models: Sequence[ApiFacts], title: str | None) -> dict[str, Any]:
    first = models[0]
    auth = any(m.auth for m in models)
    names = sorted({m.name for m in models})
    host = "scorepack's embedded server" if first.host == "embedded" else "azmlinfsrv"
    paths: dict[str, Any] = {
        "/": {"get": _liveness()},
        "/score": {"post": _score_several(models, auth)},
        "/swagger.json": {"get": _swagger_route(names)},
    }
    schemas: dict[str, Any] = {}
    if first.host == "embedded":
        paths["/health/ready"] = {"get": _ready()}
        paths["/info"] = {"get": _info(replace(first, auth=auth))}
        if first.metrics:
            paths["/metrics"] = {"get": _metrics(auth)}
        _add_v2(paths, schemas, models)
    requests, responses = [], []
    for facts in models:
        key = model_key(facts)
        own = _schemas(facts)
        label = f"model {facts.name!r}" + (f" version {facts.version}" if facts.version else "")
        schemas[f"ScoreRequest.{key}"] = {"title": label, **own["ScoreRequest"]}
        schemas[f"ScoreResponse.{key}"] = {"title": label, **own["ScoreResponse"]}
        requests.append(_ref(f"ScoreRequest.{key}"))
        responses.append(_ref(f"ScoreResponse.{key}"))
    schemas["ScoreRequest"] = {
        "anyOf": requests,
        "description": "The body the model ?model= names takes (ScoreRequest.NAME).",
    }
    schemas["ScoreResponse"] = {
        "anyOf": responses,
        "description": "The answer of the model ?model= names (ScoreResponse.NAME).",
    }
    quoted = ", ".join(repr(n) for n in names)
    document: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {
            "title": title or ", ".join(names),
            "description": (
                f"Scoring API of the models {quoted}, served by {host}: /score?model=NAME "
                "picks one. Generated by scorepack from the models' signatures."
            ),
            "version": "1",
        },
        "paths": paths,
        "components": {"schemas": dict(sorted(schemas.items()))},
    }
    if auth:
        document["components"]["securitySchemes"] = _bearer()
    return document


def _add_v2(paths: dict[str, Any], schemas: dict[str, Any], models: Sequence[ApiFacts]) -> None:
    """The embedded server's V2 REST routes (azmlinfsrv serves none): scorepack.openapi_v2."""
    from .openapi_v2 import v2_paths

    v2, v2_schemas = v2_paths(models)
    paths.update(v2)
    schemas.update(v2_schemas)


def model_key(facts: ApiFacts) -> str:
    """The model's part of its schema names: NAME, or NAME.VERSION (OpenAPI's component
    names allow letters, digits, ``.``, ``-`` and ``_`` only)."""
    key = facts.name + (f".{facts.version}" if facts.version else "")
    return re.sub(r"[^A-Za-z0-9._-]", "_", key)


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error_response(status: int, codes: list[str]) -> dict[str, Any]:
    schema = {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string", "enum": codes},
                    "message": {"type": "string"},
                },
            }
        },
    }
    response: dict[str, Any] = {
        "description": _STATUS_TEXT.get(status, "An error."),
        "content": _json(schema),
    }
    if status == 503:
        response["headers"] = {
            "Retry-After": {
                "description": "Seconds to wait before retrying.",
                "schema": {"type": "integer", "minimum": 1},
            }
        }
    return response


def _errors(statuses: tuple[int, ...]) -> dict[str, Any]:
    codes = error_codes_by_status()
    return {str(s): _error_response(s, codes.get(s, [])) for s in statuses if s in codes}


def _liveness() -> dict[str, Any]:
    return {
        "operationId": "ServiceHealthCheck",
        "description": "Liveness: answers 'Healthy' while the server is up, loaded or not.",
        "responses": {
            "200": {
                "description": "The server is up.",
                "content": {"text/plain": {"schema": {"type": "string", "example": "Healthy"}}},
            }
        },
    }


def _ready() -> dict[str, Any]:
    return {
        "operationId": "ServiceReady",
        "description": "Readiness: 200 once the model is loaded and warmed up.",
        "responses": {
            "200": {
                "description": "Ready to score.",
                "content": _json(
                    {
                        "type": "object",
                        "required": ["status"],
                        "properties": {"status": {"type": "string"}, "model": {"type": "string"}},
                    }
                ),
            },
            **_errors((503,)),
        },
    }


def _info(facts: ApiFacts) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": "ServiceInfo",
        "description": "What is served: backend, device, signature, preprocessing.",
        "responses": {
            "200": {"description": "The description.", "content": _json({"type": "object"})},
            **_errors((401,) if facts.auth else ()),
        },
    }
    if facts.auth:
        operation["security"] = [{"Bearer": []}]
    return operation


def _metrics(auth: bool) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": "ServiceMetrics",
        "description": "Prometheus metrics (text exposition format).",
        "responses": {
            "200": {
                "description": "The metrics.",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            },
            # protected like /info when keys are set
            **_errors((401,) if auth else ()),
        },
    }
    if auth:
        operation["security"] = [{"Bearer": []}]
    return operation


def _swagger_route(names: Sequence[str] = (), *, embedded: bool = False) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {
            "name": "version",
            "in": "query",
            "required": False,
            "description": "The document's kind (azmlinfsrv's parameter, not a model version).",
            "schema": {"type": "string", "enum": sorted(SWAGGER_VERSIONS)},
        }
    ]
    description = "This document: Swagger 2.0 by default, OpenAPI 3 with ?version=3."
    if names:
        description += " ?model=NAME (and ?model_version=V) gives one model's document."
        parameters += [
            {
                "name": "model",
                "in": "query",
                "required": False,
                "description": "Only this model's document.",
                "schema": {"type": "string", "enum": list(names)},
            },
            {
                "name": "model_version",
                "in": "query",
                "required": False,
                "description": "With model: that version's document (default: the highest).",
                "schema": {"type": "string"},
            },
        ]
    missing: dict[str, Any] = {
        "404": {"description": "No document of that version.", "content": _json({"type": "object"})}
    }
    if names:
        # no such model or version (404), a version without the model (400), loading (503)
        missing = _errors((400, 404, 503))
    elif embedded:
        # the embedded server's model loading, or unloaded (explicit model control)
        missing.update(_errors((503,)))
    return {
        "operationId": "GetSwaggerSpec",
        "description": description,
        "parameters": parameters,
        "responses": {
            "200": {"description": "The document.", "content": _json({"type": "object"})},
            **missing,
        },
    }


def _score(facts: ApiFacts) -> dict[str, Any]:
    content: dict[str, Any] = {"application/json": {"schema": _ref("ScoreRequest")}}
    images = ""
    if facts.image_input is not None:
        for media in _IMAGE_TYPES:
            content[media] = {"schema": {"type": "string", "format": "binary"}}
        images = (
            f" An image (JPEG or PNG; application/octet-stream is sniffed) goes to the input "
            f"{facts.image_input!r}, resized and normalised by the server."
        )
    limit = f" Bodies up to {facts.max_body_bytes} bytes." if facts.max_body_bytes else ""
    statuses = (400, 401, 413, 415, 500, 503, 504) if facts.auth else (400, 413, 415, 500, 503, 504)
    return _score_operation(
        "Score one request: JSON tensors, batch first." + images + limit,
        _scoring_parameters(),
        content,
        statuses,
        facts.auth,
    )


def _score_several(models: Sequence[ApiFacts], auth: bool) -> dict[str, Any]:
    names = sorted({m.name for m in models})
    versions = sorted({m.version for m in models if m.version}, key=version_key)
    content: dict[str, Any] = {"application/json": {"schema": _ref("ScoreRequest")}}
    lines = []
    for facts in models:
        line = f"{facts.name!r}" + (f" version {facts.version}" if facts.version else "")
        line += f": ScoreRequest.{model_key(facts)}"
        if facts.image_input is not None:
            line += f", or an image for its input {facts.image_input!r}"
        if facts.max_body_bytes:
            line += f"; bodies up to {facts.max_body_bytes} bytes"
        lines.append(line + ".")
    if any(m.image_input is not None for m in models):
        for media in _IMAGE_TYPES:
            content[media] = {"schema": {"type": "string", "format": "binary"}}
    several = len(names) > 1
    parameters: list[dict[str, Any]] = [
        {
            "name": "model",
            "in": "query",
            "required": several,
            "description": "The model that scores the request"
            + (" (required: this server scores several)." if several else "."),
            "schema": {"type": "string", "enum": names},
        }
    ]
    if versions:
        parameters.append(
            {
                "name": "version",
                "in": "query",
                "required": False,
                "description": "A version of the model (default: the highest that is ready).",
                "schema": {"type": "string", "enum": versions},
            }
        )
    description = (
        "Score one request with the model ?model= names: JSON tensors, batch first, as "
        "that model's ScoreRequest.NAME says (JPEG or PNG images where it takes them; "
        "application/octet-stream is sniffed). " + " ".join(lines)
    )
    statuses = (
        (400, 401, 404, 413, 415, 500, 503, 504) if auth else (400, 404, 413, 415, 500, 503, 504)
    )
    return _score_operation(
        description, parameters + _scoring_parameters(), content, statuses, auth
    )


def _scoring_parameters() -> list[dict[str, Any]]:
    return [
        {
            "name": "top_k",
            "in": "query",
            "required": False,
            "description": "How many classes each prediction lists.",
            "schema": {"type": "integer", "minimum": 1},
        },
        {
            "name": "raw",
            "in": "query",
            "required": False,
            "description": "Add the raw outputs to the response.",
            "schema": {"type": "string", "enum": ["true", "false", "1", "0", "yes", "no"]},
        },
    ]


def _score_operation(
    description: str,
    parameters: list[dict[str, Any]],
    content: dict[str, Any],
    statuses: tuple[int, ...],
    auth: bool,
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": "RunMLService",
        "description": description,
        "parameters": parameters,
        "requestBody": {"required": True, "content": content},
        "responses": {
            "200": {
                "description": "Scored.",
                "headers": {
                    "x-scorepack-batch-size": {
                        "description": "Rows in the model call this request rode in.",
                        "schema": {"type": "integer"},
                    }
                },
                "content": _json(_ref("ScoreResponse")),
            },
            **_errors(statuses),
        },
    }
    if auth:
        operation["security"] = [{"Bearer": []}]
    return operation


def _schemas(facts: ApiFacts) -> dict[str, Any]:
    signature = facts.signature
    inputs = {s.name: _tensor_schema(s, optional_batch=True) for s in signature.inputs}
    named = {
        "type": "object",
        "required": [s.name for s in signature.inputs],
        "properties": inputs,
        "additionalProperties": False,
    }
    if len(signature.inputs) == 1:
        only = signature.inputs[0]
        tensors: dict[str, Any] = {
            "anyOf": [named, _tensor_schema(only, optional_batch=False)],
            "description": f"Named tensors, or the one input {only.name!r} as an array.",
        }
    else:
        tensors = named
    outputs = {
        s.name: _tensor_schema(s, optional_batch=False, output=True) for s in signature.outputs
    }
    response: dict[str, Any] = {"type": "object", "properties": {}}
    if facts.classifier is not None:
        entry: dict[str, Any] = {
            "type": "object",
            "required": ["index", "score"],
            "properties": {"index": {"type": "integer"}, "score": _NON_FINITE_NULL},
        }
        if facts.labels:
            entry["properties"]["label"] = {"type": "string"}
        response["properties"]["predictions"] = {
            "type": "array",
            "description": (
                f"One entry per input row: the top {facts.top_k} classes of "
                f"{facts.classifier!r} (?top_k= changes it), best first."
            ),
            "items": {
                "type": "object",
                "required": ["top_k"],
                "properties": {"top_k": {"type": "array", "items": entry}},
            },
        }
        response["required"] = ["predictions"]
    response["properties"]["outputs"] = {
        "type": "object",
        "description": "The raw outputs"
        + (" (with ?raw=true)." if facts.classifier is not None else "."),
        "required": [s.name for s in signature.outputs],
        "properties": outputs,
    }
    if facts.classifier is None:
        response["required"] = ["outputs"]
    return {
        "ScoreRequest": {
            "type": "object",
            "required": ["inputs"],
            "properties": {"inputs": tensors},
            "additionalProperties": False,
        },
        "ScoreResponse": response,
    }


#: a float the server writes: JSON has no inf or NaN, so a value that is not finite (an
#: overflow, a model's NaN) is written null
_NON_FINITE_NULL: dict[str, Any] = {
    "type": "number",
    "nullable": True,
    "description": "null where the value is not finite (inf, NaN)",
}


def _element(dtype: str, *, output: bool = False) -> dict[str, Any]:
    kind = np.dtype(dtype).kind if dtype != "bfloat16" else "f"
    if kind in "fc" and output:
        return dict(_NON_FINITE_NULL)
    if kind == "b":
        return {"type": "boolean"}
    if kind in "iu":
        info = np.iinfo(np.dtype(dtype))
        return {"type": "integer", "minimum": int(info.min), "maximum": int(info.max)}
    if kind in "fc":
        return {"type": "number"}
    return {"type": "string"}


def _nested(element: dict[str, Any], dims: tuple[int | None, ...]) -> dict[str, Any]:
    schema = element
    for dim in reversed(dims):
        array: dict[str, Any] = {"type": "array", "items": schema}
        if dim is not None:
            array["minItems"] = dim
            array["maxItems"] = dim
        schema = array
    return schema


def _tensor_schema(
    spec: TensorSpec, *, optional_batch: bool, output: bool = False
) -> dict[str, Any]:
    element = _element(spec.dtype, output=output)
    described = f"{spec.dtype} {spec.shape_text()}"
    if not spec.batched:
        return {**_nested(element, spec.shape), "description": described}
    batch = spec.shape[0]
    batched = _nested(element, spec.shape[1:])
    batched = {"type": "array", "items": batched, "minItems": batch or 1}
    if batch is not None:
        batched["maxItems"] = batch
    if not optional_batch:
        return {**batched, "description": described}
    row = _nested(element, spec.item_shape)
    return {
        "anyOf": [batched, row],
        "description": f"{described}; one row may leave the batch dimension out.",
    }


def _nullable_31(schema: Any) -> Any:
    """OpenAPI 3.1 schemas are JSON Schema: ``nullable`` (3.0) becomes a type list."""
    if isinstance(schema, list):
        return [_nullable_31(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _nullable_31(v) for k, v in schema.items() if k != "nullable"}
    if schema.get("nullable") is True and isinstance(schema.get("type"), str):
        out["type"] = [schema["type"], "null"]
    return out


# --- Swagger 2.0, from the OpenAPI 3 document ---------------------------------------------


def _swagger2(openapi: dict[str, Any]) -> dict[str, Any]:
    """The same API in Swagger 2.0 terms (azmlinfsrv's default document).

    Swagger 2.0 has no anyOf and one body schema per operation: a tensor takes its
    batched form, and the image types are listed under ``consumes``.
    """
    document: dict[str, Any] = {
        "swagger": "2.0",
        "info": openapi["info"],
        "produces": ["application/json"],
        "paths": {},
        "definitions": {
            name: _v2_schema(schema) for name, schema in openapi["components"]["schemas"].items()
        },
    }
    schemes = openapi["components"].get("securitySchemes")
    if schemes:
        document["securityDefinitions"] = copy.deepcopy(schemes)
    for path, operations in openapi["paths"].items():
        document["paths"][path] = {
            method: _v2_operation(operation) for method, operation in operations.items()
        }
    return document


def _v2_operation(operation: dict[str, Any]) -> dict[str, Any]:
    kept = ("operationId", "tags", "security")
    out = {k: copy.deepcopy(v) for k, v in operation.items() if k in kept}
    out["description"] = operation["description"]
    parameters = []
    for parameter in operation.get("parameters", ()):
        # Swagger 2.0 parameters have no examples
        flat = {k: v for k, v in parameter.items() if k not in ("schema", "example", "examples")}
        flat.update(_v2_schema(parameter["schema"]))
        parameters.append(flat)
    body = operation.get("requestBody")
    if body is not None:
        out["consumes"] = list(body["content"])
        parameters.append(
            {
                "name": "body",
                "in": "body",
                "required": bool(body.get("required", False)),
                "schema": _v2_schema(body["content"]["application/json"]["schema"]),
            }
        )
    if parameters:
        out["parameters"] = parameters
    responses = {}
    produces: list[str] = []
    for status, response in operation["responses"].items():
        converted: dict[str, Any] = {"description": response["description"]}
        for media, item in response.get("content", {}).items():
            # one schema per response in Swagger 2.0: the first (JSON) one's
            converted.setdefault("schema", _v2_schema(item["schema"]))
            if media not in produces:
                produces.append(media)
        if "headers" in response:
            converted["headers"] = {
                name: {"description": h["description"], **_v2_schema(h["schema"])}
                for name, h in response["headers"].items()
            }
        responses[status] = converted
    out["produces"] = produces or ["application/json"]
    out["responses"] = responses
    return out


def _v2_schema(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_v2_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    if "anyOf" in schema and all("$ref" in s for s in schema["anyOf"]):
        # several models' bodies: Swagger 2.0 cannot offer a choice; what each model
        # takes is in its own definition (ScoreRequest.NAME)
        names = ", ".join(s["$ref"].rsplit("/", 1)[-1] for s in schema["anyOf"])
        return {
            "type": "object",
            "description": f"{schema.get('description', '')} One of: {names}.".strip(),
        }
    if "anyOf" in schema and all("title" in s for s in schema["anyOf"]):
        # V2 inputs or outputs of several names (scorepack.openapi_v2): no choice in 2.0
        titles = ", ".join(s["title"] for s in schema["anyOf"])
        return {"type": "object", "description": f"One of: {titles}."}
    if "anyOf" in schema:
        first = dict(_v2_schema(schema["anyOf"][0]))
        if "description" in schema:
            first["description"] = schema["description"]
        return first
    out = {}
    for key, value in schema.items():
        if key == "$ref":
            out[key] = value.replace("#/components/schemas/", "#/definitions/")
        elif key == "nullable":
            out["x-nullable"] = value  # Swagger 2.0 has no null: the common extension
        else:
            out[key] = _v2_schema(value)
    return out
