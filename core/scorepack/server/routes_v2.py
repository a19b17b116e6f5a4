"""The Open Inference Protocol (KServe V2) over REST, on the same port as ``/score``:

    GET  /v2/health/live, /v2/health/ready              probes (no key needed)
    GET  /v2                                            server metadata
    GET  /v2/models                                     the model names
    GET  /v2/models/{name}[/versions/{v}]               model metadata (state and reason
                                                        when it is not ready)
    GET  /v2/models/{name}[/versions/{v}]/ready         200 ready, 503 not
    GET  /v2/models/{name}[/versions/{v}]/config        Triton's model configuration
    GET  /v2/models[/{name}[/versions/{v}]]/stats       Triton's statistics extension
    POST /v2/models/{name}[/versions/{v}]/infer         JSON or binary tensors
    POST /v2/repository/index                           every model version's state
    POST /v2/repository/models/{name}/load|unload       --model-control explicit only

Errors are ``{"error": "message"}`` with the status from the one error table. Inference
shares ``/score``'s limits, validation, batcher and decoding (``scorepack.v2``), and its
body discipline (:class:`~.body.BodyReader`: 415 for a compressed body, 413 over the body
limit, 408 for a body that stops arriving, and a client that leaves while queued costs no
model call). While the server drains (``SCOREPACK_DRAIN_SECONDS``, after SIGTERM)
``/v2/health/ready`` answers 503, as ``/health/ready`` does.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ..codecs import encode_json
from ..errors import BadRequestError, NotReadyError, UnsupportedMediaTypeError
from ..repository import READY, Repository
from ..v2 import (
    infer,
    model_config,
    model_metadata,
    model_statistics,
    not_ready,
    server_metadata,
)
from ..v2.rest import (
    HEADER_LENGTH,
    decode_infer_request,
    encode_infer_response,
    header_length,
    raw_infer_request,
)
from ..v2.types import InferRequest
from .auth import KeyCheck
from .body import BodyReader
from .observe import note_result, note_scoring
from .routing import Route, ServerState

__all__ = ["V2Routes"]

_JSON = "application/json"
#: content types a JSON inference request may come with (curl -d sends the form one)
_JSON_TYPES = {
    "",
    "application/json",
    "application/octet-stream",
    "application/x-www-form-urlencoded",
}
#: what a V2 infer body may be (/score's list of image types would mislead: an image
#: posted as image/jpeg without the header below is refused here)
_V2_BODIES = (
    "A V2 infer body is JSON (application/json), or binary tensors after a JSON header of "
    "Inference-Header-Content-Length bytes; a raw body (an image, or one input's tensor "
    "bytes) needs Inference-Header-Content-Length: 0."
)
#: bytes of a repository request's JSON options (they hold a few flags)
_OPTIONS_LIMIT = 64 * 1024


def _json(document: Any, status: int = 200) -> Response:
    return Response(encode_json(document), status, media_type=_JSON)


class V2Routes:
    """The V2 REST endpoints over a repository."""

    def __init__(
        self, repository: Repository, auth: KeyCheck, server: ServerState | None = None
    ) -> None:
        self.repository = repository
        self.auth = auth
        self.server = server
        #: the body discipline shared with /score
        self.body = BodyReader(server)

    def routes(self) -> list[Route]:
        model = "/v2/models/{name}"
        version = "/v2/models/{name}/versions/{version}"
        get, post = ("GET", "HEAD"), ("POST",)
        return [
            Route(model + "/infer", self.infer, methods=post, errors="v2"),
            Route(version + "/infer", self.infer, methods=post, errors="v2"),
            Route("/v2/health/live", self.live, methods=get, errors="v2"),
            Route("/v2/health/ready", self.ready, methods=get, errors="v2"),
            Route("/v2", self.server_metadata, methods=get, errors="v2"),
            Route("/v2/models", self.model_list, methods=get, errors="v2"),
            # before {name}: as in Triton, /v2/models/stats is every model's statistics
            Route("/v2/models/stats", self.statistics, methods=get, errors="v2"),
            Route(model, self.model_metadata, methods=get, errors="v2"),
            Route(version, self.model_metadata, methods=get, errors="v2"),
            Route(model + "/ready", self.model_ready, methods=get, errors="v2"),
            Route(version + "/ready", self.model_ready, methods=get, errors="v2"),
            Route(model + "/config", self.model_config, methods=get, errors="v2"),
            Route(version + "/config", self.model_config, methods=get, errors="v2"),
            Route(model + "/stats", self.statistics, methods=get, errors="v2"),
            Route(version + "/stats", self.statistics, methods=get, errors="v2"),
            Route("/v2/repository/index", self.index, methods=post, errors="v2"),
            Route("/v2/repository/models/{name}/load", self.load, methods=post, errors="v2"),
            Route("/v2/repository/models/{name}/unload", self.unload, methods=post, errors="v2"),
        ]

    # --- inference ----------------------------------------------------------------------

    async def infer(self, request: Request) -> Response:
        self.auth.check(request.headers.get("authorization"))
        params = request.path_params
        scorer = self.repository.get(params["name"], params.get("version"))
        note_scoring(request.scope, scorer, "v2")
        body = await self.body.read(request, scorer.config.max_body_bytes)
        length = header_length(request.headers.get(HEADER_LENGTH), len(body))
        if length is None:
            content_type = request.headers.get("content-type", "")
            bare = content_type.split(";", 1)[0].strip().lower()
            if bare not in _JSON_TYPES and not bare.endswith("+json"):
                raise UnsupportedMediaTypeError(bare, _V2_BODIES)
        parsed: list[InferRequest] = []

        def parse() -> InferRequest:
            # runs in the decode pool, after admission
            if length == 0:
                plan = scorer.image_plan
                image_input = plan.input if plan is not None else None
                got = raw_infer_request(scorer.signature, image_input, body)
            else:
                got = decode_infer_request(body, length)
            parsed.append(got)
            return got

        # a client that leaves while its request is queued costs no model call
        response = await self.body.unless_disconnected(request, infer(scorer, parse))
        note_result(request.scope, response)  # batch size and queue wait for the access line
        content, json_length = encode_infer_response(response, parsed[0])
        # as /score: the rows of the model call the request rode in (bench counts them)
        headers = {}
        if response.batch_size is not None:
            headers["x-scorepack-batch-size"] = str(response.batch_size)
        if json_length is None:
            return Response(content, headers=headers, media_type=_JSON)
        return Response(
            content,
            headers={HEADER_LENGTH: str(json_length), **headers},
            media_type="application/octet-stream",
        )

    # --- health and metadata ------------------------------------------------------------

    async def live(self, request: Request) -> Response:
        return _json({"live": True})

    async def ready(self, request: Request) -> Response:
        if self.server is not None and self.server.draining:
            raise NotReadyError("The server is shutting down.")
        if self.repository.ready:
            return _json({"ready": True})
        waiting = [
            f"{s.name}" + (f" version {s.version}" if s.version else "") + f" ({s.reason})"
            for s in self.repository.models()
            if s.state != READY and s.reason != "unloaded"
        ]
        raise NotReadyError("Not every model is ready: " + ", ".join(waiting) + ".")

    async def server_metadata(self, request: Request) -> Response:
        return _json(server_metadata())

    async def model_list(self, request: Request) -> Response:
        self.auth.check(request.headers.get("authorization"))
        return _json({"models": self.repository.names})

    async def model_metadata(self, request: Request) -> Response:
        self.auth.check(request.headers.get("authorization"))
        name, version = request.path_params["name"], request.path_params.get("version")
        # not loaded, loading or failed: 200 all the same, with its state and why, where
        # clients look for a model
        return _json(model_metadata(self.repository, name, version))

    async def model_config(self, request: Request) -> Response:
        self.auth.check(request.headers.get("authorization"))
        name, version = request.path_params["name"], request.path_params.get("version")
        # a version not ready has no signature to describe: 503, as its /ready answers
        return _json(model_config(self.repository, name, version))

    async def statistics(self, request: Request) -> Response:
        self.auth.check(request.headers.get("authorization"))
        name, version = request.path_params.get("name"), request.path_params.get("version")
        return _json(model_statistics(self.repository, name, version))

    async def model_ready(self, request: Request) -> Response:
        name, version = request.path_params["name"], request.path_params.get("version")
        state = self.repository.state(name, version)
        if state.state != READY:
            raise not_ready(state)
        return _json({"name": name, "ready": True})

    # --- the repository extension -------------------------------------------------------

    async def index(self, request: Request) -> Response:
        self.auth.check(request.headers.get("authorization"))
        body = await self.body.read(request, _OPTIONS_LIMIT)
        ready_only = False
        if body.strip():
            options = _options(body)
            ready = options.get("ready")
            ready = False if ready is None else ready  # null: not given
            if not isinstance(ready, bool):
                # taken by truth, {"ready": "false"} would hide the models not ready
                raise BadRequestError(f'"ready" must be true or false, not {ready!r:.40}.')
            ready_only = ready
        entries = []
        for state in self.repository.models():
            if ready_only and state.state != READY:
                continue
            entry = {"name": state.name, "state": state.state, "reason": state.reason}
            if state.version is not None:
                entry["version"] = state.version
            entries.append(entry)
        return _json(entries)

    async def load(self, request: Request) -> Response:
        self.auth.check(request.headers.get("authorization"))
        name = request.path_params["name"]
        # parameters (config overrides) are not supported: read, refused if too large
        await self.body.read(request, _OPTIONS_LIMIT)
        await asyncio.get_running_loop().run_in_executor(None, self.repository.load, name)
        return _json({"name": name, "load": True})

    async def unload(self, request: Request) -> Response:
        self.auth.check(request.headers.get("authorization"))
        name = request.path_params["name"]
        await self.body.read(request, _OPTIONS_LIMIT)
        await asyncio.get_running_loop().run_in_executor(None, self.repository.unload, name)
        return _json({"name": name, "unload": True})


def _options(body: bytes) -> dict[str, Any]:
    import orjson

    from ..errors import InvalidJSONError

    try:
        options = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidJSONError(f"The body is not valid JSON: {exc}") from exc
    if not isinstance(options, dict):
        raise InvalidJSONError('The body must be a JSON object, e.g. {"ready": true}.')
    return options
