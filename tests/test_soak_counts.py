"""What the soak (``python -m benchmarks.soak``) found, held by counts, never by time.

1. The model thread died when the queue it was waiting on emptied under it: ``admit()``
   on another thread purges cancelled and expired work (cancelled gRPC calls, deadlines)
   while the model thread waits for a batch's company; it woke to an empty queue, raised
   IndexError, and every later request to that model waited for its 504. Here the
   interleaving is made exact: the model thread is seen waiting (its stack) before the
   work it waits beside is cancelled and purged.
2. Nothing stays behind requests that end early, or models unloaded: rounds of the
   soak's abandoning requests (cancelled and expired gRPC calls, clients hanging up
   mid-body and while waiting, bursts past a full queue) beside load/unload cycles of
   another model leave the server's threads, open files and gauges where one round left
   them. (Memory per answered request: tests/test_memory_per_request.py.)
"""

from __future__ import annotations

import os
import re
import socket
import struct
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import httpx
import numpy as np
import pytest

from fixture_backends import EchoBackend
from grpc_helpers import GrpcServed, grpc_serving_repository
from metrics_helpers import scrape, total
from scorepack import Scorer
from scorepack.batching import Batcher, BatchingConfig
from scorepack.repository import ModelSource, Repository
from serving_helpers import scoring_config, wait_for


def _row(value: float) -> dict[str, np.ndarray]:
    return {"x": np.full((1, 1), value, np.float32)}


def _waiting_for(thread: threading.Thread) -> str | None:
    """What the model thread waits for in ``_next_batch``: ``"work"`` (an empty queue: a
    wait without a timeout), ``"company"`` (queued work, waiting for its batch-mates
    until the delay is out: a wait with one), or None (not waiting there)."""
    frame = sys._current_frames().get(thread.ident or -1)
    timeout: object = None
    waiting = False
    while frame is not None:
        if frame.f_code.co_name == "wait" and frame.f_code.co_filename.endswith("threading.py"):
            waiting, timeout = True, frame.f_locals.get("timeout")
        if frame.f_code.co_name == "_next_batch":
            if not waiting:
                return None
            return "work" if timeout is None else "company"
        frame = frame.f_back
    return None


def test_the_model_thread_survives_its_queue_purged_while_it_waits() -> None:
    calls: list[int] = []

    def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        calls.append(len(inputs["x"]))
        return {"y": inputs["x"] * 2}

    # a ten-minute delay and a queue of two: the model thread waits beside queued work
    # for as long as another admitted request is still being decoded
    config = BatchingConfig(max_batch_size=4, max_delay_ms=600_000, max_queue_size=2)
    batcher = Batcher(run, config, name="purged")
    batcher.start()
    batcher.wait_ready(30)
    thread = batcher._thread
    assert thread is not None
    try:
        first: Future = batcher.admit().submit(_row(1), 1)
        decoding = batcher.admit()  # admitted, not yet submitted: the thread waits for it
        wait_for(lambda: _waiting_for(thread) == "company", "the model thread to wait for company")
        assert first.cancel()  # its client went away (a cancelled gRPC call)
        # the queue is full (one queued, one decoding): admission purges the cancelled
        # work, and the queue the model thread waits on is now empty
        third = batcher.admit()
        assert batcher.queued == 0
        decoding.release()  # wakes the model thread, its queue empty
        # it goes back to waiting for work (before the fix it died here, of an IndexError)
        wait_for(
            lambda: not thread.is_alive() or _waiting_for(thread) == "work",
            "the model thread to wake up",
        )
        assert thread.is_alive(), "the model thread died of an empty queue"
        result = third.submit(_row(3), 1).result(30)
        assert float(result.outputs["y"][0, 0]) == 6.0
        assert thread.is_alive()
        assert calls == [1]
        assert batcher.inflight == 0 and batcher.queue_depth == 0
    finally:
        batcher.stop()


#: calls of a burst at the slow model: past its queue (8) and batch (4), some refused
BURST = 24
#: rounds after the first: a thread or fd left per round shows as at least this many
ROUNDS = 4
SLOW_BODY = b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}'
X = np.array([[1.0, 2.0]], dtype=np.float32)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[GrpcServed]:
    """``slow``: an echo whose every call takes 20 ms, batches of 4, a queue of 8;
    ``cycled``: an echo to unload and load again."""
    slow = scoring_config(max_batch_size=4, max_queue_size=8, max_delay_ms=2)

    def make_slow() -> Scorer:
        options = {"delay": "0.02", "record": "false"}
        return Scorer(EchoBackend(tmp_path / "s.echo", options=options), slow, name="slow")

    def make_cycled() -> Scorer:
        backend = EchoBackend(tmp_path / "c.echo", options={"record": "false"})
        return Scorer(backend, scoring_config(), name="cycled")

    sources = [ModelSource("slow", None, make_slow), ModelSource("cycled", None, make_cycled)]
    repository = Repository(sources, model_control="explicit")
    with grpc_serving_repository(repository) as served:
        yield served


