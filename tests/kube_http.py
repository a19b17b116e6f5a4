"""A Kubernetes API server on 127.0.0.1 that answers from recorded responses.

The official ``kubernetes`` client is configured as a user configures it — a kubeconfig
file with a cluster URL, a token and a context — and really speaks HTTP over TCP to this
server, which answers from ``tests/recordings/k8s_*.json`` (written by hand from the
Kubernetes and KServe API shapes) and keeps every request for the test to inspect. A
request with no recording gets a 400 Status and is listed in ``unmatched``.

A recording file is a JSON list of routes::

    {"method": "GET", "path": "regex matched against the path (no query)",
     "responses": [{"status": 200, "body": {...}} | {"status": 201, "echo": true}, ...]}

Responses are used in order and the last repeats. ``{{NAME}}`` in a body stands for the
path regex's named group; ``"echo": true`` answers with the object sent (as the API server
does for a create or patch), with the fields the server adds.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

RECORDINGS = Path(__file__).parent / "recordings"
TOKEN = "recorded-token-0000"


@dataclass
class Sent:
    """One request the client sent."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class _Route:
    method: str
    pattern: re.Pattern[str]
    responses: list[dict[str, Any]]
    used: int = 0


def _fill(value: Any, names: dict[str, str]) -> Any:
    if isinstance(value, str):
        for key, text in names.items():
            value = value.replace("{{" + key + "}}", text)
        return value
    if isinstance(value, list):
        return [_fill(v, names) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, names) for k, v in value.items()}
    return value


@dataclass
class RecordedKubernetes:
    """The server; use as a context manager. ``requests`` lists what was sent, in order."""

    recordings: tuple[str, ...]
    requests: list[Sent] = field(default_factory=list)
    unmatched: list[Sent] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.routes: list[_Route] = []
        for name in self.recordings:
            for entry in json.loads((RECORDINGS / f"{name}.json").read_text()):
                self.routes.append(
                    _Route(entry["method"], re.compile(entry["path"]), entry["responses"])
                )
        self._lock = threading.Lock()
        recorded = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                split = urlsplit(self.path)
                sent = Sent(
                    self.command,
                    split.path,
                    parse_qs(split.query),
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                )
                status, answer = recorded._answer(sent)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _answer(self, sent: Sent) -> tuple[int, Any]:
        with self._lock:
            self.requests.append(sent)
            for route in self.routes:
                match = route.pattern.fullmatch(sent.path)
                if route.method != sent.method or match is None:
                    continue
                response = route.responses[min(route.used, len(route.responses) - 1)]
                route.used += 1
                names = {k: v for k, v in match.groupdict().items() if v is not None}
                if response.get("echo"):
                    return response["status"], _echo(sent, names)
                return response["status"], _fill(response.get("body", {}), names)
            self.unmatched.append(sent)
            return 400, {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "message": f"no recording for {sent.method} {sent.path}",
                "reason": "BadRequest",
                "code": 400,
            }

    def find(self, method: str, path: str) -> list[Sent]:
        """The requests with this method whose path matches the regex."""
        return [r for r in self.requests if r.method == method and re.fullmatch(path, r.path)]

    def kubeconfig(self, path: Path, *, namespace: str | None = None) -> Path:
        """A kubeconfig whose context ``recorded`` reaches this server with a bearer token;
        the current context, ``elsewhere``, points at a port where nothing listens."""
        context: dict[str, Any] = {"cluster": "recorded", "user": "recorded-user"}
        if namespace:
            context["namespace"] = namespace
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "recorded", "cluster": {"server": self.url}},
                {"name": "elsewhere", "cluster": {"server": "http://127.0.0.1:9"}},
            ],
            "users": [{"name": "recorded-user", "user": {"token": TOKEN}}],
            "contexts": [
                {"name": "recorded", "context": context},
                {"name": "elsewhere", "context": {"cluster": "elsewhere", "user": "recorded-user"}},
            ],
            "current-context": "elsewhere",
        }
        path.write_text(yaml.safe_dump(config))
        return path

    def __enter__(self) -> RecordedKubernetes:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _echo(sent: Sent, names: dict[str, str]) -> Any:
    """The object as created or patched: what was sent, plus the server's fields."""
    body = sent.json()
    metadata = body.setdefault("metadata", {})
    metadata.setdefault("namespace", names.get("namespace", "default"))
    metadata.update(
        {
            "uid": "0b7c3e2a-4d1f-4c9e-9a51-000000000001",
            "resourceVersion": "4242",
            "generation": 2 if sent.method == "PATCH" else 1,
            "creationTimestamp": "2026-12-07T06:00:00Z",
        }
    )
    return body
