"""Log lines as text or JSON, and the one access-log line each request gets.

``--log-format json`` (``SCOREPACK_LOG_FORMAT=json``) writes one JSON object per line —
time, level, logger, message, and for access lines the request's fields — for a log
collector to parse. The access line carries the request id, model, version, protocol,
status, latency, batch size and queue wait; never a header, a query string or a key.
A gRPC call's line adds its status code's name (``grpc_status``); its ``status`` is the
HTTP status the same outcome gets over V2 REST, so ``status`` is a number in every line.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from logging import LogRecord
from typing import Any, NamedTuple, TextIO

import orjson

__all__ = [
    "ACCESS_LOGGER",
    "LOG_FORMATS",
    "AccessLine",
    "BufferedStreamHandler",
    "JsonFormatter",
    "TextFormatter",
    "access_logging",
    "cli_log_format",
    "configure_azureml_logging",
    "configure_logging",
    "log_access",
    "set_access_log",
]

ACCESS_LOGGER = "scorepack.access"
LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# azmlinfsrv's own line format (its AMLLogFormatter), so a package's log reads as one
AZUREML_TEXT_FORMAT = "%(asctime)s %(levelname).1s [%(process)d] %(name)s - %(message)s"

access_logger = logging.getLogger(ACCESS_LOGGER)


class AccessLine(NamedTuple):
    """One answered request. Logged as the record's message: text formatters print
    :meth:`__str__`, :class:`JsonFormatter` prints the fields."""

    request_id: str
    method: str
    path: str
    status: int
    latency_ms: float
    protocol: str | None = None
    model: str | None = None
    version: str | None = None
    batch_size: int | None = None
    queue_ms: float | None = None
    #: a gRPC call's status code name (``OK``, ``INVALID_ARGUMENT``...); None over HTTP
    grpc_status: str | None = None

    def __str__(self) -> str:
        # one f-string: this runs for every request when INFO is on
        model = ""
        if self.model is not None:
            model = f" model={self.model}" + (f" version={self.version}" if self.version else "")
        protocol = f" protocol={self.protocol}" if self.protocol else ""
        batch = "-" if self.batch_size is None else self.batch_size
        queue = "" if self.queue_ms is None else f" queue={self.queue_ms:.1f}ms"
        code = "" if self.grpc_status is None else f" grpc_status={self.grpc_status}"
        return (
            f"{self.method} {self.path} {self.status} {self.latency_ms:.1f}ms{model}{protocol}"
            f"{code} batch={batch}{queue} id={self.request_id}"
        )


def access_logging() -> bool:
    """Whether access lines are written (what a host checks before gathering their fields)."""
    return access_logger.isEnabledFor(logging.INFO)


def set_access_log(enabled: bool) -> None:
    """Write access lines or not, for the whole process (``--no-access-log``, as uvicorn's
    switches its ``uvicorn.access`` logger off). Off, the access logger drops INFO, so
    :func:`log_access` and :func:`access_logging` return at once and a host gathers no
    line's fields; on, it logs at whatever level its parents say (INFO by default)."""
    access_logger.setLevel(logging.NOTSET if enabled else logging.WARNING)


def log_access(
    request_id: str,
    method: str,
    path: str,
    status: int,
    seconds: float,
    *,
    protocol: str | None = None,
    model: str | None = None,
    version: str | None = None,
    batch_size: int | None = None,
    queue_seconds: float | None = None,
    grpc_status: str | None = None,
) -> None:
    """Log one access line (nothing is built when the access logger is off)."""
    if not access_logger.isEnabledFor(logging.INFO):
        return
    line = AccessLine(
        request_id,
        method,
        path,
        status,
        seconds * 1000.0,
        protocol,
        model,
        version,
        batch_size,
        None if queue_seconds is None else queue_seconds * 1000.0,
        grpc_status,
    )
    sink = _sole_handler()
    if sink is not None and sink.write_access(line, time.time()):
        return
    # the record made directly rather than through .info(): that looks up the calling
    # file and line by walking the stack, for every request, and an access line always
    # comes from here; handle() keeps the loggers' filters, handlers and propagation
    access_logger.handle(_access_record(line))


