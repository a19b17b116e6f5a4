"""The Open Inference Protocol's REST routes (V2) as OpenAPI 3, from the models' signatures.

The embedded server serves V2 REST beside ``/score`` (``server/routes_v2.py``), and its
API document says so: :func:`v2_paths` gives the V2 part of the server's document
(``/swagger.json``; :mod:`scorepack.openapi` adds it for the embedded host, azmlinfsrv
serves no V2), and the same operations are also served where MLServer serves its
dataplane document, so a user coming from MLServer finds them where they look:

    GET /v2/docs/dataplane.json                                  every model's V2 routes
    GET /v2/models/{name}[/versions/{v}]/docs/dataplane.json     one model's, paths filled in

:func:`dataplane_document` and :func:`model_dataplane_document` make those two. Why both
the server's document and one per model: the server's is what a client generator and
schemathesis take (one document, every route the server answers, ``{name}`` an enum of
the models); a model's own (MLServer's per-model document) has its name and version
written into the paths, so its infer body is that model's alone — with several models,
the server's infer body can only be ``anyOf`` the models' bodies, as ``/score``'s is.

What the model decides, from its signature as V2 model metadata states it (names,
datatypes, shapes with -1 for any size): each infer input's ``name``, ``datatype`` (BF16
also where the model takes FP32: it widens exactly), the number of ``shape`` dimensions
and the ``data`` (nested as the shape says, or flat), each output's name and datatype,
and an example request of one row. Every operation lists the statuses the route really
answers with, errors as V2 writes them (``{"error": "message"}``); JSON Schema cannot
tie ``data`` to ``shape``, so a body that follows the schema may still be a 400 that says
which. The binary tensor extension is the ``application/octet-stream`` body (and
response) with the ``Inference-Header-Content-Length`` header.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from .openapi import (
    _STATUS_TEXT,
    ApiFacts,
    _bearer,
    _element,
    _json,
    _nested,
    _ref,
    model_key,
)
from .repository import version_key
from .signature import TensorSpec
from .v2.datatypes import DATATYPES, datatype_of
from .v2.metadata import EXTENSIONS

__all__ = [
    "DATAPLANE_PATH",
    "dataplane_document",
    "model_dataplane_document",
    "model_dataplane_path",
    "v2_paths",
]

#: where MLServer serves its dataplane document (and so does scorepack)
DATAPLANE_PATH = "/v2/docs/dataplane.json"
_HEADER = "Inference-Header-Content-Length"
_V2_TEXT = {
    **_STATUS_TEXT,
    400: "The request is malformed (the message says what): the body, a tensor, a datatype "
    "or shape that disagrees with the model, or an action this server does not allow.",
    404: "No such model or version (the message names those served).",
    408: "The body stopped arriving before the server's read timeout.",
    413: "The body is larger than the server accepts.",
    415: "The body is compressed, or not JSON nor binary tensors (see the description).",
    500: "The model failed on input that passed validation (or a model failed to load).",
    503: "The model is not ready, or the queue is full: retry after Retry-After seconds.",
}


def _error(status: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": _V2_TEXT.get(status, "An error."),
        "content": _json(_ref("V2Error")),
    }
    if status == 503:
        response["headers"] = {
            "Retry-After": {
                "description": "Seconds to wait before retrying (when the queue is full).",
                "schema": {"type": "integer", "minimum": 1},
            }
        }
    return response


class _Builder:
    """The V2 operations of one document: ``fixed`` writes a model's name and version into
    the paths (a model's own document); otherwise they are path parameters."""

    def __init__(self, models: Sequence[ApiFacts], fixed: ApiFacts | None = None) -> None:
        self.models = list(models)
        self.fixed = fixed
        self.auth = any(m.auth for m in self.models)
        self.explicit = any(m.model_control == "explicit" for m in self.models)
        self.names = sorted({m.name for m in self.models})
        self.versions = sorted({m.version for m in self.models if m.version}, key=version_key)

    # --- pieces ------------------------------------------------------------------------

    def operation(
        self,
        operation_id: str,
        description: str,
        ok: dict[str, Any],
        statuses: Sequence[int],
        *,
        keyed: bool = False,
        parameters: Sequence[dict[str, Any]] = (),
        body: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """An operation; ``keyed`` ones check the key when the server has keys (401)."""
        codes = sorted(set(statuses) | ({401} if keyed and self.auth else set()))
        operation: dict[str, Any] = {
            "operationId": operation_id,
            "tags": ["v2"],
            "description": description,
            "responses": {"200": ok, **{str(s): _error(s) for s in codes}},
        }
        if parameters:
            operation["parameters"] = list(parameters)
        if body is not None:
            operation["requestBody"] = body
        if keyed and self.auth:
            operation["security"] = [{"Bearer": []}]
        return operation

    def path_parameters(self, versioned: bool) -> list[dict[str, Any]]:
        if self.fixed is not None:
            return []
        name: dict[str, Any] = {"type": "string", "enum": self.names}
        parameters = [
            {
                "name": "name",
                "in": "path",
                "required": True,
                "description": "The model's name (GET /v2/models lists them).",
                "schema": name,
            }
        ]
        if versioned:
            version: dict[str, Any] = {"type": "string"}
            if self.versions:
                version["enum"] = self.versions
            parameters.append(
                {
                    "name": "version",
                    "in": "path",
                    "required": True,
                    "description": "A version of the model (its metadata lists them).",
                    "schema": version,
                }
            )
        return parameters

    def model_paths(self) -> list[tuple[str, bool]]:
        """``(path, versioned)`` of the model routes: both forms, or a model's own (the
        form with the version when it has one, as MLServer's per-model document)."""
        if self.fixed is None:
            return [("/v2/models/{name}", False), ("/v2/models/{name}/versions/{version}", True)]
        base = f"/v2/models/{self.fixed.name}"
        if self.fixed.version:
            return [(f"{base}/versions/{self.fixed.version}", True)]
        return [(base, False)]

    # --- the document's parts ----------------------------------------------------------

    def paths(self) -> dict[str, Any]:
        paths: dict[str, Any] = {}
        if self.fixed is None:
            paths.update(self.server_paths())
        for base, versioned in self.model_paths():
            suffix = "Version" if versioned else ""
            params = self.path_parameters(versioned)
            paths[base] = {"get": self.metadata(suffix, params)}
            paths[base + "/ready"] = {"get": self.model_ready(suffix, params)}
            paths[base + "/config"] = {"get": self.config(suffix, params)}
            paths[base + "/stats"] = {"get": self.stats(suffix, params)}
            paths[base + "/infer"] = {"post": self.infer(suffix, params)}
            paths[base + "/docs/dataplane.json"] = {"get": self.model_document(suffix, params)}
        return paths

    def server_paths(self) -> dict[str, Any]:
        ok = {"description": "OK", "content": _json(_ref("V2Live"))}
        ready_ok = {"description": "Every model is ready.", "content": _json(_ref("V2Ready"))}
        return {
            "/v2/health/live": {
                "get": self.operation(
                    "V2ServerLive", "Liveness: 200 while the server is up.", ok, ()
                )
            },
            "/v2/health/ready": {
                "get": self.operation(
                    "V2ServerReady",
                    "Readiness: 200 once every model meant to be served is ready; 503 "
                    "naming those that are not (and while the server drains).",
                    ready_ok,
                    (503,),
                )
            },
            "/v2": {
                "get": self.operation(
                    "V2ServerMetadata",
                    "The server's name, version and the V2 extensions it speaks.",
                    {"description": "OK", "content": _json(_ref("V2ServerMetadata"))},
                    (),
                )
            },
            "/v2/models": {
                "get": self.operation(
                    "V2ModelList",
                    "The names of the models in the repository (loaded or not).",
                    {"description": "OK", "content": _json(_ref("V2ModelList"))},
                    (),
                    keyed=True,
                )
            },
            "/v2/models/stats": {
                "get": self.operation(
                    "V2Statistics",
                    "Triton's statistics extension: every ready version of every model.",
                    {"description": "OK", "content": _json(_ref("V2Statistics"))},
                    (),
                    keyed=True,
                )
            },
            "/v2/repository/index": {"post": self.index()},
            "/v2/repository/models/{name}/load": {"post": self.control("load")},
            "/v2/repository/models/{name}/unload": {"post": self.control("unload")},
            DATAPLANE_PATH: {
                "get": self.operation(
                    "V2Dataplane",
                    "This server's V2 REST routes as OpenAPI 3.0 (MLServer's path); 503 "
                    "while a model is loading or none is loaded.",
                    {"description": "The document.", "content": _json({"type": "object"})},
                    (503,),
                )
            },
        }

    def metadata(self, suffix: str, params: list[dict[str, Any]]) -> dict[str, Any]:
        return self.operation(
            "V2ModelMetadata" + suffix,
            "The model's metadata: versions, platform, and its inputs and outputs (name, "
            "datatype, shape with -1 for any size). A version that is not ready (loading, "
            "failed, unloaded) answers 200 too, without tensors, with its state and reason.",
            {"description": "OK", "content": _json(_ref("V2ModelMetadata"))},
            (404,),
            keyed=True,
            parameters=params,
        )

    def model_ready(self, suffix: str, params: list[dict[str, Any]]) -> dict[str, Any]:
        return self.operation(
            "V2ModelReady" + suffix,
            "200 when the model (version) is ready for inference, 503 saying why not.",
            {"description": "Ready.", "content": _json(_ref("V2ModelReady"))},
            (404, 503),
            parameters=params,
        )

    def config(self, suffix: str, params: list[dict[str, Any]]) -> dict[str, Any]:
        return self.operation(
            "V2ModelConfig" + suffix,
            "Triton's model configuration extension: the model as Triton's ModelConfig "
            "(max_batch_size, inputs, outputs, dynamic batching); 503 while not ready.",
            {"description": "OK", "content": _json(_ref("V2ModelConfig"))},
            (404, 503),
            keyed=True,
            parameters=params,
        )

    def stats(self, suffix: str, params: list[dict[str, Any]]) -> dict[str, Any]:
        return self.operation(
            "V2ModelStatistics" + suffix,
            "Triton's statistics extension for the model (its ready versions, or the one "
            "named); 503 when none is ready.",
            {"description": "OK", "content": _json(_ref("V2Statistics"))},
            (404, 503),
            keyed=True,
            parameters=params,
        )

    def model_document(self, suffix: str, params: list[dict[str, Any]]) -> dict[str, Any]:
        return self.operation(
            "V2ModelDataplane" + suffix,
            "The model's own V2 document (MLServer's per-model path): its routes with its "
            "name written in, and its infer body alone; 503 while it is not loaded.",
            {"description": "The document.", "content": _json({"type": "object"})},
            (404, 503),
            parameters=params,
        )

    def infer(self, suffix: str, params: list[dict[str, Any]]) -> dict[str, Any]:
        models = [self.fixed] if self.fixed is not None else self.models
        json_body: dict[str, Any] = {"schema": _ref("InferRequest")}
        if len(models) == 1:
            json_body["example"] = _example(models[0])
        else:
            params = self.examples(json_body, params, versioned=bool(suffix))
        limits = sorted({m.max_body_bytes for m in models if m.max_body_bytes})
        limit = f" Bodies up to {limits[-1]} bytes." if limits else ""
        images = [m for m in models if m.image_input is not None]
        image_text = ""
        if images:
            image_text = (
                " An image model also takes its image input as BYTES holding encoded JPEG or "
                "PNG images (binary data), decoded and preprocessed as /score does; a body "
                f"that is one image needs {_HEADER}: 0."
            )
        header = {
            "name": _HEADER,
            "in": "header",
            "required": False,
            "description": "The binary tensor extension: the body's first N bytes are the "
            "JSON request, binary input data follows (0: the whole body is one input's data).",
            "schema": {"type": "integer", "minimum": 0},
        }
        ok: dict[str, Any] = {
            "description": "Inferred: JSON, or JSON then binary output data when asked "
            "(binary_data on an output, or binary_data_output on the request).",
            "headers": {
                "x-scorepack-batch-size": {
                    "description": "Rows in the model call this request rode in.",
                    "schema": {"type": "integer"},
                },
                _HEADER: {
                    "description": "With binary outputs: the length of the JSON part.",
                    "schema": {"type": "integer", "minimum": 0},
                },
            },
            "content": {
                "application/json": {"schema": _ref("InferResponse")},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            },
        }
        return self.operation(
            "V2ModelInfer" + suffix,
            "Inference: JSON tensors (data nested as the shape says, or flat), or binary "
            f"tensors after a JSON header ({_HEADER}). Inputs must have the datatype the "
            "model's metadata states." + image_text + limit,
            ok,
            (400, 404, 408, 413, 415, 500, 503, 504),
            keyed=True,
            parameters=[*params, header],
            body={
                "required": True,
                "content": {
                    "application/json": json_body,
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                },
            },
        )

    def examples(
        self, json_body: dict[str, Any], params: list[dict[str, Any]], *, versioned: bool
    ) -> list[dict[str, Any]]:
        """An example request per model (version), each with the path parameters that
        name it under the same key (tools pair them by key or position): a model's body
        sent to another model would only be a 400."""
        chosen: dict[str, ApiFacts] = {}
        for facts in sorted(self.models, key=lambda m: version_key(m.version)):
            if versioned and facts.version:
                chosen[model_key(facts)] = facts
            elif not versioned:
                chosen[facts.name] = facts  # the highest version: where requests go
        if not chosen:
            return params
        json_body["examples"] = {
            key: {"summary": f"one row for model {m.name!r}", "value": _example(m)}
            for key, m in chosen.items()
        }
        named = []
        for parameter in params:
            field = "name" if parameter["name"] == "name" else "version"
            values = {key: {"value": getattr(m, field)} for key, m in chosen.items()}
            named.append({**parameter, "examples": values})
        return named

    def index(self) -> dict[str, Any]:
        return self.operation(
            "V2RepositoryIndex",
            "The model repository extension: every model version with its state and the "
            'reason (an empty body, or {"ready": true} for the ready ones only).',
            {"description": "OK", "content": _json(_ref("V2RepositoryIndex"))},
            (400, 408, 413, 415),
            keyed=True,
            body={"required": False, "content": _json(_ref("V2IndexRequest"))},
        )

    def control(self, action: str) -> dict[str, Any]:
        explicit = (
            "This server runs with --model-control explicit."
            if self.explicit
            else "This server runs with --model-control none: always 400."
        )
        what = (
            "Load every version of the model (again) and wait until ready; a load failure "
            "is a 500 with the reason, and leaves the other models serving."
            if action == "load"
            else "Refuse new requests for the model, let admitted ones finish, then unload it."
        )
        statuses = (400, 404, 408, 413, 415, 500) if action == "load" else (400, 404, 408, 413, 415)
        return self.operation(
            "V2Repository" + action.title(),
            f"The model repository extension. {what} {explicit} The body (optional "
            "parameters) is read but not used.",
            {
                "description": "Done.",
                "content": _json(_ref("V2Load" if action == "load" else "V2Unload")),
            },
            statuses,
            keyed=True,
            parameters=[
                {
                    "name": "name",
                    "in": "path",
                    "required": True,
                    "description": "The model's name in the repository (loaded or not).",
                    "schema": {"type": "string"},
                }
            ],
            body={"required": False, "content": _json({"type": "object"})},
        )

    def schemas(self) -> dict[str, Any]:
        schemas = copy.deepcopy(_COMMON)
        models = [self.fixed] if self.fixed is not None else self.models
        if len(models) == 1:
            schemas["InferRequest"] = _infer_request(models[0])
            schemas["InferResponse"] = _infer_response(models[0])
        else:
            for facts in models:
                key = model_key(facts)
                label = f"model {facts.name!r}" + (
                    f" version {facts.version}" if facts.version else ""
                )
                schemas[f"InferRequest.{key}"] = {"title": label, **_infer_request(facts)}
                schemas[f"InferResponse.{key}"] = {"title": label, **_infer_response(facts)}
            keys = [model_key(m) for m in models]
            schemas["InferRequest"] = {
                "anyOf": [_ref(f"InferRequest.{k}") for k in keys],
                "description": "The body the model in the path takes (InferRequest.NAME).",
            }
            schemas["InferResponse"] = {
                "anyOf": [_ref(f"InferResponse.{k}") for k in keys],
                "description": "The answer of the model in the path (InferResponse.NAME).",
            }
        return schemas


def v2_paths(models: Sequence[ApiFacts]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The V2 REST paths of a server of ``models`` and the component schemas they use."""
    builder = _Builder(models)
    return builder.paths(), builder.schemas()


def dataplane_document(models: Sequence[ApiFacts]) -> dict[str, Any]:
    """``/v2/docs/dataplane.json``: the server's V2 REST routes alone, OpenAPI 3.0."""
    builder = _Builder(models)
    names = ", ".join(repr(n) for n in builder.names)
    return _document(
        builder,
        "Open Inference Protocol (V2) REST",
        f"The V2 REST routes of the models {names}, served by scorepack's embedded server. "
        "Generated by scorepack from the models' signatures.",
    )


def model_dataplane_document(facts: ApiFacts) -> dict[str, Any]:
    """A model's own V2 document (MLServer's per-model path): its routes with its name
    (and version) written into the paths."""
    builder = _Builder([facts], fixed=facts)
    label = f"model {facts.name!r}" + (f" version {facts.version}" if facts.version else "")
    return _document(
        builder,
        f"Open Inference Protocol (V2) REST: {label}",
        f"The V2 REST routes of the {label}, served by scorepack's embedded server. "
        "Generated by scorepack from the model's signature.",
        version=facts.version or "1",
    )


def model_dataplane_path(name: str, version: str | None = None) -> str:
    """Where a model's own V2 document is served."""
    base = f"/v2/models/{name}" + (f"/versions/{version}" if version else "")
    return base + "/docs/dataplane.json"


def _document(
    builder: _Builder, title: str, description: str, version: str = "1"
) -> dict[str, Any]:
    document: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {"title": title, "description": description, "version": version},
        "paths": builder.paths(),
        "components": {"schemas": dict(sorted(builder.schemas().items()))},
    }
    if builder.auth:
        document["components"]["securitySchemes"] = _bearer()
    return document


# --- schemas -------------------------------------------------------------------------------


def _datatype(spec: TensorSpec) -> str | None:
    try:
        return datatype_of(spec.dtype)
    except (TypeError, ValueError):
        return None  # no V2 name: the server checks such an input by value only


def _input_schema(spec: TensorSpec) -> dict[str, Any]:
    datatype = _datatype(spec)
    element = _element(spec.dtype)
    nested = _nested(element, spec.shape)
    names: dict[str, Any] = {"type": "string"}
    if datatype is not None:
        names["enum"] = [datatype, "BF16"] if datatype == "FP32" else [datatype]
    rank = len(spec.shape)
    shape_text = "[" + ", ".join("-1" if d is None else str(d) for d in spec.shape) + "]"
    return {
        "type": "object",
        "title": f"input {spec.name!r}",
        "description": f"{datatype or spec.dtype} {shape_text} (-1: any size).",
        "required": ["name", "datatype", "shape", "data"],
        "properties": {
            "name": {"type": "string", "enum": [spec.name]},
            "datatype": names,
            "shape": {
                "type": "array",
                "items": {"type": "integer", "minimum": 0},
                "minItems": rank,
                "maxItems": rank,
            },
            "data": {
                "anyOf": [nested, {"type": "array", "items": element}],
                "description": "Nested as the shape says, or flat (row-major).",
            },
            "parameters": _ref("V2Parameters"),
        },
    }


def _output_schema(spec: TensorSpec) -> dict[str, Any]:
    datatype = _datatype(spec)
    names: dict[str, Any] = {"type": "string"}
    if datatype is not None:
        names["enum"] = [datatype]
    return {
        "type": "object",
        "title": f"output {spec.name!r}",
        "required": ["name", "datatype", "shape"],
        "properties": {
            "name": {"type": "string", "enum": [spec.name]},
            "datatype": names,
            "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
            "data": {
                "type": "array",
                "items": _element(spec.dtype, output=True),
                "description": "Flat, row-major (absent when sent as binary data).",
            },
            "parameters": {
                "type": "object",
                "properties": {"binary_data_size": {"type": "integer", "minimum": 0}},
            },
        },
    }


def _infer_request(facts: ApiFacts) -> dict[str, Any]:
    signature = facts.signature
    inputs = [_input_schema(s) for s in signature.inputs]
    outputs = signature.output_names
    return {
        "type": "object",
        "description": "Inputs by name, each with the datatype and shape model metadata "
        f"states: {', '.join(repr(s.name) for s in signature.inputs)}.",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string", "description": "Echoed in the response."},
            "parameters": _ref("V2Parameters"),
            "inputs": {
                "type": "array",
                "minItems": 1,
                "items": inputs[0] if len(inputs) == 1 else {"anyOf": inputs},
            },
            "outputs": {
                "type": "array",
                "description": "The outputs wanted (default: all).",
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string", "enum": outputs},
                        "parameters": _ref("V2Parameters"),
                    },
                },
            },
        },
    }


