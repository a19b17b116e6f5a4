"""Access lines are written in batches (telemetry/logs.py, BufferedStreamHandler): fewer
writes than lines, in order, never late by more than the flush interval; every other line
at once, after what waited; nothing lost on close."""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli_process import run_python
from scorepack.telemetry.logs import ACCESS_LOGGER, BufferedStreamHandler


class CountingStream(io.StringIO):
    """A stream that counts its writes (each one a syscall on a real pipe)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            self.writes += 1
            return super().write(text)

    def text(self) -> str:
        with self._lock:
            return self.getvalue()


@pytest.fixture
def stream() -> CountingStream:
    return CountingStream()


@pytest.fixture
def handlers() -> Iterator[list[BufferedStreamHandler]]:
    """Handlers a test makes, closed after it (their flushing threads stop)."""
    made: list[BufferedStreamHandler] = []
    yield made
    for handler in made:
        handler.close()


def buffered(
    stream: CountingStream, made: list[BufferedStreamHandler], **kwargs: float
) -> BufferedStreamHandler:
    handler = BufferedStreamHandler(stream, **kwargs)  # type: ignore[arg-type]
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    made.append(handler)
    return handler


def log(handler: logging.Handler, message: str, name: str = ACCESS_LOGGER) -> None:
    """One record through ``handler``, as a logger of ``name`` hands it (an access line by
    default)."""
    record = logging.LogRecord(name, logging.INFO, __file__, 0, message, (), None)
    handler.handle(record)


def test_access_lines_wait_and_go_out_in_one_write_in_order(
    stream: CountingStream, handlers: list[BufferedStreamHandler]
) -> None:
    handler = buffered(stream, handlers, flush_seconds=3600)
    for i in range(100):
        log(handler, f"line {i}")
    assert stream.writes == 0  # nothing written per line
    handler.flush()
    assert stream.writes == 1
    assert stream.text().splitlines() == [f"INFO line {i}" for i in range(100)]


def test_a_waiting_line_is_written_by_the_flush_interval(
    stream: CountingStream, handlers: list[BufferedStreamHandler]
) -> None:
    handler = buffered(stream, handlers, flush_seconds=0.05)
    log(handler, "alone")
    deadline = time.monotonic() + 30  # generous: a busy machine's thread may lag
    while "alone" not in stream.text() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stream.text() == "INFO alone\n"


def test_any_other_line_goes_out_at_once_after_what_waited(
    stream: CountingStream, handlers: list[BufferedStreamHandler]
) -> None:
    handler = buffered(stream, handlers, flush_seconds=3600)
    log(handler, "first")
    log(handler, "second")
    log(handler, "model 'a' unloaded", name="scorepack.repository")
    assert stream.writes == 1
    assert stream.text().splitlines() == ["INFO first", "INFO second", "INFO model 'a' unloaded"]


def test_a_full_buffer_is_written_without_waiting(
    stream: CountingStream, handlers: list[BufferedStreamHandler]
) -> None:
    handler = buffered(stream, handlers, flush_seconds=3600, buffer_chars=100)
    for _ in range(6):
        log(handler, "x" * 9)  # "INFO xxxxxxxxx\n": 15 characters, 90 after six
    assert stream.writes == 0
    log(handler, "y" * 9)  # 105 characters: past the 100, written at once
    assert stream.writes == 1
    assert stream.text().count("\n") == 7


def test_close_writes_what_waits(stream: CountingStream) -> None:
    handler = BufferedStreamHandler(stream, flush_seconds=3600)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log(handler, "last words")
    assert stream.text() == ""
    handler.close()  # as logging.shutdown closes every handler at exit
    assert stream.text() == "last words\n"


def test_a_forked_child_flushes_its_own_lines(tmp_path: Path) -> None:
    # gunicorn forks workers: the parent's flushing thread is not in the child, so the
    # child's first access line must start one of its own
    code = """
import logging, os, sys, time
from scorepack.telemetry.logs import ACCESS_LOGGER, BufferedStreamHandler

stream = open(sys.argv[1], "a", buffering=1)
handler = BufferedStreamHandler(stream, flush_seconds=0.05)
handler.setFormatter(logging.Formatter("%(message)s"))

def log(message):
    handler.handle(logging.LogRecord(ACCESS_LOGGER, logging.INFO, "", 0, message, (), None))

log("parent")  # starts the parent's flushing thread
pid = os.fork()
if pid == 0:
    log("child")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with open(sys.argv[1]) as f:
            if "child" in f.read():
                os._exit(0)
        time.sleep(0.02)
    os._exit(3)
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status))
"""
    ran = run_python(code, str(tmp_path / "lines.log"))
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "0"
