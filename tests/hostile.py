"""Hostile clients over real sockets: stalled uploads, broken framing, raw requests.

Used by the tests of both hosts and by ``benchmarks/overload``. Every helper talks HTTP/1.1
by hand on a plain socket, because an HTTP client library would refuse to send what these
send.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


def address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", int(parts.port or 80)


@dataclass
class RawResponse:
    """A response read off a socket: status, headers (lower-case names), body."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


#: bytes read past the end of a response, per socket (the next response's beginning)
_leftover: weakref.WeakKeyDictionary[socket.socket, bytes] = weakref.WeakKeyDictionary()


def read_response(sock: socket.socket, timeout: float = 60.0) -> RawResponse | None:
    """The next final response on ``sock`` (1xx skipped); None if it closed without one."""
    sock.settimeout(timeout)
    data = _leftover.pop(sock, b"")
    while True:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, _, data = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if 100 <= status < 200:
            continue
        length = int(headers.get("content-length", "0"))
        while len(data) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        _leftover[sock] = data[length:]
        return RawResponse(status, headers, data[:length])


def exchange(url: str, raw: bytes, timeout: float = 60.0) -> RawResponse | None:
    """Send raw bytes on a new connection and read the answer (None: closed unanswered)."""
    with socket.create_connection(address(url), timeout=timeout) as sock:
        sock.sendall(raw)
        try:
            return read_response(sock, timeout)
        except ConnectionResetError:
            return None


def request(
    url: str,
    method: str = "POST",
    path: str = "/score",
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> bytes:
    """A well-formed request's bytes, with Content-Length."""
    host, port = address(url)
    fields = {"Host": f"{host}:{port}", "Content-Length": str(len(body)), **(headers or {})}
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items())
    return head.encode("latin-1") + b"\r\n" + body


class StalledUploads:
    """``count`` uploads that begin and never finish, kept alive by a trickle of bytes.

    Half declare a Content-Length they never reach, half send a chunked body that never
    ends. A background thread sends one more body byte (or one more tiny chunk) on each
    every ``trickle_s`` seconds, so that a server's idle timeout does not end them while
    the test looks at the server: they are as slow as a client can be and still be alive.
    """

    def __init__(
        self,
        url: str,
        count: int = 64,
        trickle_s: float = 0.5,
        path: str = "/score",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.url = url
        self.path = path
        self.headers = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self.count = count
        self.trickle_s = trickle_s
        self.sockets: list[tuple[socket.socket, bool]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._trickle, daemon=True)

    def open(self) -> StalledUploads:
        host, port = address(self.url)
        for i in range(self.count):
            chunked = i % 2 == 1
            sock = socket.create_connection((host, port), timeout=30)
            framing = "Transfer-Encoding: chunked\r\n" if chunked else "Content-Length: 100000\r\n"
            sock.sendall(
                (
                    f"POST {self.path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                    f"Content-Type: application/octet-stream\r\n{self.headers}{framing}\r\n"
                ).encode()
                + (b"1\r\nx\r\n" if chunked else b"x")
            )
            self.sockets.append((sock, chunked))
        self._thread.start()
        return self

    def _trickle(self) -> None:
        while not self._stop.wait(self.trickle_s):
            for sock, chunked in self.sockets:
                try:
                    sock.sendall(b"1\r\nx\r\n" if chunked else b"x")
                except OSError:
                    pass

    def stop_trickling(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def answers(self, timeout: float = 60.0) -> list[RawResponse | None]:
        """What each stalled upload got once it stopped (read after :meth:`stop_trickling`)."""
        got = []
        for sock, _ in self.sockets:
            try:
                got.append(read_response(sock, timeout))
            except OSError:
                got.append(None)
        return got

    def close(self) -> None:
        self.stop_trickling()
        for sock, _ in self.sockets:
            sock.close()


@contextmanager
def stalled_uploads(
    url: str,
    count: int = 64,
    trickle_s: float = 0.5,
    path: str = "/score",
    headers: dict[str, str] | None = None,
) -> Iterator[StalledUploads]:
    uploads = StalledUploads(url, count, trickle_s, path, headers).open()
    try:
        yield uploads
    finally:
        uploads.close()


def timed_get(url: str, path: str, timeout: float = 60.0) -> tuple[int, float]:
    """Status and seconds of one GET on a new connection (raw, so nothing is pooled)."""
    start = time.perf_counter()
    got = exchange(url, request(url, "GET", path), timeout)
    return (got.status if got else 0), time.perf_counter() - start


#: malformed framing: name → raw bytes after the request line and Host header
BROKEN_FRAMING: dict[str, bytes] = {
    "bad chunk size": b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    "chunk size overflow": b"Transfer-Encoding: chunked\r\n\r\n"
    + b"f" * 40
    + b"\r\nx\r\n0\r\n\r\n",
    "missing chunk terminator": b"Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
    "chunk longer than its size": b"Transfer-Encoding: chunked\r\n\r\n2\r\nhello\r\n0\r\n\r\n",
    "length and chunked together": (
        b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    ),
    "negative length": b"Content-Length: -5\r\n\r\nhello",
    "two different lengths": b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "length not a number": b"Content-Length: five\r\n\r\nhello",
    "unknown transfer coding": b"Transfer-Encoding: gzip\r\n\r\nhello",
    "header without colon": b"Content-Length: 5\r\nno colon here\r\n\r\nhello",
}


def broken(url: str, name: str) -> bytes:
    host, port = address(url)
    return f"POST /score HTTP/1.1\r\nHost: {host}:{port}\r\n".encode() + BROKEN_FRAMING[name]