def _infer_response(facts: ApiFacts) -> dict[str, Any]:
    outputs = [_output_schema(s) for s in facts.signature.outputs]
    return {
        "type": "object",
        "required": ["model_name", "model_version", "outputs"],
        "properties": {
            "model_name": {"type": "string", "enum": [facts.name]},
            "model_version": {"type": "string", "enum": [facts.version or ""]},
            "id": {"type": "string"},
            "parameters": {"type": "object"},
            "outputs": {
                "type": "array",
                "items": outputs[0] if len(outputs) == 1 else {"anyOf": outputs},
            },
        },
    }


def _example(facts: ApiFacts) -> dict[str, Any]:
    """A request of one row of zeros (any-size dimensions as 1) the model answers."""
    inputs = []
    for spec in facts.signature.inputs:
        dims = [1 if d is None else d for d in spec.shape]
        if spec.batched:
            dims[0] = 1
        count = 1
        for d in dims:
            count *= d
        element = _element(spec.dtype)
        kind = element.get("type")
        value: Any = {"boolean": False, "string": "a", "integer": 0}.get(str(kind), 0.0)
        inputs.append(
            {
                "name": spec.name,
                "datatype": _datatype(spec) or "BYTES",
                "shape": dims,
                "data": [value] * count,
            }
        )
    return {"inputs": inputs}


