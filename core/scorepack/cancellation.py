"""A client's departure, told by the thread that notices it to the thread scoring for it.

Under azmlinfsrv a request is scored on a gunicorn thread that blocks until its result,
while the worker's main loop is the one that can see the client's socket close
(:mod:`scorepack.azureml.worker`). The main loop cancels the request's
:class:`Cancellation`; :meth:`Scorer.handle <scorepack.scorer.Scorer.handle>` has
registered the cancelling of its queued work on it, so that work is dropped before any
model call, as the embedded server drops the work of a client that left.

The scoring thread finds its request's cancellation with :func:`current`; the worker binds
it around the request with :func:`bound`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["Cancellation", "bound", "current"]


class Cancellation:
    """Cancelled once, from any thread; callbacks run in the cancelling thread (a callback
    registered after that runs at once, in the registering one)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cancelled = False
        self._callbacks: list[Callable[[], object]] = []

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        with self._lock:
            if self._cancelled:
                return
            self._cancelled = True
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()

    def on_cancel(self, callback: Callable[[], object]) -> Callable[[], None]:
        """Call ``callback`` on cancel; returns a function that forgets it again."""
        with self._lock:
            if not self._cancelled:
                self._callbacks.append(callback)
                return lambda: self._forget(callback)
        callback()
        return lambda: None

    def _forget(self, callback: Callable[[], object]) -> None:
        with self._lock:
            if callback in self._callbacks:
                self._callbacks.remove(callback)


_local = threading.local()


def current() -> Cancellation | None:
    """The cancellation of the request this thread serves, if its host set one."""
    got: Cancellation | None = getattr(_local, "cancellation", None)
    return got


@contextmanager
def bound(cancellation: Cancellation | None) -> Iterator[None]:
    """Make ``cancellation`` this thread's :func:`current` one for the block."""
    previous = current()
    _local.cancellation = cancellation
    try:
        yield
    finally:
        _local.cancellation = previous
