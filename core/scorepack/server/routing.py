"""Starlette routing with scorepack's answers for the two routing errors.

Starlette answers an unknown path or a wrong method with its own plain-text 404/405; here
both raise scorepack errors instead, so their status, JSON body and ``Allow`` header come
from the one error table (``server/errors.py``) like every other error. Each route says
how its errors are written: Azure ML's ``{"error": {"code", "message"}}`` or V2's
``{"error": "message"}`` (:data:`ERROR_STYLE`, read by the app when it answers an error).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route as _StarletteRoute
from starlette.routing import Router
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import MethodNotAllowedError, NotFoundError

__all__ = ["ERROR_STYLE", "Endpoint", "Route", "make_router"]

Endpoint = Callable[[Request], Awaitable[Response]]
#: the scope key naming the error body style of the route that answers: "azureml" or "v2"
ERROR_STYLE = "scorepack.errors"


class Route(_StarletteRoute):
    """A route that allows exactly ``methods`` (Starlette adds HEAD to GET; this does not)
    and answers any other method with :class:`~scorepack.errors.MethodNotAllowedError`."""

    def __init__(
        self, path: str, endpoint: Endpoint, *, methods: Sequence[str], errors: str = "azureml"
    ) -> None:
        super().__init__(path, endpoint, methods=list(methods))
        self.errors = errors
        self.allowed = tuple(methods)
        self.methods = set(methods)
        # Starlette's request_response also looks up per-app exception handlers; there are
        # none here (errors go to the one table, in ScoringApp), so call the endpoint directly
        self.app = _request_response(endpoint)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        # the route's own path (a template once it has parameters) labels its metrics
        scope["scorepack.route"] = self.path
        scope[ERROR_STYLE] = self.errors
        if scope["method"] not in self.allowed:
            raise MethodNotAllowedError(scope["method"], scope["path"], self.allowed)
        await self.app(scope, receive, send)


def _request_response(endpoint: Endpoint) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        response = await endpoint(Request(scope, receive, send))
        await response(scope, receive, send)

    return app


async def _not_found(scope: Scope, receive: Receive, send: Send) -> None:
    path = scope["path"]
    if path == "/v2" or path.startswith("/v2/"):
        scope[ERROR_STYLE] = "v2"
        raise NotFoundError(
            f"No route {path}. Infer with POST /v2/models/NAME/infer; GET /v2/models lists them."
        )
    raise NotFoundError(f"No route {path}. Score with POST /score.")


def make_router(routes: Sequence[Route], lifespan: Callable[..., object]) -> Router:
    """A router over ``routes``: unknown paths raise NotFoundError, and no redirects
    between ``/x`` and ``/x/`` (a client posting to the wrong one should hear so)."""
    return Router(
        list(routes),
        redirect_slashes=False,
        default=_not_found,
        lifespan=lifespan,  # type: ignore[arg-type]
    )
