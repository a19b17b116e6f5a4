"""``inference.GRPCInferenceService``: a thin adapter from the V2 gRPC wire to the V2 core.

The RPCs served are the core set (ServerLive, ServerReady, ModelReady, ServerMetadata,
ModelMetadata, ModelInfer), the model repository extension (RepositoryIndex,
RepositoryModelLoad, RepositoryModelUnload), and Triton's model configuration
(ModelConfig) and statistics (ModelStatistics) extensions, the last two from the same
mappings V2 REST answers with (:mod:`scorepack.v2.config`, :mod:`scorepack.v2.statistics`)
parsed into their messages; any other RPC of Triton's service answers
UNIMPLEMENTED. Scoring goes through :func:`scorepack.v2.infer_blocking` on the same
Scorers, so requests over gRPC, V2 REST and ``/score`` share one batcher per model.

Each call runs on a thread of the server's pool and blocks there, as a gunicorn thread
does (:meth:`Scorer.run <scorepack.scorer.Scorer.run>`): on Python's grpcio that costs
less CPU per call than ``grpc.aio``, whose every completion crosses from gRPC's poller
thread to the event loop, and every hop to the decode pool and back again
(``benchmarks/micro/grpc_cpu.py`` measures it). That held with ModelInfer awaiting
:meth:`Scorer.run_async <scorepack.scorer.Scorer.run_async>`, ``/score``'s own path, on
the HTTP server's event loop: 0.52 against 0.44 ms of server CPU a request on a tiny model
at c=8 (``benchmarks/micro/protocols_native.py --compare``, the two servers alternated).

Deadlines and cancellation: a ModelInfer registers a callback for the end of its call;
when the client cancels or the deadline passes first, gRPC ends the call
(CANCELLED, DEADLINE_EXCEEDED) and the callback cancels the request's place in the
batcher's queue, which no model call then takes (``Batcher._take`` skips cancelled work;
``_purge`` frees its place when the queue is full), and the waiting thread is let go.
The server's own ``--timeout-ms`` still bounds calls without a deadline
(DEADLINE_EXCEEDED too).

Every call is counted in the host's metrics, gets an access line and, with tracing on, a
span (:mod:`.observe`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import CancelledError as FutureCancelled
from concurrent.futures import Future
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import DecodeError

from ... import v2
from ...errors import BadRequestError, BodyTooLargeError
from ...proto.messages import SERVICE, messages, method_types
from ...repository import READY, ModelState
from ...telemetry.stats import RequestStats
from ..auth import KeyCheck
from .codec import read_request, write_outputs, write_parameters
from .errors import bounded, grpc_error
from .observe import CallObserver, method_path, note_result, note_scoring

__all__ = ["InferenceService"]

logger = logging.getLogger("scorepack.server.grpc")


Handler = Callable[[Any, grpc.ServicerContext], Any]


class InferenceService:
    """The servicer: one blocking method per RPC over a :class:`~scorepack.repository.Repository`.

    ``auth_keys`` (Bearer keys, as on HTTP) guard everything but the three probes, which
    stay open as ``/`` and ``/health/ready`` do. Calls are counted into ``requests``, the
    HTTP app's when both serve (one ``/metrics`` for both). ``draining`` tells whether the
    server is draining after SIGTERM (``SCOREPACK_DRAIN_SECONDS``): ServerReady then
    answers ``ready=false``, as ``/v2/health/ready`` answers 503, while calls are still
    served.
    """

    def __init__(
        self,
        repository: Any,
        *,
        auth_keys: tuple[str, ...] = (),
        requests: RequestStats | None = None,
        draining: Callable[[], bool] | None = None,
    ) -> None:
        self.repository = repository
        self.auth = KeyCheck(auth_keys)
        self.observer = CallObserver(requests)
        self.draining = draining

    def handler(self) -> grpc.GenericRpcHandler:
        """The RPCs as one generic handler (:meth:`method_handlers` is cheaper per call)."""
        return grpc.method_handlers_generic_handler(SERVICE, self.method_handlers())

    def method_handlers(self) -> dict[str, grpc.RpcMethodHandler]:
        """The RPCs by method name, to register with a (thread-pool) ``grpc.server``:
        registered methods are matched by gRPC's core, not by Python code per call."""
        rpcs: dict[str, tuple[Handler, bool]] = {
            "ServerLive": (self.server_live, False),
            "ServerReady": (self.server_ready, False),
            "ModelReady": (self.model_ready, False),
            "ServerMetadata": (self.server_metadata, True),
            "ModelMetadata": (self.model_metadata, True),
            "ModelInfer": (self.model_infer, True),
            "ModelConfig": (self.model_config, True),
            "ModelStatistics": (self.model_statistics, True),
            "RepositoryIndex": (self.repository_index, True),
            "RepositoryModelLoad": (self.repository_model_load, True),
            "RepositoryModelUnload": (self.repository_model_unload, True),
        }
        handlers = {}
        for name, (fn, guarded) in rpcs.items():
            request_type, response_type = method_types(name)
            handlers[name] = grpc.unary_unary_rpc_method_handler(
                self._wrap(name, fn, guarded, request_type),
                # the bytes as they came, parsed in the call (_parse): a message that does
                # not parse is the client's INVALID_ARGUMENT, where grpcio's own
                # deserializer would answer INTERNAL ("Exception deserializing request!")
                request_deserializer=None,
                response_serializer=response_type.SerializeToString,
            )
        return handlers

    def _wrap(self, name: str, fn: Handler, guarded: bool, request_type: Any) -> Handler:
        auth = self.auth if guarded and self.auth.enabled else None
        observer, path = self.observer, method_path(name)

        def rpc(raw: bytes, context: grpc.ServicerContext) -> Any:
            call = observer.begin()
            request: Any = None
            try:
                with observer.span(name, context, call):
                    try:
                        if auth is not None:
                            auth.check(_authorization(context))
                        request = _parse(request_type, raw)
                        return fn(request, context)
                    except FutureCancelled:
                        # the client went away or its deadline passed: gRPC answers nobody
                        call.cancelled(context)
                        context.abort(grpc.StatusCode.CANCELLED, "The call was cancelled.")
                    except Exception as exc:
                        error = grpc_error(exc)
                        call.failed(error)
                        logger.info("grpc %s %s: %s", name, error.code.name, error.message)
                        context.set_trailing_metadata(error.metadata)
                        context.abort(error.code, error.message)
            finally:
                observer.end(call, path, request, context)

        rpc.__name__ = name
        return rpc

    # --- health and metadata -----------------------------------------------------------

    def server_live(self, request: Any, context: grpc.ServicerContext) -> Any:
        return messages.ServerLiveResponse(live=True)

    def server_ready(self, request: Any, context: grpc.ServicerContext) -> Any:
        if self.draining is not None and self.draining():
            return messages.ServerReadyResponse(ready=False)
        return messages.ServerReadyResponse(ready=bool(self.repository.ready))

    def model_ready(self, request: Any, context: grpc.ServicerContext) -> Any:
        # an unknown model is NOT_FOUND (as V2 REST's 404); a known one says whether it is,
        # as Triton does (ready=false, not an error: tritonclient's is_model_ready reads it),
        # and, in trailing metadata, its state and why (REST's 503 message says the same)
        state = self.repository.state(request.name, request.version or None)
        if state.state != READY:
            context.set_trailing_metadata(
                (
                    ("scorepack-model-state", state.state),
                    ("scorepack-model-reason", _ascii(state.reason)),
                )
            )
        return messages.ModelReadyResponse(ready=state.state == READY)

    def server_metadata(self, request: Any, context: grpc.ServicerContext) -> Any:
        return messages.ServerMetadataResponse(**v2.server_metadata())

    def model_metadata(self, request: Any, context: grpc.ServicerContext) -> Any:
        name, version = request.name, request.version or None
        meta = v2.model_metadata(self.repository, name, version)
        if "state" in meta:
            # the message has no state or reason fields: answer as Triton does, an error
            # (UNAVAILABLE), with both in its message
            raise v2.not_ready(ModelState(name, version, meta["state"], meta["reason"]))
        response = messages.ModelMetadataResponse(
            name=meta["name"], versions=meta["versions"], platform=meta["platform"]
        )
        for key, tensors in (("inputs", response.inputs), ("outputs", response.outputs)):
            for spec in meta[key]:
                tensors.add(name=spec["name"], datatype=spec["datatype"], shape=spec["shape"])
        return response

    def model_config(self, request: Any, context: grpc.ServicerContext) -> Any:
        config = v2.model_config(self.repository, request.name, request.version or None)
        response = messages.ModelConfigResponse()
        json_format.ParseDict(config, response.config)
        return response

    def model_statistics(self, request: Any, context: grpc.ServicerContext) -> Any:
        stats = v2.model_statistics(self.repository, request.name or None, request.version or None)
        response = messages.ModelStatisticsResponse()
        json_format.ParseDict(stats, response)
        return response

    # --- inference -------------------------------------------------------------------

    def model_infer(self, request: Any, context: grpc.ServicerContext) -> Any:
        scorer = self.repository.get(request.model_name, request.model_version or None)
        note_scoring(scorer)
        limit = scorer.config.max_body_bytes
        size = request.ByteSize()
        if size > limit:
            raise BodyTooLargeError(limit, size)
        # parsed in the decode pool once admitted, as /score decodes its body
        result = v2.infer_blocking(scorer, lambda: read_request(request), _Watch(context))
        note_result(result)
        response = messages.ModelInferResponse(
            model_name=result.model_name,
            model_version=str(result.model_version or ""),
            id=result.id or "",
        )
        write_parameters(response.parameters, dict(result.parameters))
        write_outputs(response, result.outputs)
        if result.batch_size:
            # as /score's x-scorepack-batch-size header: the rows of the model call it rode in
            metadata = (("x-scorepack-batch-size", str(result.batch_size)),)
            context.set_trailing_metadata(metadata)
        return response

    # --- model repository ------------------------------------------------------------

    def repository_index(self, request: Any, context: grpc.ServicerContext) -> Any:
        response = messages.RepositoryIndexResponse()
        for state in self.repository.models():
            if request.ready and state.state != READY:
                continue
            response.models.add(
                name=state.name,
                version=str(state.version or ""),
                state=state.state,
                reason=state.reason or "",
            )
        return response

    def repository_model_load(self, request: Any, context: grpc.ServicerContext) -> Any:
        self.repository.load(request.model_name)
        return messages.RepositoryModelLoadResponse()

    def repository_model_unload(self, request: Any, context: grpc.ServicerContext) -> Any:
        self.repository.unload(request.model_name)
        return messages.RepositoryModelUnloadResponse()


class _Watch:
    """Cancels a queued request when its call ends first (client cancel, deadline)."""

    __slots__ = ("_context",)

    def __init__(self, context: grpc.ServicerContext) -> None:
        self._context = context

    def __call__(self, future: Future[Any]) -> None:
        # the callback also runs when the call ends normally, the future done by then;
        # False: the call is already over, nobody waits for this request
        if not self._context.add_callback(future.cancel):
            future.cancel()


def _ascii(text: str) -> str:
    # metadata values other than "-bin" ones must be printable ASCII, and short: clients
    # drop a call whose metadata passes 8 KiB, which would make ready=false an error
    return "".join(c if " " <= c <= "~" else "?" for c in bounded(text))


def _parse(request_type: Any, raw: bytes) -> Any:
    """The request message from its bytes; bytes that are not one are a 400."""
    try:
        return request_type.FromString(raw)
    except DecodeError as exc:
        raise BadRequestError(
            f"The request is not a valid inference.{request_type.DESCRIPTOR.name} message "
            f"({exc}); its string fields must be UTF-8."
        ) from None


def _authorization(context: grpc.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key.lower() == "authorization" and isinstance(value, str):
            return value
    return None
