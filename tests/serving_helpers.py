"""Run a scorer behind the embedded server on 127.0.0.1 for one test, and talk to it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np

from scorepack import Backend, BatchingConfig, PreprocessConfig, Scorer, ScoringConfig
from scorepack.repository import Repository
from scorepack.server import BackgroundServer

if TYPE_CHECKING:
    from scorepack_tensorflow import TensorFlowBackend

CLIENT_TIMEOUT = 30.0


class Served:
    """A running server, its scorer and an HTTP client bound to it."""

    def __init__(self, server: BackgroundServer, scorer: Scorer, client: httpx.Client) -> None:
        self.server = server
        self.scorer = scorer
        self.client = client
        self.url = server.url

    @property
    def backend(self) -> Any:
        return self.scorer.backend

    def score(
        self,
        body: bytes,
        content_type: str | None = None,
        *,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """POST /score with ``body`` (no content type unless given)."""
        sent = dict(headers or {})
        if content_type is not None:
            sent["content-type"] = content_type
        return self.client.post("/score", content=body, params=params, headers=sent)

    def score_json(self, inputs: Any, **params: str) -> httpx.Response:
        """POST JSON tensors ``{"inputs": inputs}``."""
        body = httpx.Request("POST", "/", json={"inputs": _listify(inputs)}).read()
        return self.score(body, "application/json", params=params or None)


def _listify(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _listify(v) for k, v in value.items()}
    return value


def scoring_config(
    *,
    preprocess: PreprocessConfig | None = None,
    warmup: bool = True,
    max_body_bytes: int | None = None,
    max_image_pixels: int | None = None,
    **batching: Any,
) -> ScoringConfig:
    """A ScoringConfig with only the fields a test cares about changed."""
    kwargs: dict[str, Any] = {"warmup": warmup}
    if preprocess is not None:
        kwargs["preprocess"] = preprocess
    if max_body_bytes is not None:
        kwargs["max_body_bytes"] = max_body_bytes
    if max_image_pixels is not None:
        kwargs["max_image_pixels"] = max_image_pixels
    if batching:
        kwargs["batching"] = BatchingConfig(**batching)
    return ScoringConfig(**kwargs)


@contextmanager
def serving(
    backend: Backend,
    config: ScoringConfig | None = None,
    *,
    wait_ready: bool = True,
    **server_kw: Any,
) -> Iterator[Served]:
    """Serve ``backend`` on a free loopback port until the block ends; the test that
    starts it stops it, even when it fails."""
    scorer = Scorer(backend, config or ScoringConfig())
    server = BackgroundServer(scorer, **server_kw)
    server.start(wait_ready=wait_ready)
    try:
        with httpx.Client(base_url=server.url, timeout=CLIENT_TIMEOUT) as client:
            yield Served(server, scorer, client)
    finally:
        server.stop()


@contextmanager
def serving_repository(
    repository: Repository, *, wait_ready: bool = True, **server_kw: Any
) -> Iterator[tuple[BackgroundServer, httpx.Client]]:
    """Serve a repository of models on a free loopback port until the block ends."""
    server = BackgroundServer(repository, **server_kw)
    server.start(wait_ready=wait_ready)
    try:
        with httpx.Client(base_url=server.url, timeout=CLIENT_TIMEOUT) as client:
            yield server, client
    finally:
        server.stop()


def tf_backend(path: Path, **options: Any) -> TensorFlowBackend:
    """The TensorFlow backend on the CPU (the GPU path has its own tests)."""
    from scorepack_tensorflow import TensorFlowBackend

    return TensorFlowBackend(path, device="cpu", options=options)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Poll until ``condition()`` holds; fail the test (not hang) when it never does."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def error_of(response: httpx.Response) -> dict[str, str]:
    """The ``{"error": {"code", "message"}}`` body of an error reply, checked for shape."""
    assert response.headers["content-type"].startswith("application/json"), response.text
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    assert body["error"]["message"], body
    return body["error"]
