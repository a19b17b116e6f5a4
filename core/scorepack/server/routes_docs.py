"""The V2 REST API documents, where MLServer serves its own (``scorepack.openapi_v2``):

    GET /v2/docs/dataplane.json                                the V2 routes of every model
    GET /v2/models/{name}[/versions/{v}]/docs/dataplane.json   one model's, paths filled in

Both are OpenAPI 3.0, made from the loaded models' signatures, and need no key (as
``/swagger.json``, which holds the same V2 routes beside Azure ML's). A model that is not
loaded or still loading has no signature to describe yet: 503, as ``/swagger.json``.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ..codecs import encode_json
from ..errors import NotReadyError
from ..openapi import ApiFacts
from ..openapi_v2 import DATAPLANE_PATH, dataplane_document, model_dataplane_document
from ..repository import Repository
from ..scorer import Scorer
from .auth import KeyCheck
from .routing import Route

__all__ = ["DocsRoutes", "document_facts"]


def document_facts(
    repository: Repository, scorers: list[Scorer], auth: bool, *, metrics: bool = True
) -> list[ApiFacts]:
    """The facts an API document is made from: ``scorers``, each loaded and ready (503
    naming those that are not: their signature is not known yet), served with keys
    (``auth``) and with ``/metrics`` or without."""
    if not scorers:
        raise NotReadyError("The API document is made from the models: none is loaded.")
    loading = [s.name for s in scorers if not s.ready]
    if loading:
        raise NotReadyError(
            f"The API document is made from the models: {', '.join(loading)} loading."
        )
    control = repository.model_control
    return [
        ApiFacts.for_scorer(s, auth=auth, model_control=control, metrics=metrics) for s in scorers
    ]


class DocsRoutes:
    """The V2 document routes over a repository."""

    def __init__(self, repository: Repository, auth: KeyCheck) -> None:
        self.repository = repository
        self.auth = auth

    def routes(self) -> list[Route]:
        get = ("GET",)
        return [
            Route(DATAPLANE_PATH, self.dataplane, methods=get, errors="v2"),
            Route("/v2/models/{name}/docs/dataplane.json", self.model, methods=get, errors="v2"),
            Route(
                "/v2/models/{name}/versions/{version}/docs/dataplane.json",
                self.model,
                methods=get,
                errors="v2",
            ),
        ]

    async def dataplane(self, request: Request) -> Response:
        repository = self.repository
        facts = document_facts(repository, repository.held(), self.auth.enabled)
        return _json(dataplane_document(facts))

    async def model(self, request: Request) -> Response:
        name, version = request.path_params["name"], request.path_params.get("version")
        scorer = self.repository.find(name, version)  # 404 for an unknown name or version
        if scorer is None:
            label = f"model {name!r}" + (f" version {version!r}" if version else "")
            raise NotReadyError(f"The {label} is not loaded: load it first.")
        (facts,) = document_facts(self.repository, [scorer], self.auth.enabled)
        return _json(model_dataplane_document(facts))


def _json(document: dict[str, Any]) -> Response:
    return Response(encode_json(document), media_type="application/json")
