"""How a route tells the app what it scored with, for the access line and the metrics."""

from __future__ import annotations

from typing import Any

from starlette.types import Scope

from ..scorer import Scorer

__all__ = ["CLIENT_CLOSED", "note_result", "note_scoring"]

#: the status a request whose client left before its answer is counted and logged with
#: (nginx's "client closed request"; no reply carries it)
CLIENT_CLOSED = 499


def note_scoring(scope: Scope, scorer: Scorer, protocol: str) -> None:
    """The request is for ``scorer`` over ``protocol`` (``azureml``, ``v2``...): its answer,
    whatever the status, is counted and logged with that model and version."""
    scope["scorepack.scorer"] = scorer
    scope["scorepack.protocol"] = protocol
    scope["scorepack.result"] = None


def note_result(scope: Scope, result: Any) -> None:
    """The request was scored: ``result`` has ``batch_size`` and ``queue_seconds``."""
    scope["scorepack.result"] = result
