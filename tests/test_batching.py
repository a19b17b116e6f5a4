"""Dynamic batching observed over HTTP, on a real TensorFlow model.

To make "N concurrent requests in fewer model calls" certain rather than likely, the
first request is held inside the model (a closed gate) while the others queue up behind
it; then the gate opens and the batcher has them all at once. Everything else (the
model, the server, the batcher, the HTTP clients) is the real thing.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fixture_backends import SlowBackend
from images import jpeg
from metrics_helpers import scrape, value
from serving_helpers import Served, scoring_config, serving, wait_for

pytest.importorskip("tensorflow")

from scorepack_tensorflow import TensorFlowBackend


class GatedTF(TensorFlowBackend):
    """The TensorFlow backend, recording its calls; a closed gate holds ``predict``."""

    def __init__(self, path: Path, **kwargs: Any) -> None:
        super().__init__(path, device="cpu", **kwargs)
        self.calls: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.calls.append(len(next(iter(inputs.values()))))
        self.entered.set()
        assert self.gate.wait(30), "gate never opened"
        return super().predict(inputs)


def score_image(served: Served, body: bytes) -> tuple[np.ndarray, int]:
    """Raw probs of one image, and the size of the model call it rode in."""
    response = served.score(body, "image/jpeg", params={"raw": "true"})
    assert response.status_code == 200, response.text
    probs = np.asarray(response.json()["outputs"]["probs"], dtype=np.float32)
    return probs, int(response.headers["x-scorepack-batch-size"])


def reference_probs(path: Path, images: np.ndarray) -> np.ndarray:
    """The SavedModel called directly by TensorFlow, no scorepack in between."""
    import tensorflow as tf

    fn = tf.saved_model.load(str(path)).signatures["serving_default"]
    return fn(image=tf.constant(images, tf.float32))["probs"].numpy()


def test_concurrent_requests_share_model_calls_and_match_unbatched(small_cnn_path: Path) -> None:
    backend = GatedTF(small_cnn_path)
    bodies = [jpeg(48, 40, seed=s) for s in range(6)]
    with serving(backend, scoring_config(max_batch_size=8)) as served:
        warmup = len(backend.calls)
        with ThreadPoolExecutor(len(bodies)) as pool:
            backend.gate.clear()
            backend.entered.clear()
            try:
                first = pool.submit(score_image, served, bodies[0])
                assert backend.entered.wait(20)
                rest = [pool.submit(score_image, served, b) for b in bodies[1:]]
                # queued means decoded (queue_depth also counts requests still being decoded)
                wait_for(lambda: served.scorer.batcher.queued == 5, "five decoded requests")
            finally:
                backend.gate.set()
            together = [first.result(30), *(f.result(30) for f in rest)]
        # six requests, two model calls: the held one, then the five that queued behind it
        assert backend.calls[warmup:] == [1, 5]
        assert [size for _, size in together] == [1, 5, 5, 5, 5, 5]
        samples = scrape(served.client)
        assert value(samples, "scorepack_model_calls_total", model=served.scorer.name) == 2
        assert value(samples, "scorepack_inference_rows_total", model=served.scorer.name) == 6
        assert value(samples, "scorepack_requests_total", route="/score", status="200") == 6
        assert value(samples, "scorepack_batch_size_bucket", le="4.0") == 1
        assert value(samples, "scorepack_batch_size_bucket", le="8.0") == 2
        # five of six requests waited in the queue while the first held the model
        assert value(samples, "scorepack_queue_wait_seconds_count") == 6

        alone = [score_image(served, b) for b in bodies]
        assert [size for _, size in alone] == [1] * 6
    for (batched, _), (single, _) in zip(together, alone, strict=True):
        np.testing.assert_allclose(batched, single, rtol=1e-5, atol=1e-6)
    # and different images gave different answers: the rows were not mixed up
    assert not np.allclose(together[1][0], together[2][0])


def test_more_rows_than_max_batch_size_are_split_and_reassembled(small_cnn_path: Path) -> None:
    backend = GatedTF(small_cnn_path)
    rows = np.random.default_rng(0).uniform(0, 255, (10, 32, 32, 3)).astype(np.float32)
    with serving(backend, scoring_config(max_batch_size=4)) as served:
        warmup = len(backend.calls)
        response = served.score_json({"image": rows}, raw="true", top_k="10")
        assert response.status_code == 200, response.text
        assert backend.calls[warmup:] == [4, 4, 2]
        assert response.headers["x-scorepack-batch-size"] == "4"
    body = response.json()
    probs = np.asarray(body["outputs"]["probs"], np.float32)
    want = reference_probs(small_cnn_path, rows)
    np.testing.assert_allclose(probs, want, rtol=1e-5, atol=1e-6)
    assert len(body["predictions"]) == 10
    for row, prediction in zip(want, body["predictions"], strict=True):
        assert [p["index"] for p in prediction["top_k"]] == np.argsort(-row, kind="stable").tolist()


def test_split_request_and_a_batch_mate_keep_their_rows(tmp_path: Path) -> None:
    backend = SlowBackend(tmp_path / "m.slow")
    big = [[float(i), float(-i)] for i in range(6)]
    with serving(backend, scoring_config(max_batch_size=4)) as served:
        warmup = len(backend.calls)
        with ThreadPoolExecutor(3) as pool:
            backend.gate.clear()
            backend.entered.clear()
            try:
                blocker = pool.submit(served.score_json, {"x": [[9.0, 9.0]]}, raw="true")
                assert backend.entered.wait(20)
                split = pool.submit(served.score_json, {"x": big}, raw="true")
                wait_for(lambda: served.scorer.batcher.queued == 2, "the split request queued")
                mate = pool.submit(served.score_json, {"x": [[7.0, 7.0]]}, raw="true")
                wait_for(lambda: served.scorer.batcher.queued == 3, "its batch-mate queued")
            finally:
                backend.gate.set()
            answers = [f.result(20) for f in (blocker, split, mate)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert answers[1].json()["outputs"]["y"] == big
    assert answers[2].json()["outputs"]["y"] == [[7.0, 7.0]]
    # 6 rows went as 4 + 2, and the 1-row request filled the second call
    assert backend.calls[warmup:] == [1, 4, 3]


def test_a_lone_request_is_not_held_for_the_delay(tmp_path: Path, small_cnn_path: Path) -> None:
    config = scoring_config(max_batch_size=32, max_delay_ms=600_000)
    # a ten-minute delay and a 30-second client timeout: only a batcher that does not
    # wait for company can answer at all
    with serving(GatedTF(small_cnn_path), config) as served:
        _, size = score_image(served, jpeg(seed=3))
        assert size == 1
        assert served.scorer.predict({"image": np.zeros((2, 32, 32, 3), np.float32)})[
            "probs"
        ].shape == (2, 10)
    with serving(SlowBackend(tmp_path / "m.slow"), config) as served:
        for i in range(3):
            response = served.score_json({"x": [[float(i), 0.0]]}, raw="true")
            assert response.headers["x-scorepack-batch-size"] == "1"


def test_many_clients_at_once_get_their_own_answers(small_cnn_path: Path) -> None:
    backend = GatedTF(small_cnn_path)
    bodies = [jpeg(40, 40, seed=100 + s) for s in range(16)]
    with serving(backend, scoring_config(max_batch_size=8, max_delay_ms=20)) as served:
        warmup = len(backend.calls)
        alone = [score_image(served, b)[0] for b in bodies]
        with ThreadPoolExecutor(8) as pool:
            together = list(pool.map(lambda b: score_image(served, b), bodies))
        calls = backend.calls[warmup + len(bodies) :]
    assert sum(calls) == len(bodies) and max(calls) <= 8
    for (batched, size), single in zip(together, alone, strict=True):
        assert 1 <= size <= 8
        np.testing.assert_allclose(batched, single, rtol=1e-5, atol=1e-6)


def test_one_thread_owns_the_model(tmp_path: Path) -> None:
    backend = SlowBackend(tmp_path / "m.slow")
    with serving(backend, scoring_config(max_batch_size=4)) as served:
        with ThreadPoolExecutor(6) as pool:
            list(pool.map(lambda i: served.score_json({"x": [[float(i), 0.0]]}), range(12)))
        served.scorer.predict({"x": np.ones((3, 2), np.float32)})
    assert len(backend.predict_thread) == 1
    (name,) = backend.predict_thread
    assert name.startswith("scorepack-")
    assert backend.unloaded  # stopping the server unloads the model, on that thread
