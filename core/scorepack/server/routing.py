"""Starlette routing with scorepack's answers for the two routing errors.

Starlette answers an unknown path or a wrong method with its own plain-text 404/405; here
both raise scorepack errors instead, so their status, JSON body and ``Allow`` header come
from the one error table (``server/errors.py``) like every other error. Each route says
how its errors are written: Azure ML's ``{"error": {"code", "message"}}`` or V2's
``{"error": "message"}`` (:data:`ERROR_STYLE`, read by the app when it answers an error).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Router
from starlette.routing import Route as _StarletteRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import MethodNotAllowedError, NotFoundError
from .limits import HttpLimits

__all__ = ["ERROR_STYLE", "Endpoint", "Route", "ServerState", "make_router"]

Endpoint = Callable[[Request], Awaitable[Response]]
#: the scope key naming the error body style of the route that answers: "azureml" or "v2"
ERROR_STYLE = "scorepack.errors"


class ServerState(Protocol):
    """What the routes read of the server they run in: its limits (the body reader's
    read timeout) and whether it is draining (readiness answers 503 meanwhile)."""

    limits: HttpLimits
    draining: bool


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


#: (method, root path, path) → route decisions a router remembers; more are decided afresh
_KNOWN_MAX = 1024


class _RememberingRouter(Router):
    """Starlette's router, remembering which route it chose for each method and path.

    Starlette tries the routes in order for every request, each a regular expression and
    a new scope; a server answers the same few paths over and over. The choice depends
    only on the method and the path (every route here is a plain :class:`Route`), so it
    is made once, as Starlette makes it (the first full match, else the first route whose
    path matches with another method), and looked up after that. Paths no route matches
    (the 404s) are never remembered.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._known: dict[tuple[str, str, str], tuple[BaseRoute, Scope]] = {}

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().app(scope, receive, send)
            return
        key = (scope["method"], scope.get("root_path", ""), scope["path"])
        known = self._known.get(key)
        if known is None:
            known = self._choose(scope)
            if known is None:
                await super().app(scope, receive, send)  # the default: 404
                return
            if len(self._known) < _KNOWN_MAX:
                self._known[key] = known
        route, child_scope = known
        scope.update(child_scope)
        scope["path_params"] = dict(child_scope["path_params"])
        await route.handle(scope, receive, send)

    def _choose(self, scope: Scope) -> tuple[BaseRoute, Scope] | None:
        partial = None
        for route in self.routes:
            match, child_scope = route.matches(scope)
            if match == Match.FULL:
                return route, child_scope
            if match == Match.PARTIAL and partial is None:
                partial = (route, child_scope)
        return partial


def make_router(routes: Sequence[Route], lifespan: Callable[..., object]) -> Router:
    """A router over ``routes``: unknown paths raise NotFoundError, and no redirects
    between ``/x`` and ``/x/`` (a client posting to the wrong one should hear so)."""
    return _RememberingRouter(
        list(routes),
        redirect_slashes=False,
        default=_not_found,
        lifespan=lifespan,
    )
