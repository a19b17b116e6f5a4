"""Azure ML's routes, as azmlinfsrv answers them, so one client works against both:

    POST /score          score an image or JSON tensors       (auth when keys are set)
    GET  /score          405, as azmlinfsrv answers
    GET  /               200 liveness, always
    GET  /health/ready   200 once the models are loaded and warmed up, else 503
    GET  /info           what is served: backend, device, signature, preprocessing (auth)
    GET  /metrics        Prometheus metrics (scorepack.telemetry.metrics)   (auth; absent,
                         so 404, with --no-metrics)
    GET  /swagger.json   the API as OpenAPI, from the models' signatures (?version=2|3|3.1;
                         with several models one document for all, or ?model=NAME
                         &model_version=V for one)

With several models, ``/score?model=NAME`` picks one (``&version=V`` a version; the
default is the highest); with one model the query may leave it out. Probes never wait on
the models or the queue.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response

from ..codecs import encode_json
from ..errors import BadRequestError, NotFoundError, NotReadyError
from ..openapi import SWAGGER_VERSIONS, api_document
from ..postprocess import query_values
from ..repository import READY, Repository, score_target
from ..scorer import Scorer
from ..telemetry.metrics import Metrics
from .auth import KeyCheck
from .body import BodyReader
from .observe import note_result, note_scoring
from .routes_docs import document_facts
from .routing import Route, ServerState

__all__ = ["AzureMLRoutes", "ServerState"]

_JSON = "application/json"


class AzureMLRoutes:
    """The Azure ML endpoints over a repository (usually of one model)."""

    def __init__(
        self,
        repository: Repository,
        auth: KeyCheck,
        metrics: Metrics | None,
        server: ServerState | None = None,
    ) -> None:
        self.repository = repository
        self.auth = auth
        self.prometheus = metrics
        self.server = server
        #: the body discipline /score shares with the V2 routes
        self.body = BodyReader(server)

    def routes(self) -> list[Route]:
        """``/score`` first: the app puts it ahead of every other route. ``/metrics``
        only with metrics on."""
        metrics = []
        if self.prometheus is not None:
            metrics.append(Route("/metrics", self.metrics, methods=("GET",)))
        return [
            Route("/score", self.score, methods=("POST",)),
            Route("/", self.live, methods=("GET", "HEAD")),
            Route("/health/ready", self.ready, methods=("GET", "HEAD")),
            Route("/info", self.info, methods=("GET",)),
            *metrics,
            Route("/swagger.json", self.swagger, methods=("GET",)),
        ]

    def _scorer(self, query: dict[str, str]) -> Scorer:
        """The scorer ``?model=NAME&version=V`` names (taken out of ``query``)."""
        return score_target(self.repository, query)

    async def score(self, request: Request) -> Response:
        self.auth.check(request.headers.get("authorization"))
        # blank values kept, as Werkzeug keeps them under azmlinfsrv: ``?top_k=`` is the
        # same 400 on both hosts
        query = query_values(
            parse_qsl(request.scope["query_string"].decode("latin-1"), keep_blank_values=True)
        )
        scorer = self._scorer(query)
        note_scoring(request.scope, scorer, "azureml")
        body = await self.body.read(request, scorer.config.max_body_bytes)
        # a client that leaves while its request is queued costs no model call
        result = await self.body.unless_disconnected(
            request, scorer.handle_async(body, request.headers.get("content-type"), query)
        )
        note_result(request.scope, result)
        return Response(
            encode_json(result.body),
            headers={"x-scorepack-batch-size": str(result.batch_size)},
            media_type=_JSON,
        )

    async def live(self, request: Request) -> Response:
        return Response(b"Healthy", media_type="text/plain; charset=utf-8")

    async def ready(self, request: Request) -> Response:
        if self.server is not None and self.server.draining:
            raise NotReadyError("The server is shutting down.")
        repository = self.repository
        if len(repository.models()) != 1:
            # several, or none yet (explicit control started empty: ready, as Triton is)
            if repository.ready:
                # the models it serves now: one unloaded (explicit control) is not among them
                serving = sorted({s.name for s in repository.models() if s.state == READY})
                return Response(
                    encode_json({"status": "ready", "models": serving}), media_type=_JSON
                )
            waiting = [
                s.name + (f" version {s.version}" if s.version else "") + f" ({s.reason})"
                for s in repository.models()
                if s.state != READY and s.reason != "unloaded"
            ]
            raise NotReadyError("Not every model is ready: " + ", ".join(waiting) + ".")
        scorer = repository.find(repository.names[0])
        if scorer is None:
            raise NotReadyError("The model is not loaded.")
        if scorer.ready:
            return Response(
                encode_json({"status": "ready", "model": scorer.name}), media_type=_JSON
            )
        failure = scorer.batcher.failure_reason
        if failure is not None:
            raise NotReadyError(f"The model {failure}")
        raise NotReadyError(
            "The model is loading." if scorer.started else "The model is not loaded."
        )

    async def info(self, request: Request) -> Response:
        self.auth.check(request.headers.get("authorization"))
        scorers = self.repository.held()
        if len(self.repository.models()) == 1 and scorers:
            return Response(encode_json(scorers[0].describe()), media_type=_JSON)
        states = {(s.name, s.version): s for s in self.repository.models()}
        models = []
        for state in states.values():
            entry = {"name": state.name, "version": state.version, "state": state.state}
            if state.reason:
                entry["reason"] = state.reason
            models.append(entry)
        described = [s.describe() for s in scorers]
        return Response(encode_json({"models": models, "loaded": described}), media_type=_JSON)

    async def metrics(self, request: Request) -> Response:
        # what is served and how much: protected like /info when keys are set
        self.auth.check(request.headers.get("authorization"))
        assert self.prometheus is not None  # the route exists only with metrics on
        text, content_type = self.prometheus.render(request.headers.get("accept"))
        return Response(text, headers={"content-type": content_type})

    async def swagger(self, request: Request) -> Response:
        query = dict(request.query_params)
        asked = query.pop("version", "2")
        kind = SWAGGER_VERSIONS.get(asked)
        if kind is None:
            raise NotFoundError(
                f"Swagger version [{asked}] is not valid. Supported versions: "
                f"[{', '.join(sorted(SWAGGER_VERSIONS))}]."
            )
        # ?version= is the document's kind, as azmlinfsrv has it: a model's version is
        # ?model_version=
        names = self.repository.names
        if "model_version" in query and "model" not in query and len(names) > 1:
            # score_target's message would point at /score
            raise BadRequestError(
                f"?model_version= goes with ?model=NAME; this server has several models "
                f"({', '.join(names)})."
            )
        if "model" in query or "model_version" in query or len(self.repository.held()) == 1:
            asked_for = {"model": query["model"]} if "model" in query else {}
            if "model_version" in query:
                asked_for["version"] = query["model_version"]
            scorers = [self._scorer(asked_for)]
        else:
            scorers = self.repository.held()
        facts = document_facts(
            self.repository, scorers, self.auth.enabled, metrics=self.prometheus is not None
        )
        return Response(encode_json(api_document(facts, kind)), media_type=_JSON)