def _access_record(line: AccessLine) -> logging.LogRecord:
    return access_logger.makeRecord(ACCESS_LOGGER, logging.INFO, __file__, 0, line, (), None)


def _sole_handler() -> BufferedStreamHandler | None:
    """The handler an access record would reach, when it is the only one and takes the
    line exactly as logging would hand it over: a :class:`BufferedStreamHandler` (this
    module's: the CLI's and a package's) with no filter and no level above INFO, reached
    through loggers with no filter on the access logger, records from the standard
    factory. Then :func:`log_access` gives it the line itself and skips making a
    ``LogRecord`` and logging's walk to the handler (2.5 of an access line's 5.3 µs);
    with any other set-up (a second handler, a filter, a test's ``caplog``, an
    application's record factory) the record goes through ``Logger.handle`` as always."""
    logger = access_logger
    if logger.disabled or logger.filters or logging.getLogRecordFactory() is not LogRecord:
        return None
    found = None
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if found is not None:
                return None
            found = handler
        if not current.propagate:
            break
        current = current.parent
    if type(found) is not BufferedStreamHandler or found.filters or found.level > logging.INFO:
        return None
    return found


class TextFormatter(logging.Formatter):
    """logging's own text formatter, except that the date and time of a second are
    formatted once (``time.strftime`` on every line was about 1 µs of an access line's 7
    µs). The text is the same."""

    _second: tuple[int, Any, str] | None = None

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        return self._time(record.created, record.msecs)

    def _time(self, created: float, msecs: float) -> str:
        second, converter = int(created), self.converter
        cached = self._second
        if cached is None or cached[0] != second or cached[1] is not converter:
            text = time.strftime(self.default_time_format, converter(created))
            self._second = cached = (second, converter, text)
        if self.default_msec_format == "%s,%03d":  # logging's own, as one f-string
            return f"{cached[2]},{int(msecs):03d}"
        if self.default_msec_format:
            return self.default_msec_format % (cached[2], msecs)
        return cached[2]

    def format_access(self, line: AccessLine, created: float) -> str | None:
        """The text :meth:`format` gives an access record of ``line`` made at ``created``,
        without the record; None when the format asks for a field other than the time,
        level, logger, message and process (the caller then makes the record)."""
        if self.datefmt is not None or type(self._style) is not logging.PercentStyle:
            return None
        asctime = self._time(created, _msecs(created))
        # this module's two formats in one f-string each (the mapping below costs 0.6 µs)
        if self._fmt == TEXT_FORMAT:
            return f"{asctime} INFO {ACCESS_LOGGER}: {line}"
        if self._fmt == AZUREML_TEXT_FORMAT:
            return f"{asctime} I [{os.getpid()}] {ACCESS_LOGGER} - {line}"
        values = {
            "asctime": asctime,
            "levelname": "INFO",
            "levelno": logging.INFO,
            "name": ACCESS_LOGGER,
            "message": str(line),
            "process": os.getpid(),
        }
        try:
            return self._fmt % values  # type: ignore[operator]
        except KeyError:
            return None