def _request(path: str, body: bytes) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


def _round(served: GrpcServed) -> Counter[str]:
    """One round of requests that end early, and one load/unload cycle; their outcomes."""
    outcomes: Counter[str] = Counter()
    for _ in range(4):  # cancelled by the client at once
        call = served.future_infer("slow", X)
        call.cancel()
        try:
            call.result(timeout=30)
            outcomes["OK"] += 1
        except grpc.FutureCancelledError:
            outcomes["cancelled"] += 1
        except grpc.RpcError as exc:
            outcomes[exc.code().name] += 1
    for _ in range(4):  # a deadline shorter than one model call
        try:
            served.future_infer("slow", X, timeout=0.005).result(timeout=30)
            outcomes["OK"] += 1
        except grpc.RpcError as exc:
            outcomes[exc.code().name] += 1
    parts = urlsplit(served.url)
    address = (parts.hostname or "127.0.0.1", parts.port or 80)
    request = _request("/v2/models/slow/infer", SLOW_BODY)
    for _ in range(2):  # hung up mid-body
        with socket.create_connection(address, timeout=30) as sock:
            sock.sendall(request[:-10])
        outcomes["hung-up"] += 1
    for _ in range(2):  # hung up (a reset) while the answer is being made
        with socket.create_connection(address, timeout=30) as sock:
            sock.sendall(request)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        outcomes["hung-up"] += 1
    calls = [served.future_infer("slow", X) for _ in range(BURST)]
    for call in calls:
        try:
            call.result(timeout=30)
            outcomes["OK"] += 1
        except grpc.RpcError as exc:
            outcomes[exc.code().name] += 1
    with httpx.Client(base_url=served.url, timeout=30) as http:
        assert http.post("/v2/repository/models/cycled/unload").status_code == 200
        assert http.post("/v2/repository/models/cycled/load").status_code == 200
    np.testing.assert_array_equal(served.infer("cycled", X), X)
    return outcomes


def _at_rest(served: GrpcServed) -> tuple[Counter[str], int]:
    """Threads by name (digits dropped) and open fds, once every request has left."""
    slow = served.scorer("slow")
    wait_for(lambda: slow.batcher.inflight == 0, "the slow model's requests to leave", 60)
    with httpx.Client(base_url=served.url, timeout=30) as http:
        metrics = scrape(http)
    assert total(metrics, "scorepack_inflight_requests") == 0
    assert total(metrics, "scorepack_queue_depth") == 0
    # every HTTP connection closed on the server's side too (the test's own included)
    connections = served.server._server.server_state.connections  # type: ignore[attr-defined]
    wait_for(lambda: not connections, "the HTTP connections to close", 60)
    threads = Counter(re.sub(r"\d+", "N", t.name) for t in threading.enumerate())
    return threads, len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts open fds in /proc")
def test_requests_that_end_early_and_unloads_leave_nothing_behind(served: GrpcServed) -> None:
    seen = _round(served)  # pools, connections and caches as one round leaves them
    threads, fds = _at_rest(served)
    for _ in range(ROUNDS):
        seen += _round(served)
    threads_after, fds_after = _at_rest(served)
    # the kinds of answer the rounds are about were all met, and nothing else
    assert seen["OK"] and seen["UNAVAILABLE"], seen  # a burst past the full queue
    assert set(seen) <= {"OK", "UNAVAILABLE", "cancelled", "DEADLINE_EXCEEDED", "hung-up"}
    # grpcio's pool starts a thread only when every one it has is busy: it may grow to the
    # most calls ever in flight at once (a burst, and the calls before it still ending),
    # never with the rounds. Of every other kind (model, decode, loop) there are no more
    # than before (fewer is an earlier test's threads still ending, in this process)
    pool = "scorepack-grpc_N"
    assert threads_after[pool] <= BURST + 16, threads_after
    grown = {k: (threads[k], n) for k, n in threads_after.items() if k != pool and n > threads[k]}
    assert not grown, f"threads (before, after): {grown}"
    # a socket or pipe left per round would show at least ROUNDS more
    assert fds_after < fds + ROUNDS, (fds, fds_after)
