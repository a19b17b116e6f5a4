"""A client for any scoring URL: scorepack's server, azmlinfsrv, or Azure ML.

Keys go as ``Authorization: Bearer KEY``, as Azure ML expects.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import orjson

from .codecs import sniff
from .errors import RemoteError

__all__ = ["ScoreResponse", "ScoringClient", "content_type_for", "scoring_url"]


def scoring_url(url: str, model: str | None = None, version: str | None = None) -> str:
    """``http://host:port`` → ``http://host:port/score``; a URL with a path is kept.

    ``model`` and ``version`` are added to the URL's query (``?model=NAME&version=V``,
    how ``/score`` picks one of several models), replacing any given there.
    """
    parts = urlsplit(url if "://" in url else f"http://{url}")
    path = parts.path if parts.path not in ("", "/") else "/score"
    query = parts.query
    if model or version:
        pairs = dict(parse_qsl(query, keep_blank_values=True))
        if model:
            pairs["model"] = model
        if version:
            pairs["version"] = version
        query = urlencode(pairs)
    return urlunsplit((parts.scheme, parts.netloc, path, query, ""))


def content_type_for(body: bytes) -> str:
    """The content type to send for a body, from its first bytes."""
    kind = sniff(body)
    return {
        "jpeg": "image/jpeg",
        "png": "image/png",
        "json": "application/json",
    }.get(kind or "", "application/octet-stream")


@dataclass(frozen=True)
class ScoreResponse:
    """A successful scoring answer."""

    body: dict[str, Any]
    status: int
    elapsed_ms: float
    batch_size: int | None
    request_id: str | None


class ScoringClient:
    """Posts images or JSON tensors to a scoring URL and returns parsed answers.

    ``model`` (and ``version``) pick the model on a server of several: ``/score?model=NAME``.
    """

    def __init__(
        self,
        url: str,
        *,
        key: str | None = None,
        timeout: float = 60.0,
        http: httpx.Client | None = None,
        model: str | None = None,
        version: str | None = None,
    ) -> None:
        self.url = scoring_url(url)
        base = urlsplit(self.url)
        # the URL's own query (/score?model=NAME on a server of several models) goes with
        # every request: httpx would replace it with the scoring parameters
        self._query = dict(parse_qsl(base.query))
        if model:
            self._query["model"] = model
        if version:
            self._query["version"] = version
        self.base_url = urlunsplit((base.scheme, base.netloc, "", "", ""))
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._http = http or httpx.Client(timeout=timeout)
        self._owns_http = http is None

    def score(
        self,
        data: bytes | str | Path,
        *,
        content_type: str | None = None,
        top_k: int | None = None,
        raw: bool = False,
    ) -> ScoreResponse:
        """Score image bytes, JSON bytes, or a file; raise RemoteError on an error status."""
        body = data if isinstance(data, bytes) else Path(data).read_bytes()
        params: dict[str, str] = dict(self._query)
        if top_k is not None:
            params["top_k"] = str(top_k)
        if raw:
            params["raw"] = "true"
        headers = dict(self._headers)
        headers["Content-Type"] = content_type or content_type_for(body)
        started = time.perf_counter()
        response = self._http.post(self.url, content=body, headers=headers, params=params)
        elapsed = (time.perf_counter() - started) * 1000
        if response.status_code >= 400:
            raise _remote_error(response)
        batch = response.headers.get("x-scorepack-batch-size")
        return ScoreResponse(
            body=orjson.loads(response.content),
            status=response.status_code,
            elapsed_ms=elapsed,
            batch_size=int(batch) if batch else None,
            request_id=response.headers.get("x-request-id"),
        )

    def score_tensors(self, inputs: dict[str, Any], **kwargs: Any) -> ScoreResponse:
        """Score named tensors (nested lists or NumPy arrays)."""
        body = orjson.dumps({"inputs": inputs}, option=orjson.OPT_SERIALIZE_NUMPY)
        return self.score(body, content_type="application/json", **kwargs)

    def ready(self) -> bool:
        """True when ``GET /health/ready`` answers 200."""
        try:
            return self._http.get(self.base_url + "/health/ready").status_code == 200
        except httpx.TransportError:
            return False

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> ScoringClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _remote_error(response: httpx.Response) -> RemoteError:
    try:
        error = orjson.loads(response.content)["error"]
        return RemoteError(response.status_code, str(error["message"]), str(error["code"]))
    except Exception:
        text = response.text.strip()[:500] or response.reason_phrase
        return RemoteError(response.status_code, text)