def _msecs(created: float) -> float:
    """A record's ``msecs`` for a time of ``time.time()`` (as ``LogRecord`` computes it)."""
    return int((created - int(created)) * 1000) + 0.0


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``time`` (UTC, ISO 8601), ``level``, ``logger``,
    ``message``, an access line's fields, and ``exception`` when there is one.

    The date and time of a second are formatted once, not for every line."""

    _second: tuple[int, str] | None = None

    def format(self, record: logging.LogRecord) -> str:
        document = self._document(record.created, record.msecs, record.levelname, record.name)
        document["message"] = record.getMessage()
        if isinstance(record.msg, AccessLine):
            _add_fields(document, record.msg)
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            document["exception"] = record.exc_text
        if record.stack_info:
            document["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(document, default=str).decode()

    def format_access(self, line: AccessLine, created: float) -> str:
        """The text :meth:`format` gives an access record of ``line`` made at
        ``created``, without the record."""
        document = self._document(created, _msecs(created), "INFO", ACCESS_LOGGER)
        document["message"] = str(line)
        _add_fields(document, line)
        return orjson.dumps(document, default=str).decode()

    def _document(self, created: float, msecs: float, level: str, name: str) -> dict[str, Any]:
        second = int(created)
        cached = self._second
        if cached is None or cached[0] != second:
            self._second = cached = (
                second,
                time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)),
            )
        return {"time": f"{cached[1]}.{int(msecs):03d}Z", "level": level, "logger": name}


def _add_fields(document: dict[str, Any], line: AccessLine) -> None:
    document.update(line._asdict())
    document["latency_ms"] = round(document["latency_ms"], 3)
    if document["queue_ms"] is not None:
        document["queue_ms"] = round(document["queue_ms"], 3)


#: how many times this process's line forked: a child's handlers start their own flushing
#: threads (a counter rather than ``os.getpid()`` on every line)
_forks = 0


def _forked() -> None:
    global _forks
    _forks += 1


os.register_at_fork(after_in_child=_forked)

#: how long an access line may wait in a BufferedStreamHandler before it is written
FLUSH_SECONDS = 0.1
#: written at once when this many characters wait
BUFFER_CHARS = 64 * 1024


class BufferedStreamHandler(logging.StreamHandler):
    """A stream handler that writes access lines in batches, as nginx's ``access_log ...
    buffer= flush=`` does: one ``write`` for the access lines of the last
    :data:`FLUSH_SECONDS` (or :data:`BUFFER_CHARS`), instead of a write — and a wake-up
    of whatever reads the other end of the pipe — per request (on a tiny model at c=8,
    2,500 requests a second on two cores, access lines cost about 7 % of throughput in
    stop 17's quiet window). Every other line is written at once, after the access lines
    waiting before it, so the handler's order is kept and nothing but access lines is
    late (the stream's other writers, such as an error printed at exit, come after what
    was written). Lines still waiting are written when logging shuts down (``atexit``);
    a hard kill loses at most the last :data:`FLUSH_SECONDS` of access lines."""

    def __init__(
        self,
        stream: TextIO | None = None,
        flush_seconds: float = FLUSH_SECONDS,
        buffer_chars: int = BUFFER_CHARS,
    ) -> None:
        super().__init__(stream)
        self.flush_seconds = flush_seconds
        self.buffer_chars = buffer_chars
        self._pending: list[str] = []
        self._chars = 0
        self._stop = threading.Event()
        #: the fork (:data:`_forks`) whose thread flushes: a forked child starts its own
        self._flusher: int | None = None

    def emit(self, record: logging.LogRecord) -> None:
        # called under the handler's lock (Handler.handle)
        try:
            text = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        self._take(text, record.name == ACCESS_LOGGER)

    def write_access(self, line: AccessLine, created: float) -> bool:
        """Take an access line made at ``created`` (``time.time()``) without its record,
        formatted as :meth:`emit` would format the record (:func:`log_access` calls this
        when this handler is the only one the record would reach). False when the
        formatter is not one of this module's, or declines: make the record then."""
        formatter = self.formatter
        # this module's formatters only: a subclass may format records otherwise
        if type(formatter) is not TextFormatter and type(formatter) is not JsonFormatter:
            return False
        try:
            text = formatter.format_access(line, created)
        except Exception:
            return False  # the record's way formats it again and reports what failed
        if text is None:
            return False
        with self.lock:  # type: ignore[union-attr]
            self._take(text + self.terminator, True)
        return True

    def _take(self, text: str, access: bool) -> None:
        """Hold ``text``, or write it and what waits before it when it is not an access
        line or the buffer is full (the handler's lock held)."""
        self._pending.append(text)
        self._chars += len(text)
        if not access or self._chars >= self.buffer_chars:
            self._write()
        elif self._flusher != _forks and not self._stop.is_set():
            self._flusher = _forks
            threading.Thread(target=self._flush_often, name="scorepack-log", daemon=True).start()

    def _write(self) -> None:
        """Write what waits (the handler's lock held)."""
        if not self._pending:
            return
        text = "".join(self._pending)
        self._pending.clear()
        self._chars = 0
        try:
            self.stream.write(text)
            self.stream.flush()
        except Exception:
            # as StreamHandler does: a broken stream must not break the request
            self.handleError(logging.makeLogRecord({"msg": "log write failed"}))

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write()

    def _flush_often(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            self.flush()

    def close(self) -> None:
        self._stop.set()
        self.flush()
        super().close()


def formatter(log_format: str, text_format: str = TEXT_FORMAT) -> logging.Formatter:
    """The formatter for ``text`` or ``json``; anything else is a ValueError."""
    if log_format == "json":
        return JsonFormatter()
    if log_format == "text":
        return TextFormatter(text_format)
    raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {log_format!r}")


_cli_format = "text"


def cli_log_format() -> str:
    """The format :func:`configure_logging` set (``text`` until it runs)."""
    return _cli_format


def configure_logging(level: str = "info", log_format: str = "text") -> None:
    """The CLI's logging: the root logger at ``level``, one stderr handler in the format
    (access lines written in batches: :class:`BufferedStreamHandler`)."""
    global _cli_format
    _cli_format = log_format
    handler = BufferedStreamHandler()
    handler.setFormatter(formatter(log_format))
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler])


