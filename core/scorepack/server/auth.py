"""Bearer keys, as Azure ML uses them: ``Authorization: Bearer KEY``.

Two keys may be active at once (primary and secondary) so they can be rotated without
downtime. Keys are compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from ..errors import UnauthorizedError

__all__ = ["KeyCheck"]


class KeyCheck:
    """Accepts a request when its bearer token equals one of the configured keys."""

    def __init__(self, keys: Iterable[str] = ()) -> None:
        self._keys = tuple(k.encode("utf-8") for k in keys if k)

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def check(self, authorization: str | None) -> None:
        """Raise :class:`~scorepack.errors.UnauthorizedError` unless the header carries a key."""
        if not self._keys:
            return
        if not authorization:
            raise UnauthorizedError("Missing key: send the header 'Authorization: Bearer KEY'.")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise UnauthorizedError("Malformed Authorization header; expected 'Bearer KEY'.")
        presented = token.strip().encode("utf-8")
        # compare against every key, so the time taken says nothing about which matched
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(presented, key)
        if not matched:
            raise UnauthorizedError("The key is not valid for this service.")
