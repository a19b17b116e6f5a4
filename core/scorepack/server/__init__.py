"""The embedded scoring server and the one error → HTTP status table."""

from .app import ScoringApp
from .errors import STATUS_BY_ERROR, ErrorReply, error_reply
from .run import DEFAULT_HOST, DEFAULT_PORT, BackgroundServer, serve

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "STATUS_BY_ERROR",
    "BackgroundServer",
    "ErrorReply",
    "ScoringApp",
    "error_reply",
    "serve",
]
