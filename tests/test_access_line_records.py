"""The per-request pieces write what the stdlib's would.

An access line's record is ``Logger.makeRecord``'s (an application's record factory and
logger class respected), the JSON formatter caches the second's date and time, and a new
request id is not ``uuid.uuid4()``: each is checked here against the stdlib — the same
record fields in the same order, the same JSON, a valid version-4 UUID — and the record
still reaches every handler and filter.
"""

from __future__ import annotations

import io
import json
import logging
import time
import uuid
from collections.abc import Iterator

import pytest

from cli_process import run_python
from scorepack.server.limits import new_request_id
from scorepack.telemetry import logs
from scorepack.telemetry.logs import ACCESS_LOGGER, AccessLine, JsonFormatter, TextFormatter

LINE = AccessLine("id-1", "POST", "/score", 200, 3.25, "azureml", "m", "2", 4, 1.5)
GRPC_LINE = AccessLine(
    "id-2", "POST", "/inference.GRPCInferenceService/ModelInfer", 400, 0.0456,
    "grpc", "m", None, None, None, "INVALID_ARGUMENT",
)  # fmt: skip
# what differs between two records made at different times, on different threads
VARYING = {"created", "msecs", "relativeCreated", "msg"}


class Kept(logging.Handler):
    """Keeps the records it is given."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []
        #: each record's fields as this handler got them (formatters add to them later)
        self.fields: list[dict[str, object]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.fields.append(dict(record.__dict__))


@pytest.fixture
def kept() -> Iterator[Kept]:
    handler = Kept()
    logs.access_logger.addHandler(handler)
    logs.set_access_log(True)
    old_level = logs.access_logger.level
    logs.access_logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logs.access_logger.removeHandler(handler)
        logs.access_logger.setLevel(old_level)


def _reference(line: AccessLine) -> logging.LogRecord:
    return logs.access_logger.makeRecord(
        ACCESS_LOGGER, logging.INFO, logs.__file__, 0, line, (), None
    )


def test_an_access_record_has_makerecords_fields_in_its_order(kept: Kept) -> None:
    logs.log_access("id-1", "POST", "/score", 200, 0.00325, protocol="azureml", model="m",
                    version="2", batch_size=4, queue_seconds=0.0015)  # fmt: skip
    made, fields = kept.records[-1], kept.fields[-1]
    reference = _reference(LINE)
    assert type(made) is logging.LogRecord
    assert list(fields) == list(reference.__dict__)
    assert {k: v for k, v in fields.items() if k not in VARYING} == {
        k: v for k, v in reference.__dict__.items() if k not in VARYING
    }
    assert made.msg == LINE
    assert abs(made.created - time.time()) < 60
    assert made.msecs == int((made.created - int(made.created)) * 1000)
    assert made.relativeCreated >= 0


def test_an_access_record_is_formatted_as_makerecords_is() -> None:
    for line in (LINE, GRPC_LINE):
        made, reference = logs._access_record(line), _reference(line)
        reference.created, reference.msecs = made.created, made.msecs
        reference.relativeCreated = made.relativeCreated
        for formatter in (
            TextFormatter(logs.TEXT_FORMAT),
            TextFormatter(logs.AZUREML_TEXT_FORMAT),
            logging.Formatter("%(threadName)s %(processName)s %(process)d %(module)s "
                              "%(filename)s %(funcName)s %(lineno)d %(message)s"),
            JsonFormatter(),
        ):  # fmt: skip
            assert formatter.format(made) == formatter.format(reference)


def test_a_record_factory_of_the_applications_is_used(kept: Kept) -> None:
    class Tagged(logging.LogRecord):
        pass

    logging.setLogRecordFactory(Tagged)
    try:
        logs.log_access("id-3", "GET", "/", 200, 0.001)
    finally:
        logging.setLogRecordFactory(logging.LogRecord)
    assert type(kept.records[-1]) is Tagged


def test_a_logger_class_of_the_applications_makes_the_record() -> None:
    # set before scorepack is imported, so the access logger is one of its class
    code = """
import logging

class Tagging(logging.Logger):
    def makeRecord(self, *args, **kwargs):
        record = super().makeRecord(*args, **kwargs)
        record.tagged = True
        return record