_TENSOR_METADATA = {
    "type": "object",
    "required": ["name", "datatype", "shape"],
    "properties": {
        "name": {"type": "string"},
        "datatype": {"type": "string", "enum": list(DATATYPES)},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": -1}},
    },
}
_DURATION = {
    "type": "object",
    "required": ["count", "ns"],
    "properties": {
        "count": {"type": "integer", "minimum": 0},
        "ns": {"type": "integer", "minimum": 0},
    },
}
_STAT_NAMES = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")

#: the schemas every V2 document shares (the infer bodies come from the models)
_COMMON: dict[str, Any] = {
    "V2Error": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string"}},
        "description": "A V2 error: what was wrong, in words.",
    },
    "V2Parameters": {
        "type": "object",
        "description": "Parameters, passed through (binary_data_size, binary_data and "
        "binary_data_output steer the binary extension).",
    },
    "V2Live": {
        "type": "object",
        "required": ["live"],
        "properties": {"live": {"type": "boolean", "enum": [True]}},
    },
    "V2Ready": {
        "type": "object",
        "required": ["ready"],
        "properties": {"ready": {"type": "boolean", "enum": [True]}},
    },
    "V2ServerMetadata": {
        "type": "object",
        "required": ["name", "version", "extensions"],
        "properties": {
            "name": {"type": "string"},
            "version": {"type": "string"},
            "extensions": {"type": "array", "items": {"type": "string", "enum": list(EXTENSIONS)}},
        },
    },
    "V2ModelList": {
        "type": "object",
        "required": ["models"],
        "properties": {"models": {"type": "array", "items": {"type": "string"}}},
    },
    "V2ModelMetadata": {
        "type": "object",
        "required": ["name", "versions", "platform", "inputs", "outputs"],
        "properties": {
            "name": {"type": "string"},
            "versions": {"type": "array", "items": {"type": "string"}},
            "platform": {"type": "string"},
            "inputs": {"type": "array", "items": _TENSOR_METADATA},
            "outputs": {"type": "array", "items": _TENSOR_METADATA},
            "state": {"type": "string", "description": "Only when the version is not ready."},
            "reason": {"type": "string", "description": "Why it is not ready."},
        },
    },
    "V2ModelReady": {
        "type": "object",
        "required": ["name", "ready"],
        "properties": {"name": {"type": "string"}, "ready": {"type": "boolean", "enum": [True]}},
    },
    "V2ModelConfig": {
        "type": "object",
        "description": "Triton's ModelConfig in JSON (field names as in model_config.proto).",
        "required": ["name", "platform", "backend", "max_batch_size", "input", "output"],
        "properties": {
            "name": {"type": "string"},
            "platform": {"type": "string"},
            "backend": {"type": "string"},
            "max_batch_size": {"type": "integer", "minimum": 0},
            "input": {"type": "array", "items": {"type": "object"}},
            "output": {"type": "array", "items": {"type": "object"}},
            "version_policy": {"type": "object"},
            "instance_group": {"type": "array", "items": {"type": "object"}},
            "dynamic_batching": {"type": "object"},
        },
    },
    "V2Statistics": {
        "type": "object",
        "required": ["model_stats"],
        "properties": {
            "model_stats": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": [
                        "name",
                        "last_inference",
                        "inference_count",
                        "execution_count",
                        "inference_stats",
                        "batch_stats",
                    ],
                    "properties": {
                        "name": {"type": "string"},
                        "version": {"type": "string"},
                        "last_inference": {"type": "integer", "minimum": 0},
                        "inference_count": {"type": "integer", "minimum": 0},
                        "execution_count": {"type": "integer", "minimum": 0},
                        "inference_stats": {
                            "type": "object",
                            "required": list(_STAT_NAMES),
                            "properties": {n: _DURATION for n in (*_STAT_NAMES, "cache_hit")},
                        },
                        "batch_stats": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["batch_size"],
                                "properties": {
                                    "batch_size": {"type": "integer", "minimum": 1},
                                    "compute_input": _DURATION,
                                    "compute_infer": _DURATION,
                                    "compute_output": _DURATION,
                                },
                            },
                        },
                    },
                },
            }
        },
    },
    "V2IndexRequest": {
        "type": "object",
        "properties": {
            "ready": {
                "type": "boolean",
                "nullable": True,
                "description": "true: only the versions that are ready.",
            }
        },
    },
    "V2RepositoryIndex": {
        "type": "array",
        "items": {
            "type": "object",
            "required": ["name", "state", "reason"],
            "properties": {
                "name": {"type": "string"},
                "version": {"type": "string"},
                "state": {"type": "string"},
                "reason": {"type": "string"},
            },
        },
    },
    "V2Load": {
        "type": "object",
        "required": ["name", "load"],
        "properties": {"name": {"type": "string"}, "load": {"type": "boolean"}},
    },
    "V2Unload": {
        "type": "object",
        "required": ["name", "unload"],
        "properties": {"name": {"type": "string"}, "unload": {"type": "boolean"}},
    },
}
