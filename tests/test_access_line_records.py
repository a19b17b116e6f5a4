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


def test_new_request_ids_are_version_4_uuids() -> None:
    made = [new_request_id() for _ in range(2000)]
    assert len(set(made)) == len(made)
    for text in made:
        parsed = uuid.UUID(text)
        assert str(parsed) == text  # lower-case hex, 8-4-4-4-12, as str(uuid4()) is
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