logging.setLoggerClass(Tagging)
from scorepack.telemetry import logs

seen = []
handler = logging.Handler()
handler.emit = seen.append
logs.access_logger.addHandler(handler)
logs.access_logger.setLevel(logging.INFO)
logs.log_access("id-7", "GET", "/", 200, 0.001)
print(getattr(seen[0], "tagged", False))
"""
    ran = run_python(code)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "True"


def test_filters_still_see_every_access_record(kept: Kept) -> None:
    seen: list[str] = []

    def drop_probes(record: logging.LogRecord) -> bool:
        seen.append(record.msg.path)
        return record.msg.path != "/health/ready"

    logs.access_logger.addFilter(drop_probes)
    try:
        logs.log_access("id-4", "GET", "/health/ready", 200, 0.001)
        logs.log_access("id-5", "POST", "/score", 200, 0.001)
    finally:
        logs.access_logger.removeFilter(drop_probes)
    assert seen == ["/health/ready", "/score"]
    assert [r.msg.request_id for r in kept.records] == ["id-5"]


def _json_as_before(record: logging.LogRecord) -> dict[str, object]:
    # JsonFormatter as it was before its second's date was cached (stop 17)
    created = time.gmtime(record.created)
    document: dict[str, object] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S", created) + f".{int(record.msecs):03d}Z",
        "level": record.levelname,
        "logger": record.name,
        "message": record.getMessage(),
    }
    if isinstance(record.msg, AccessLine):
        document.update(record.msg._asdict())
        document["latency_ms"] = round(document["latency_ms"], 3)  # type: ignore[call-overload]
        if document["queue_ms"] is not None:
            document["queue_ms"] = round(document["queue_ms"], 3)  # type: ignore[call-overload]
    return document


def test_json_lines_are_as_before_across_seconds() -> None:
    formatter = JsonFormatter()
    base = 1_765_000_000.0
    for line in (LINE, GRPC_LINE, AccessLine("id-6", "GET", "/", 404, 0.2)):
        # the same second twice (the cached date), the next one, and one much later
        for created in (base + 0.0004, base + 0.9991, base + 1.25, base + 86_400.5):
            record = logs._access_record(line)
            record.created, record.msecs = created, int((created - int(created)) * 1000) + 0.0
            text = formatter.format(record)
            assert json.loads(text) == _json_as_before(record)
            assert list(json.loads(text)) == list(_json_as_before(record))  # key order too


def test_json_other_lines_keep_their_exception() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("scorepack.test-fast-path")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("failed %s", "x")
    finally:
        logger.removeHandler(handler)
    document = json.loads(stream.getvalue())
    assert document["message"] == "failed x" and "ValueError: boom" in document["exception"]


# --- the direct way: a sole BufferedStreamHandler takes the line without a record ---------


class Sink(io.StringIO):
    """A stream that keeps what the handler writes."""


def _formats() -> list[logging.Formatter]:
    gm = TextFormatter(logs.AZUREML_TEXT_FORMAT)
    gm.converter = time.gmtime  # as a package's formatter is
    return [
        TextFormatter(logs.TEXT_FORMAT),
        gm,
        TextFormatter("%(levelname)s [%(process)d] %(name)s %(levelno)d %(message)s"),
        JsonFormatter(),
    ]


@pytest.mark.parametrize("formatter", _formats(), ids=["text", "azureml", "mapped", "json"])
def test_the_direct_way_writes_what_the_record_would(formatter: logging.Formatter) -> None:
    base = 1_765_000_000.0
    for line in (LINE, GRPC_LINE, AccessLine("id-6", "GET", "/", 404, 0.2)):
        for created in (base + 0.0004, base + 0.9991, base + 1.25, base + 86_400.5):
            record = logs._access_record(line)
            record.created = created
            record.msecs = int((created - int(created)) * 1000) + 0.0
            assert formatter.format_access(line, created) == formatter.format(record)  # type: ignore[attr-defined]


def test_a_formatter_of_another_class_declines_the_direct_way() -> None:
    class Shouting(TextFormatter):
        def format(self, record: logging.LogRecord) -> str:
            return super().format(record).upper()

    handler = logs.BufferedStreamHandler(Sink(), flush_seconds=3600)
    for formatter in (Shouting(logs.TEXT_FORMAT), logging.Formatter("%(message)s")):
        handler.setFormatter(formatter)
        assert handler.write_access(LINE, time.time()) is False
    handler.close()


def test_a_format_asking_for_more_declines_the_direct_way() -> None:
    for formatter in (
        TextFormatter("%(threadName)s %(message)s"),
        TextFormatter("%(message)s", datefmt="%H:%M"),
        TextFormatter("{message}", style="{"),
    ):
        assert formatter.format_access(LINE, time.time()) is None


@pytest.fixture
def sole(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[logs.BufferedStreamHandler, Sink]]:
    """A BufferedStreamHandler that is the only handler the access logger's records reach:
    the access logger is a fresh one, outside the hierarchy (pytest hangs its capture
    handlers on the real loggers)."""
    stream = Sink()
    handler = logs.BufferedStreamHandler(stream, flush_seconds=3600)
    handler.setFormatter(TextFormatter(logs.TEXT_FORMAT))
    alone = logging.Logger(ACCESS_LOGGER, logging.INFO)
    alone.addHandler(handler)
    monkeypatch.setattr(logs, "access_logger", alone)
    try:
        yield handler, stream
    finally:
        handler.close()


def _made(monkeypatch: pytest.MonkeyPatch) -> list[AccessLine]:
    made: list[AccessLine] = []
    record = logs._access_record

    def counted(line: AccessLine) -> logging.LogRecord:
        made.append(line)
        return record(line)

    monkeypatch.setattr(logs, "_access_record", counted)
    return made


def test_a_sole_buffered_handler_takes_lines_without_records(
    sole: tuple[logs.BufferedStreamHandler, Sink], monkeypatch: pytest.MonkeyPatch
) -> None:
    handler, stream = sole
    made = _made(monkeypatch)
    logs.log_access("id-8", "POST", "/score", 200, 0.00325, protocol="azureml", model="m")
    handler.handle(logging.makeLogRecord({"name": "scorepack.other", "msg": "not access"}))
    handler.flush()
    lines = stream.getvalue().splitlines()
    assert made == []
    assert lines[0].endswith(" INFO scorepack.access: POST /score 200 3.2ms model=m "
                             "protocol=azureml batch=- id=id-8")  # fmt: skip
    # written, in order, with the line logged the usual way after it
    assert lines[1].endswith(" scorepack.other: not access")


@pytest.mark.parametrize("change", ["filter", "second handler", "handler filter", "level",
                                    "factory", "disabled"])  # fmt: skip
def test_anything_else_on_the_way_makes_the_record(
    sole: tuple[logs.BufferedStreamHandler, Sink],
    monkeypatch: pytest.MonkeyPatch,
    change: str,
) -> None:
    handler, stream = sole
    made = _made(monkeypatch)
    other = Kept()
    if change == "filter":
        monkeypatch.setattr(logs.access_logger, "filters", [lambda record: True])
    elif change == "second handler":
        logs.access_logger.addHandler(other)
    elif change == "handler filter":
        monkeypatch.setattr(handler, "filters", [lambda record: True])
    elif change == "level":
        monkeypatch.setattr(handler, "level", logging.WARNING)
    elif change == "factory":
        monkeypatch.setattr(logging, "_logRecordFactory", type("Own", (logging.LogRecord,), {}))
    else:
        monkeypatch.setattr(logs.access_logger, "disabled", True)
    try:
        logs.log_access("id-9", "GET", "/", 200, 0.001)
    finally:
        logs.access_logger.removeHandler(other)
    assert [line.request_id for line in made] == ([] if change == "disabled" else ["id-9"])
    handler.flush()
    written = "id=id-9" in stream.getvalue()
    assert written is (change in ("filter", "second handler", "handler filter", "factory"))


def test_new_request_ids_are_version_4_uuids() -> None:
    made = [new_request_id() for _ in range(2000)]
    assert len(set(made)) == len(made)
    for text in made:
        parsed = uuid.UUID(text)
        assert str(parsed) == text  # lower-case hex, 8-4-4-4-12, as str(uuid4()) is
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
