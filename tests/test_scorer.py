"""The Scorer in-process: ``scorepack.load`` and the threaded path (``handle``) that the
generated Azure ML ``score.py`` uses, with the same preprocessing and batching as HTTP."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import scorepack
from fixture_backends import EchoBackend, SlowBackend
from images import jpeg
from scorepack import Device, Scorer
from scorepack.errors import (
    BadRequestError,
    InvalidTensorError,
    NotReadyError,
    QueueFullError,
    ScoringTimeoutError,
)
from scorepack.scorer import warmup_sizes
from serving_helpers import scoring_config, serving, tf_backend


def test_load_scores_bytes_paths_and_arrays_like_the_server(
    small_cnn_path: Path, tmp_path: Path
) -> None:
    body = jpeg(50, 40, seed=21)
    (tmp_path / "cat.jpg").write_bytes(body)
    with scorepack.load(small_cnn_path, device="cpu") as scorer:
        assert scorer.ready
        assert scorer.backend.describe()["device"] == "cpu"
        from_bytes = scorer.score(body, top_k=3, raw=True)
        from_path = scorer.score(tmp_path / "cat.jpg", top_k=3, raw=True)
        assert from_bytes["predictions"] == from_path["predictions"]
        # raw outputs stay NumPy arrays in-process
        np.testing.assert_array_equal(from_bytes["outputs"]["probs"], from_path["outputs"]["probs"])
        assert len(from_bytes["predictions"][0]["top_k"]) == 3
        rows = np.random.default_rng(1).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
        direct = scorer.predict({"image": rows})["probs"]
        assert direct.shape == (3, 10)
        np.testing.assert_allclose(direct.sum(axis=1), 1.0, rtol=1e-5)
        with pytest.raises(InvalidTensorError, match="'image'"):
            scorer.predict({"image": np.zeros((1, 8, 8, 3))})
    with serving(tf_backend(small_cnn_path)) as served:
        over_http = served.score(body, params={"top_k": "3", "raw": "true"}).json()
    np.testing.assert_allclose(
        np.asarray(over_http["outputs"]["probs"]),
        np.asarray(from_bytes["outputs"]["probs"]),
        rtol=1e-6,
    )
    assert [p["index"] for p in over_http["predictions"][0]["top_k"]] == [
        p["index"] for p in from_bytes["predictions"][0]["top_k"]
    ]


def test_threaded_callers_are_batched_and_get_their_own_rows(tmp_path: Path) -> None:
    backend = SlowBackend(tmp_path / "m.slow")
    scorer = Scorer(backend, scoring_config(max_batch_size=16)).start(timeout=20)
    try:
        warmup = len(backend.calls)
        backend.gate.clear()
        backend.entered.clear()
        with ThreadPoolExecutor(6) as pool:
            try:
                first = pool.submit(
                    scorer.handle, b'{"inputs": [[0, 0]]}', "application/json", {"raw": "1"}
                )
                assert backend.entered.wait(20)
                rest = [
                    pool.submit(
                        scorer.handle, f'{{"inputs": [[{i}, {i}]]}}'.encode(), None, {"raw": "1"}
                    )
                    for i in range(1, 6)
                ]
                deadline = threading.Event()
                while scorer.batcher.queued < 5 and not deadline.wait(0.005):
                    pass
            finally:
                backend.gate.set()
            results = [first.result(20), *(f.result(20) for f in rest)]
        assert backend.calls[warmup:] == [1, 5]
        assert [r.batch_size for r in results] == [1, 5, 5, 5, 5, 5]
        assert [r.body["outputs"]["y"].tolist() for r in results] == [
            [[float(i)] * 2] for i in range(6)
        ]
    finally:
        scorer.close()


def test_threaded_path_times_out_and_refuses_when_full(tmp_path: Path) -> None:
    backend = SlowBackend(tmp_path / "m.slow")
    config = scoring_config(max_batch_size=1, max_queue_size=1, timeout_ms=200)
    scorer = Scorer(backend, config).start(timeout=20)
    try:
        backend.gate.clear()
        backend.entered.clear()
        with ThreadPoolExecutor(2) as pool:
            try:
                held = pool.submit(scorer.predict, {"x": [[1, 1]]})
                assert backend.entered.wait(20)
                queued = pool.submit(scorer.predict, {"x": [[2, 2]]})
                while scorer.batcher.queue_depth < 1:
                    threading.Event().wait(0.005)
                with pytest.raises(QueueFullError) as full:
                    scorer.predict({"x": [[3, 3]]})
                assert (full.value.retry_after or 0) >= 1
                with pytest.raises(ScoringTimeoutError):
                    queued.result(20)
                with pytest.raises(ScoringTimeoutError):
                    held.result(20)
            finally:
                backend.gate.set()
        np.testing.assert_array_equal(scorer.predict({"x": [[4, 4]]})["y"], [[4, 4]])
        assert (2.0, 2.0) not in backend.seen
    finally:
        scorer.close()


def test_not_ready_before_start_and_after_close(tmp_path: Path) -> None:
    backend = EchoBackend(tmp_path / "m.echo")
    scorer = Scorer(backend)
    with pytest.raises(NotReadyError):
        scorer.predict({"x": [[1, 2]]})
    scorer.start(timeout=20)
    assert scorer.predict({"x": [[1, 2]]})["y"].tolist() == [[1.0, 2.0]]
    scorer.close()
    assert backend.unloaded
    with pytest.raises(NotReadyError, match="shutting down"):
        scorer.predict({"x": [[1, 2]]})


def test_images_need_an_image_model(tmp_path: Path) -> None:
    with Scorer(EchoBackend(tmp_path / "m.echo")).start(timeout=20) as scorer:
        with pytest.raises(BadRequestError, match="JSON tensors"):
            scorer.score(jpeg())
        assert scorer.describe()["preprocess"] is None


def test_describe(small_cnn_path: Path) -> None:
    with scorepack.load(small_cnn_path, device="cpu") as scorer:
        info = scorer.describe()
    assert info["name"] == small_cnn_path.name
    assert info["classifier_output"] == "probs"
    assert info["preprocess"]["size"] == [32, 32]
    assert info["backend"]["device"] == "cpu"


class CudaEchoBackend(EchoBackend):
    """An echo that says it runs on a GPU (the warm-up plan follows the device)."""

    def load(self) -> None:
        super().load()
        self.device = Device.parse("cuda:0")


def test_warm_up_covers_every_batch_size_on_a_gpu(tmp_path: Path) -> None:
    """Each new batch shape pays cuDNN algorithm search (and TensorRT/XLA autotuning) on
    its first call on a GPU: the warm-up runs every size the batcher can form, so no live
    request pays it. Warm-up had covered sizes 1 and max only."""
    backend = CudaEchoBackend(tmp_path / "m.echo")
    with Scorer(backend, scoring_config(max_batch_size=12)).start(timeout=20) as scorer:
        assert scorer.ready
        # the largest first: the allocator reserves the peak once
        assert backend.calls[:12] == list(range(12, 0, -1))
        # then the preferred batch size's timed calls (batch_sizing.py), at halved sizes
        assert set(backend.calls[12:]) <= {12, 6, 3, 1}
    cpu = EchoBackend(tmp_path / "m.echo")
    with Scorer(cpu, scoring_config(max_batch_size=12)).start(timeout=20):
        assert cpu.calls[:2] == [1, 12]  # on a CPU, the two ends
        assert set(cpu.calls[2:]) <= {12, 6, 3, 1}
    assert warmup_sizes(1, True) == [1] and warmup_sizes(4, False) == [1, 4]
