"""A real OTLP/HTTP trace receiver, for the export tests: ``python otlp_receiver.py``.

It accepts ``POST /v1/traces`` (``application/x-protobuf``, gzip or not), decodes the body
with opentelemetry-proto's ``ExportTraceServiceRequest`` and answers 200 with an empty
``ExportTraceServiceResponse``, as a collector does. It prints ``listening PORT`` first, then
one JSON line per request (``{"request": {...headers}}``) and one per span received.

It runs in the exporter's environment (the ``.venv/otlp`` folder ahead of the dev
environment, see requirements/otlp.txt): opentelemetry-proto needs protobuf 5, which the
dev environment cannot have. :class:`Receiver` starts it and reads what it prints.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

_print_lock = threading.Lock()


def _emit(document: dict[str, Any]) -> None:
    with _print_lock:
        sys.stdout.write(json.dumps(document) + "\n")
        sys.stdout.flush()


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    return None if kind is None else getattr(any_value, kind)


def _attributes(pairs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in pairs}


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        import gzip

        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
            ExportTraceServiceResponse,
        )

        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        if self.path != "/v1/traces":
            self.send_error(404)
            return
        if self.headers.get("content-type") != "application/x-protobuf":
            self.send_error(415)
            return
        if self.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        request = ExportTraceServiceRequest.FromString(body)
        _emit({"request": {k.lower(): v for k, v in self.headers.items()}})
        for resource_spans in request.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    _emit(
                        {
                            "span": {
                                "name": span.name,
                                "kind": span.kind,
                                "trace_id": span.trace_id.hex(),
                                "span_id": span.span_id.hex(),
                                "parent_span_id": span.parent_span_id.hex(),
                                "start": span.start_time_unix_nano,
                                "end": span.end_time_unix_nano,
                                "attributes": _attributes(span.attributes),
                                "status": span.status.code,
                                "scope": scope_spans.scope.name,
                                "resource": resource,
                            }
                        }
                    )
        answer = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # stdout carries the JSON lines only


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    _emit({"listening": server.server_address[1]})
    server.serve_forever()


class Receiver:
    """:func:`main` in a subprocess (``env`` puts the exporter's folder first): its URL,
    and the spans it received so far."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve())],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.spans: list[dict[str, Any]] = []
        self.requests: list[dict[str, str]] = []
        #: what it printed that is not one of its JSON lines (a traceback)
        self.other: list[str] = []
        first = self._next(60)
        if first is None or "listening" not in first:
            self.close()
            raise RuntimeError(f"the OTLP receiver did not start: {self.other}")
        self.url = f"http://127.0.0.1:{first['listening']}/v1/traces"

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _next(self, timeout: float) -> dict[str, Any] | None:
        try:
            line = self._lines.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None
        if line is None:
            raise RuntimeError(f"the OTLP receiver exited ({self.proc.wait()}): {self.other}")
        if not line.startswith("{"):
            self.other.append(line)
            return {}
        document: dict[str, Any] = json.loads(line)
        if "span" in document:
            self.spans.append(document["span"])
        elif "request" in document:
            self.requests.append(document["request"])
        return document

    def wait(self, done: Callable[[list[dict[str, Any]]], bool], timeout: float = 60) -> None:
        """Read what arrives until ``done(spans)``; fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not done(self.spans):
            if self._next(deadline - time.monotonic()) is None:
                names = sorted(s["name"] for s in self.spans)
                raise TimeoutError(f"spans received in {timeout} s: {names} {self.other}")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    main()