_MARK = "_scorepack_handler"


def configure_azureml_logging(
    log_format: str = "text",
    level: str = "info",
    stream: TextIO | None = None,
    *,
    access_log: bool = True,
) -> None:
    """Logging inside azmlinfsrv, from ``init()``.

    azmlinfsrv configures its own loggers and gunicorn's and leaves the root logger bare,
    so scorepack's records (the access lines among them) would be dropped: the
    ``scorepack`` logger gets a handler of its own on stdout (access lines written in
    batches: :class:`BufferedStreamHandler`). With ``json``, azmlinfsrv's
    and gunicorn's handlers are switched to JSON too, so every line parses. Safe to call
    again (a second ``init()``): it replaces what it added. ``access_log=False``
    (``SCOREPACK_ACCESS_LOG=false``): no access lines (:func:`set_access_log`).
    """
    chosen = formatter(log_format, AZUREML_TEXT_FORMAT)
    if log_format == "text":
        chosen.converter = time.gmtime  # as azmlinfsrv's formatter does
    root = logging.getLogger("scorepack")
    for old in [h for h in root.handlers if getattr(h, _MARK, False)]:
        root.removeHandler(old)
        old.close()  # writes what it still holds, stops its flushing thread
    handler = BufferedStreamHandler(stream or sys.stdout)
    setattr(handler, _MARK, True)
    handler.setFormatter(chosen)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
    root.propagate = False
    set_access_log(access_log)
    # azmlinfsrv's dictConfig (disable_existing_loggers) switches off every logger that
    # existed before it ran: scorepack's do when scorepack was imported first (its
    # gunicorn worker class is), so they are switched back on
    for name, existing in list(logging.Logger.manager.loggerDict.items()):
        if (name == "scorepack" or name.startswith("scorepack.")) and isinstance(
            existing, logging.Logger
        ):
            existing.disabled = False
    if log_format == "json":
        for name in ("azmlinfsrv", "gunicorn.error", "gunicorn.access", ""):
            for other in logging.getLogger(name).handlers:
                other.setFormatter(chosen)
