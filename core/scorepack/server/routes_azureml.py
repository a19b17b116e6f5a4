"""Azure ML's routes, as azmlinfsrv answers them, so one client works against both:

    POST /score          score an image or JSON tensors       (auth when keys are set)
    GET  /score          405, as azmlinfsrv answers
    GET  /               200 liveness, always
    GET  /health/ready   200 once the model is loaded and warmed up, else 503
    GET  /info           what is served: backend, device, signature, preprocessing (auth)
    GET  /metrics        Prometheus counters

Probes never wait on the model or the queue.
"""

from __future__ import annotations

from collections import Counter
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response

from ..codecs import encode_json
from ..errors import NotReadyError
from ..scorer import Scorer
from .auth import KeyCheck
from .body import read_body
from .metrics import render_metrics
from .routing import Route

__all__ = ["AzureMLRoutes"]

_JSON = "application/json"


class AzureMLRoutes:
    """The Azure ML endpoints over one scorer."""

    def __init__(self, scorer: Scorer, auth: KeyCheck, responses: Counter[tuple[str, int]]) -> None:
        self.scorer = scorer
        self.auth = auth
        self.responses = responses

    def routes(self) -> list[Route]:
        return [
            Route("/score", self.score, methods=("POST",)),
            Route("/", self.live, methods=("GET", "HEAD")),
            Route("/health/ready", self.ready, methods=("GET", "HEAD")),
            Route("/info", self.info, methods=("GET",)),
            Route("/metrics", self.metrics, methods=("GET",)),
        ]

    async def score(self, request: Request) -> Response:
        self.auth.check(request.headers.get("authorization"))
        body = await read_body(request, self.scorer.config.max_body_bytes)
        # parse_qsl drops blank values (``?top_k=``), as the server always has
        query = dict(parse_qsl(request.scope["query_string"].decode("latin-1")))
        result = await self.scorer.handle_async(body, request.headers.get("content-type"), query)
        return Response(
            encode_json(result.body),
            headers={"x-scorepack-batch-size": str(result.batch_size)},
            media_type=_JSON,
        )

    async def live(self, request: Request) -> Response:
        return Response(b"Healthy", media_type="text/plain; charset=utf-8")

    async def ready(self, request: Request) -> Response:
        scorer = self.scorer
        if scorer.ready:
            return Response(
                encode_json({"status": "ready", "model": scorer.name}), media_type=_JSON
            )
        failure = scorer.batcher.failure
        if failure is not None:
            raise NotReadyError(f"The model failed to load: {failure}")
        raise NotReadyError(
            "The model is loading." if scorer.started else "The model is not loaded."
        )

    async def info(self, request: Request) -> Response:
        self.auth.check(request.headers.get("authorization"))
        return Response(encode_json(self.scorer.describe()), media_type=_JSON)

    async def metrics(self, request: Request) -> Response:
        return Response(
            render_metrics(self.scorer, self.responses).encode(),
            media_type="text/plain; version=0.0.4; charset=utf-8",
        )
