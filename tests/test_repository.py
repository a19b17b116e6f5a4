"""The model repository: versions and their default, states and reasons, load failures
that leave the others serving, and unload letting admitted requests finish first.

Fixture backends (no framework); the gates of SlowBackend hold the model thread so the
in-flight states are reached structurally, never by sleeping.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from fixture_backends import EchoBackend, SlowBackend
from scorepack import Scorer
from scorepack.errors import (
    ModelControlError,
    ModelLoadError,
    ModelNotFoundError,
    NotReadyError,
    PackageError,
)
from scorepack.repository import (
    LOADING,
    READY,
    UNAVAILABLE,
    UNLOADING,
    ModelSource,
    Repository,
    version_key,
)
from serving_helpers import wait_for

ROW = {"x": np.array([[1.0, 2.0]], dtype=np.float32)}


def echo_source(
    tmp_path: Path, name: str, version: str | None = None, **options: str
) -> ModelSource:
    def create() -> Scorer:
        return Scorer(
            EchoBackend(tmp_path / f"{name}.echo", options=options), name=name, version=version
        )

    return ModelSource(name, version, create, origin=str(tmp_path))


def test_version_order() -> None:
    assert sorted(["10", "9", "2", "a", None], key=version_key) == [None, "a", "2", "9", "10"]


def test_versions_default_to_the_highest_ready(tmp_path: Path) -> None:
    repo = Repository(
        [
            echo_source(tmp_path, "m", "1"),
            echo_source(tmp_path, "m", "10"),
            echo_source(tmp_path, "m", "9"),
        ]
    )
    repo.start()
    try:
        repo.wait_ready(30)
        assert repo.ready
        assert repo.versions("m") == ["1", "9", "10"]
        assert repo.get("m").version == "10"
        assert repo.get("m", "9").version == "9"
        assert repo.get("m", "9").name == "m"
        assert [(s.version, s.state) for s in repo.models()] == [
            ("1", READY),
            ("9", READY),
            ("10", READY),
        ]
        with pytest.raises(ModelNotFoundError, match=r"no version '3'.*: 1, 9, 10\."):
            repo.get("m", "3")
        with pytest.raises(ModelNotFoundError, match=r"Unknown model 'n'.*: m\."):
            repo.get("n")
        np.testing.assert_array_equal(repo.get("m").predict(ROW)["y"], ROW["x"])
    finally:
        repo.close()


def test_a_load_failure_leaves_the_others_serving(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    good = echo_source(tmp_path, "good")
    bad = echo_source(tmp_path, "bad", load_delay="not a number")
    repo = Repository([good, bad])
    repo.start()
    try:
        wait_for(lambda: repo.state("bad").state == UNAVAILABLE, "the bad model to fail")
        repo.find("good").wait_ready(30)  # type: ignore[union-attr]
        state = repo.state("bad")
        assert "failed to load" in state.reason and "not a number" in state.reason
        assert any(
            "bad" in r.getMessage() and "not a number" in r.getMessage() for r in caplog.records
        )
        assert not repo.ready  # the server says so, and still serves the good one
        np.testing.assert_array_equal(repo.get("good").predict(ROW)["y"], ROW["x"])
        with pytest.raises(NotReadyError, match="'bad' is not ready: failed to load"):
            repo.get("bad")
        assert [s.name for s in repo.scorers()] == ["good"]
    finally:
        repo.close()


def test_a_load_reads_the_models_sources_again(tmp_path: Path) -> None:
    """With ``rescan`` (a repository folder), each load takes the model's sources anew:
    versions added and removed, a model unknown at the start, an unreadable folder."""
    now: dict[str, list[ModelSource]] = {"m": [echo_source(tmp_path, "m", "1")]}

    def rescan(name: str) -> list[ModelSource] | None:
        if name == "broken":
            raise PackageError("its settings file is not YAML")
        return now.get(name)

    repo = Repository(now["m"], model_control="explicit", rescan=rescan)
    repo.start()
    try:
        repo.wait_ready(30)
        first = repo.get("m", "1")
        now["m"] = [echo_source(tmp_path, "m", "1"), echo_source(tmp_path, "m", "2")]
        now["n"] = [echo_source(tmp_path, "n")]
        repo.load("m", timeout=30)
        assert repo.versions("m") == ["1", "2"] and repo.get("m") is repo.get("m", "2")
        assert repo.get("m", "1") is first  # loaded already: kept as it is
        repo.load("n", timeout=30)
        assert repo.names == ["m", "n"]
        np.testing.assert_array_equal(repo.get("n").predict(ROW)["y"], ROW["x"])
        now["m"] = [echo_source(tmp_path, "m", "2")]
        repo.load("m", timeout=30)
        assert repo.versions("m") == ["2"] and not first.ready  # closed, dropped
        assert [(s.name, s.version) for s in repo.models()] == [("m", "2"), ("n", None)]
        with pytest.raises(ModelNotFoundError, match="Unknown model 'zz'"):
            repo.load("zz")
        with pytest.raises(ModelLoadError, match="not YAML"):
            repo.load("broken")
        assert repo.names == ["m", "n"]
    finally:
        repo.close()


def test_model_control_none_refuses_load_and_unload(tmp_path: Path) -> None:
    repo = Repository([echo_source(tmp_path, "m")])
    repo.start()
    try:
        for action in (repo.load, repo.unload):
            with pytest.raises(ModelControlError, match="--model-control explicit"):
                action("m")
        with pytest.raises(ValueError, match="model control"):
            Repository([echo_source(tmp_path, "m")], model_control="poll")
    finally:
        repo.close()


def test_load_at_start_names_the_models_start_loads(tmp_path: Path) -> None:
    sources = [echo_source(tmp_path, "a"), echo_source(tmp_path, "b")]
    repo = Repository(sources, model_control="explicit", load_at_start=["b"])
    repo.start()
    try:
        repo.wait_ready(30)
        states = {s.name: (s.state, s.reason) for s in repo.models()}
        assert states == {"a": ("UNAVAILABLE", "not loaded"), "b": ("READY", "")}
        assert repo.ready  # what was not asked for is not awaited
        repo.load("a", timeout=30)
        np.testing.assert_array_equal(repo.get("a").predict(ROW)["y"], ROW["x"])
    finally:
        repo.close()
    # "*" is every model, as Triton's --load-model=*
    both = [echo_source(tmp_path, "a"), echo_source(tmp_path, "b")]
    assert Repository(both, model_control="explicit", load_at_start=["*"]).load_at_start is None
    # and alone, as Triton requires
    with pytest.raises(ValueError, match="'\\*' loads every model: give it alone"):
        Repository(both, model_control="explicit", load_at_start=["*", "a"])


def test_explicit_control_may_start_with_no_model(tmp_path: Path) -> None:
    from scorepack.repository import score_target

    empty = Repository([], model_control="explicit")
    empty.start()
    empty.wait_ready(5)
    assert empty.ready and empty.names == [] and empty.models() == []
    # /score's rule: nothing to score yet is "not ready" (503), an unknown name 404
    with pytest.raises(NotReadyError, match="serves no model yet"):
        score_target(empty, {})
    with pytest.raises(ModelNotFoundError):
        score_target(empty, {"model": "m"})
    with pytest.raises(ValueError, match="holds no model yet"):
        Repository([], model_control="explicit", load_at_start=["m"])
    with pytest.raises(ValueError, match="at least one model"):
        Repository([], model_control="none")


def test_unload_lets_admitted_requests_finish_then_frees(tmp_path: Path) -> None:
    backends: list[SlowBackend] = []

    def create() -> Scorer:
        backends.append(SlowBackend(tmp_path / "slow.slow"))
        return Scorer(backends[-1], name="slow")

    repo = Repository(
        [ModelSource("slow", None, create), echo_source(tmp_path, "other")],
        model_control="explicit",
    )
    repo.start()
    with ThreadPoolExecutor(2) as pool:
        try:
            repo.wait_ready(30)
            first = backends[0]
            first.gate.clear()
            first.entered.clear()
            scorer = repo.get("slow")
            in_flight = pool.submit(scorer.predict, ROW)
            assert first.entered.wait(20)
            unloading = pool.submit(repo.unload, "slow")
            wait_for(lambda: repo.state("slow").state == UNLOADING, "the unload to begin")
            # no new requests for it; the other model goes on
            with pytest.raises(NotReadyError):
                repo.get("slow")
            np.testing.assert_array_equal(repo.get("other").predict(ROW)["y"], ROW["x"])
            assert not first.unloaded
        finally:
            backends[0].gate.set()
        np.testing.assert_array_equal(in_flight.result(20)["y"], ROW["x"])
        unloading.result(20)
    try:
        assert first.unloaded
        assert repo.state("slow").state == UNAVAILABLE
        assert repo.state("slow").reason == "unloaded"
        assert repo.find("slow") is None
        assert repo.ready  # an unloaded model does not make the server unready

        repo.load("slow", timeout=30)
        assert len(backends) == 2 and repo.state("slow").state == READY
        np.testing.assert_array_equal(repo.get("slow").predict(ROW)["y"], ROW["x"])
    finally:
        repo.close()


def test_explicit_load_of_a_failing_model_raises_with_the_reason(tmp_path: Path) -> None:
    attempts: list[int] = []

    def create() -> Scorer:
        attempts.append(1)
        options = {"load_delay": "nope"} if len(attempts) == 1 else {}
        return Scorer(EchoBackend(tmp_path / "m.echo", options=options), name="m")

    repo = Repository(
        [ModelSource("m", None, create), echo_source(tmp_path, "other")], model_control="explicit"
    )
    repo.start()
    try:
        wait_for(lambda: repo.state("m").state != LOADING, "the first load to end")
        assert repo.state("m").state == UNAVAILABLE
        repo.find("other").wait_ready(30)  # type: ignore[union-attr]
        repo.get("other")
        # loading again makes a fresh scorer (the fixture fails only the first time)
        repo.load("m", timeout=30)
        assert repo.state("m").state == READY and len(attempts) == 2
    finally:
        repo.close()

    def always_fails() -> Scorer:
        return Scorer(EchoBackend(tmp_path / "m.echo", options={"load_delay": "nope"}), name="m")

    repo = Repository([ModelSource("m", None, always_fails)], model_control="explicit")
    try:
        with pytest.raises(ModelLoadError, match=r"'m'.*nope"):
            repo.load("m", timeout=30)
    finally:
        repo.close()


def test_a_source_that_cannot_even_make_a_scorer(tmp_path: Path) -> None:
    def broken() -> Scorer:
        raise ModelNotFoundError("x")  # any error while resolving the backend, say

    repo = Repository([ModelSource("broken", None, broken), echo_source(tmp_path, "ok")])
    repo.start()
    try:
        assert repo.state("broken").state == UNAVAILABLE
        assert "failed to load" in repo.state("broken").reason
        repo.find("ok").wait_ready(30)  # type: ignore[union-attr]
    finally:
        repo.close()


def test_bad_repository_layouts(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="twice"):
        Repository([echo_source(tmp_path, "m", "1"), echo_source(tmp_path, "m", "1")])
    with pytest.raises(ValueError, match="mixes"):
        Repository([echo_source(tmp_path, "m"), echo_source(tmp_path, "m", "1")])
    with pytest.raises(ValueError, match="at least one"):
        Repository([])
