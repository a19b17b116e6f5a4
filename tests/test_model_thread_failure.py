"""A model thread stopped by a bug of its own is seen, not silent.

A model's errors fail their own requests and the thread goes on; a bug in the batcher
itself (the soak found one: a queue purged under the waiting thread) used to end the
thread quietly, and every later request to that model waited for its timeout while the
model still looked ready. Now its requests get a 503 at once, saying why; new ones are
refused the same way; the model is not ready, with the reason in its state; and in
explicit model control an unload and load brings it back. The bug is injected here
(``_take`` raising once): the batcher has no known bug left to trigger.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fixture_backends import EchoBackend
from scorepack import Scorer
from scorepack.batching import Batcher, BatchingConfig
from scorepack.errors import NotReadyError
from scorepack.repository import ModelSource, Repository
from serving_helpers import scoring_config, serving_repository

BODY = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}


def _row(value: float) -> dict[str, np.ndarray]:
    return {"x": np.full((1, 1), value, np.float32)}


def _break_once(batcher: Batcher) -> None:
    """The next batch the model thread takes raises, as a bug in the batcher would."""
    take: Callable[[], Any] = batcher._take

    def broken() -> Any:
        batcher._take = take  # type: ignore[method-assign]
        raise RuntimeError("injected batcher bug")

    batcher._take = broken  # type: ignore[method-assign]


def test_requests_get_the_reason_at_once_and_new_ones_are_refused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    batcher = Batcher(lambda inputs: {"y": inputs["x"] * 2}, BatchingConfig(), name="m")
    batcher.start()
    batcher.wait_ready(30)
    try:
        assert float(batcher.admit().submit(_row(3), 1).result(30).outputs["y"][0, 0]) == 6
        _break_once(batcher)
        with caplog.at_level(logging.CRITICAL, logger="scorepack"):
            future = batcher.admit().submit(_row(1), 1)
            with pytest.raises(NotReadyError) as raised:
                # at once, not after the 30 s timeout the request was admitted with
                future.result(10)
        assert "stopped serving" in str(raised.value)
        assert "RuntimeError: injected batcher bug" in str(raised.value)
        assert batcher._thread is not None
        batcher._thread.join(10)
        assert not batcher._thread.is_alive()
        assert not batcher.ready
        assert batcher.failure_reason is not None
        assert batcher.failure_reason.startswith("stopped serving")
        with pytest.raises(NotReadyError, match="stopped serving"):
            batcher.admit()
        assert batcher.inflight == 0
        assert any("the model thread stopped" in r.getMessage() for r in caplog.records)
    finally:
        batcher.stop()


def test_the_server_says_not_ready_and_a_reload_brings_the_model_back(tmp_path: Path) -> None:
    def make(name: str) -> Callable[[], Scorer]:
        def scorer() -> Scorer:
            backend = EchoBackend(tmp_path / f"{name}.echo", options={"record": "false"})
            return Scorer(backend, scoring_config(max_delay_ms=0), name=name)

        return scorer

    sources = [ModelSource("a", None, make("a")), ModelSource("b", None, make("b"))]
    repository = Repository(sources, model_control="explicit")
    with serving_repository(repository) as (_, client):
        assert client.post("/v2/models/a/infer", json=BODY).status_code == 200
        scorer = repository.find("a")
        assert scorer is not None
        _break_once(scorer.batcher)
        failed = client.post("/v2/models/a/infer", json=BODY)
        assert failed.status_code == 503, failed.text
        assert "stopped serving" in failed.json()["error"]
        # after the failure: refused at once, the model not ready with the reason,
        # the other model serving
        again = client.post("/v2/models/a/infer", json=BODY)
        assert again.status_code == 503
        assert "injected batcher bug" in again.json()["error"]
        assert client.get("/v2/models/a/ready").status_code == 503
        index = client.post("/v2/repository/index", json={}).json()
        state = {m["name"]: m for m in index}
        assert state["a"]["state"] == "UNAVAILABLE"
        assert state["a"]["reason"].startswith("stopped serving")
        assert state["b"]["state"] == "READY"
        assert client.post("/v2/models/b/infer", json=BODY).status_code == 200
        # explicit model control: an unload and a load serve it again
        assert client.post("/v2/repository/models/a/unload").status_code == 200
        assert client.post("/v2/repository/models/a/load").status_code == 200
        answer = client.post("/v2/models/a/infer", json=BODY)
        assert answer.status_code == 200, answer.text
        assert answer.json()["outputs"][0]["data"] == [1.0, 2.0]
