"""The gunicorn worker a package runs under azmlinfsrv: a thread only for a whole request.

gunicorn's gthread worker hands a connection to a thread as soon as it is readable; the
thread then blocks reading the headers and the body. A client that declares a body and
never sends it (or a chunked body that never ends) holds that thread for as long as it
likes, and a few dozen such clients take every thread — ``/score`` and the liveness probe
``GET /`` stop answering, and Kubernetes restarts a healthy pod. gunicorn's own advice is a
buffering proxy in front (nginx); inside Azure ML the package does not control what is in
front of it, so this worker does the buffering itself:

* the main loop reads each request, headers and body, without blocking, and checks its
  framing with h11 (the HTTP/1.1 parser uvicorn uses); only a complete request goes to a
  thread, which then never waits for the client;
* a request that stops arriving for ``SCOREPACK_READ_TIMEOUT_S`` (default 60 s, nginx's
  ``client_body_timeout``) is answered 408 and closed;
* malformed framing (a bad chunk size, a missing terminator, conflicting lengths, headers
  too large) is answered 400 or 431 here, and a body over the package's limit 413 — with
  scorepack's JSON error body, as ``scorepack serve`` answers — and closed; what h11 lets
  through and gunicorn's stricter parser refuses later, in the thread, gets the same JSON
  body with gunicorn's status (:meth:`BufferingThreadWorker.handle_error`);
* the bytes held for requests still arriving are bounded (``SCOREPACK_UPLOAD_BUFFER_BYTES``,
  default 256 MiB): past it, a new upload is answered 503 with ``Retry-After``;
* a scoring request (``POST /score``) is handed to a thread only while fewer than all
  threads but one score: otherwise it is answered 503 with ``Retry-After`` at once, and
  the last thread stays free for the probes (``GET /``) and other routes. gthread would
  queue it for a thread without bound instead, so that under a burst the answers of
  accepted requests — and the liveness probe, queued behind them — took longer and
  longer (benchmarks/overload burst: 8 s after 2 s at 5x capacity, the probe 4.9 s). The
  scorer's own queue (``max_queue_size``) bounds the wait of those that got a thread;
* while a thread scores a request, the main loop watches its connection: a client that
  closes it (end of stream or reset) cancels the request's
  :class:`~scorepack.cancellation.Cancellation`, and the runtime drops its queued work
  before any model call (``scorepack_cancelled_requests_total``; the access line says
  499). The thread still returns through azmlinfsrv, but at once. A client that sends its
  next request before the answer (pipelining) is not watched past that point.

Everything else is gunicorn's gthread worker: the threads, keep-alive, graceful shutdown.
It is selected with ``--worker-class`` in ``GUNICORN_CMD_ARGS``, which azmlinfsrv passes
on to gunicorn (:func:`scorepack.azureml.settings.server_environment`).
"""

from __future__ import annotations

import errno
import logging
import selectors
import socket
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import h11
from gunicorn.http import errors as parser_errors
from gunicorn.http2 import negotiation
from gunicorn.workers.gthread import TConn, ThreadWorker

from ..cancellation import Cancellation, bound
from ..codecs import DEFAULT_MAX_BODY_BYTES, encode_json
from ..errors import (
    BadRequestError,
    BodyTooLargeError,
    HeadersTooLargeError,
    MethodNotAllowedError,
    RequestTimeoutError,
    ScorepackError,
    ThreadsBusyError,
    UploadBufferFullError,
)
from ..server.errors import ErrorReply, error_reply
from .settings import ReadLimits, package_settings

__all__ = ["BufferingThreadWorker"]

logger = logging.getLogger("scorepack.azureml")

_RECV = 1 << 16


def _max_body_bytes(before_init: int) -> int:
    """The package's body limit once ``init()`` has loaded it (the same as ``/score``'s);
    before that, ``before_init`` (the settings' ``max_body_bytes``, or the default)."""
    from . import runtime

    made = runtime.current()
    if made is not None:
        return made.max_body_bytes
    return before_init


def _count(route: str, status: int) -> None:
    """Count an answer the main loop gave in the package's metrics (scorepack_requests_total,
    protocol azureml), as the runtime counts those it gives, once ``init()`` has made it."""
    from . import runtime

    made = runtime.current()
    if made is not None:
        scorer = made.scorer  # a one-model package counts every answer against its model
        made.metrics.requests.record(
            route,
            status,
            model=scorer.name if scorer else "",
            version=(scorer.version or "") if scorer else "",
            protocol="azureml",
        )


@dataclass
class _Arriving:
    """A request being read by the main loop."""

    conn: TConn
    parser: h11.Connection
    deadline: float
    data: bytearray = field(default_factory=bytearray)
    body_bytes: int = 0
    sent_continue: bool = False
    #: a POST /score: it takes one of the threads that may score
    scoring: bool = False
    #: the route, once the request line is read and names one of azmlinfsrv's (the
    #: metrics label: never the raw path, whose values a client chooses)
    route: str = ""


class BufferingThreadWorker(ThreadWorker):
    """gthread, except that a thread gets a connection only once its request has arrived."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # the settings object init() reads too (PackageSettings), from the same environment;
        # read here because gunicorn makes the worker before azmlinfsrv calls init()
        settings = package_settings()
        self.limits = ReadLimits.from_settings(settings)
        self.max_body_before_init: int = settings.max_body_bytes or DEFAULT_MAX_BODY_BYTES
        self.arriving: dict[int, _Arriving] = {}
        self.held_bytes = 0
        #: scoring requests handed to threads and not finished (main loop only)
        self.scoring = 0
        #: how many of them may be: every thread but one, which the probes keep
        self.scoring_threads = max(1, int(self.cfg.threads) - 1)
        self._busy_refused = 0
        self._busy_logged = 0.0

    # --- gthread's entry points, rerouted through the buffer ------------------------------

    def enqueue_req(self, conn: TConn) -> None:
        """Read the connection's next request in the main loop before a thread gets it."""
        if getattr(conn, "scorepack_ready", None) is not None or not self._plain_http1(conn):
            super().enqueue_req(conn)
            return
        ahead = conn.parser.unreader.take_buffered() if conn.parser is not None else b""
        conn.sock.setblocking(False)
        state = _Arriving(
            conn,
            h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.max_header_bytes),
            time.monotonic() + self.limits.read_timeout_s,
        )
        self.arriving[id(conn)] = state
        if ahead:
            self._received(state, ahead)
            if id(conn) not in self.arriving:
                return
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._readable, state))

    def _plain_http1(self, conn: TConn) -> bool:
        # TLS and HTTP/2 stay with gthread as they are (azmlinfsrv serves neither)
        return not (
            self.cfg.is_ssl
            or conn.is_http2
            or negotiation.prior_knowledge_allowed(self.cfg, conn.client)
        )

    def handle(self, conn: TConn) -> Any:
        """In a thread: give gunicorn's parser the request read for it, then serve it."""
        ready = getattr(conn, "scorepack_ready", None)
        if ready is not None:
            data, sent_continue = ready
            conn.scorepack_ready = None
            conn.sock.setblocking(True)
            conn.init()
            conn.parser.unreader.unread(bytes(data))
            conn.scorepack_sent_continue = sent_continue
        # the runtime finds it with scorepack.cancellation.current()
        with bound(getattr(conn, "scorepack_gone", None)):
            return super().handle(conn)

    def finish_request(self, conn: TConn, fs: Any) -> None:
        """On the main loop once a thread is done: stop watching for the client leaving,
        then gthread's keep-alive or close."""
        self._unwatch(conn)
        conn.scorepack_gone = None
        if getattr(conn, "scorepack_scoring", False):
            conn.scorepack_scoring = False
            self.scoring -= 1
        super().finish_request(conn, fs)

    def handle_request(self, req: Any, conn: TConn) -> Any:
        """Serve one request; gunicorn must not send a second ``100 Continue``."""
        if getattr(conn, "scorepack_sent_continue", False):
            req._expected_100_continue = False
            conn.scorepack_sent_continue = False
        return super().handle_request(req, conn)

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        """In a thread: gunicorn's own parser refused the request. It is stricter than h11
        in places (a request line over ``limit_request_line``, a header field over
        ``limit_request_field_size`` or past ``limit_request_fields``, a method not in
        capitals, an ``Expect`` other than ``100-continue``): the status gunicorn gives,
        with scorepack's JSON error body instead of gunicorn's HTML page, as every refusal
        of the main loop's. Errors that are not the request's (the application's, TLS)
        stay gunicorn's."""
        reply = _parser_refusal(exc)
        if reply is None:
            super().handle_error(req, client, addr, exc)
            return
        # gunicorn's own warning for it, which azmlinfsrv shows
        peer = addr[0] if isinstance(addr, tuple) and addr else addr
        self.log.warning("Invalid request from ip=%s: %s", peer, exc)
        try:
            client.sendall(_error_response(reply))
        except OSError:
            pass  # the client is gone: nobody to tell
        _count("", reply.status)

    def murder_pending(self) -> None:
        """gthread's clean-up of idle connections, plus requests that stopped arriving."""
        super().murder_pending()
        now = time.monotonic()
        for state in [s for s in self.arriving.values() if s.deadline <= now]:
            self._refuse(state, RequestTimeoutError(self.limits.read_timeout_s))

    # --- the buffer ------------------------------------------------------------------------

    def _readable(self, state: _Arriving, _sock: socket.socket) -> None:
        try:
            data = state.conn.sock.recv(_RECV)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(state)
            return
        if not data:
            # the client left mid-request: nobody to answer
            logger.debug("client %s closed the connection mid-request", state.conn.client)
            self._drop(state)
            return
        self._received(state, data)

    def _received(self, state: _Arriving, data: bytes) -> None:
        state.deadline = time.monotonic() + self.limits.read_timeout_s
        state.data += data
        self._hold(len(data))
        try:
            state.parser.receive_data(data)
            while True:
                event = state.parser.next_event()
                if event is h11.NEED_DATA:
                    break
                if isinstance(event, h11.Request):
                    self._started(state, event)
                elif isinstance(event, h11.Data):
                    state.body_bytes += len(event.data)
                    limit = _max_body_bytes(self.max_body_before_init)
                    if state.body_bytes > limit:
                        raise BodyTooLargeError(limit)
                elif isinstance(event, h11.EndOfMessage):
                    self._complete(state)
                    return
            if self.held_bytes > self.limits.buffer_bytes:
                raise UploadBufferFullError(self.limits.buffer_bytes)
        except h11.RemoteProtocolError as exc:
            if exc.error_status_hint == 431:
                self._refuse(
                    state, HeadersTooLargeError(f"The request headers are too large ({exc}).")
                )
            else:
                self._refuse(state, BadRequestError(f"The request is not valid HTTP/1.1: {exc}"))
        except ScorepackError as exc:
            self._refuse(state, exc)

    def _started(self, state: _Arriving, request: h11.Request) -> None:
        method = request.method.decode("latin-1")
        path = request.target.split(b"?", 1)[0].decode("latin-1")
        route = _ROUTES.get(path)
        if route is not None:
            state.route = path
        if route is not None and method not in route[0]:
            # azmlinfsrv's own 405 (Flask's, rewrapped) drops the Allow header
            raise MethodNotAllowedError(method, path, route[1])
        state.scoring = path == "/score" and method == "POST"
        names = {name for name, _ in request.headers}
        if b"content-length" in names and b"transfer-encoding" in names:
            # RFC 9112 6.3: a request smuggling pattern; gunicorn refuses it too
            raise BadRequestError("The request has both Content-Length and Transfer-Encoding.")
        for name, value in request.headers:
            if name == b"content-length":
                limit = _max_body_bytes(self.max_body_before_init)
                if int(value) > limit:
                    # refuse before reading a byte of it, as /score does
                    raise BodyTooLargeError(limit, int(value))
        if state.parser.they_are_waiting_for_100_continue:
            self._send(state.conn, b"HTTP/1.1 100 Continue\r\n\r\n")
            state.sent_continue = True

    def _complete(self, state: _Arriving) -> None:
        if state.scoring:
            if self.scoring >= self.scoring_threads:
                self._busy(state)
                return
            self.scoring += 1
            state.conn.scorepack_scoring = True
        self._forget(state)
        conn = state.conn
        conn.scorepack_ready = (state.data, state.sent_continue)
        conn.data_ready = True
        conn.scorepack_gone = Cancellation()
        super().enqueue_req(conn)
        self._watch(conn)

    # --- a client that leaves while its request is served ----------------------------------

    def _watch(self, conn: TConn) -> None:
        # the thread never reads this socket again before finish_request (the request is
        # whole in its parser), so readable means the client closed, reset or pipelined
        try:
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._gone, conn))
        except (KeyError, ValueError, OSError):
            return
        conn.scorepack_watched = True

    def _unwatch(self, conn: TConn) -> None:
        if getattr(conn, "scorepack_watched", False):
            conn.scorepack_watched = False
            try:
                self.poller.unregister(conn.sock)
            except (KeyError, ValueError, OSError):
                pass

    def _gone(self, conn: TConn, _sock: socket.socket) -> None:
        try:
            peek = conn.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            peek = b""  # reset by the client: gone as well
        # either way stop watching: a level-triggered poller would report pipelined bytes
        # for as long as they wait, and they are the next request's, read after this one
        self._unwatch(conn)
        cancellation = getattr(conn, "scorepack_gone", None)
        if not peek and cancellation is not None:
            logger.debug("client %s left while its request was served", _peer(conn))
            cancellation.cancel()

    def _refuse(self, state: _Arriving, exc: ScorepackError, log: bool = True) -> None:
        """Answer the request from here and close its connection."""
        reply = error_reply(exc)
        code = reply.status
        if log:
            # gunicorn's own log, which azmlinfsrv shows (scorepack's loggers it does not)
            self.log.info(
                "scorepack: refused a request from %s before it reached a thread: %s %s%s",
                _peer(state.conn),
                code,
                reply.message,
                f" ({self._busy_refused} such in the last second)"
                if isinstance(exc, ThreadsBusyError)
                else "",
            )
        self._send(state.conn, _error_response(reply))
        self._drop(state)
        _count(state.route, code)

    def _busy(self, state: _Arriving) -> None:
        """Refuse a scoring request no thread may take (503, Retry-After), logging at most
        one line a second: a burst refuses thousands."""
        self._busy_refused += 1
        now = time.monotonic()
        quiet = now - self._busy_logged < 1.0
        self._refuse(state, ThreadsBusyError(self.scoring_threads), log=not quiet)
        if not quiet:
            self._busy_logged, self._busy_refused = now, 0

    def _drop(self, state: _Arriving) -> None:
        self._forget(state)
        self.nr_conns -= 1
        state.conn.close()

    def _forget(self, state: _Arriving) -> None:
        if self.arriving.pop(id(state.conn), None) is None:
            return
        self._hold(-len(state.data))
        try:
            self.poller.unregister(state.conn.sock)
        except (KeyError, ValueError, OSError):
            pass  # never registered: the whole request came with the previous one

    def _hold(self, delta: int) -> None:
        self.held_bytes += delta

    @staticmethod
    def _send(conn: TConn, data: bytes) -> None:
        # a short answer into a fresh socket buffer; a client that does not read it loses it
        try:
            conn.sock.send(data)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                logger.debug("could not answer %s: %s", _peer(conn), exc)


def _peer(conn: TConn) -> str:
    client = conn.client
    if isinstance(client, tuple) and len(client) >= 2:
        return f"{client[0]}:{client[1]}"
    return str(client)


#: azmlinfsrv's routes: the methods it passes on, and what a 405 says is allowed (run()
#: answers GET and OPTIONS on /score with scorepack's own 405)
_ROUTES = {
    "/score": ({"GET", "POST", "OPTIONS"}, ("POST",)),
    "/": ({"GET", "HEAD"}, ("GET", "HEAD")),
    "/swagger.json": ({"GET", "HEAD"}, ("GET", "HEAD")),
}

_REASONS = {
    400: "Bad Request",
    403: "Forbidden",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    414: "URI Too Long",
    417: "Expectation Failed",
    431: "Request Header Fields Too Large",
    501: "Not Implemented",
    503: "Service Unavailable",
}


def _error_response(reply: ErrorReply) -> bytes:
    """A whole HTTP/1.1 answer with the reply's JSON error body; the connection closes."""
    body = encode_json(reply.body)
    headers = {
        "Content-Type": "application/json",
        "Content-Length": str(len(body)),
        "Connection": "close",
        **reply.headers,
    }
    head = f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'Error')}\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in headers.items()
    )
    return head.encode("latin-1") + b"\r\n" + body


#: gunicorn's parser errors that are the request's fault, with the status gunicorn gives
#: each (``Worker.handle_error``), first match first; any other ParseException is a 400
_PARSER_REFUSALS: tuple[tuple[type[Exception], int, str, str], ...] = (
    (parser_errors.LimitRequestLine, 414, "uri_too_long", "The request line is too long"),
    (
        parser_errors.LimitRequestHeaders,
        431,
        "headers_too_large",
        "The request headers are over the server's limits",
    ),
    (
        parser_errors.ExpectationFailed,
        417,
        "expectation_failed",
        "The request expects what the server does not do",
    ),
    (
        parser_errors.UnsupportedTransferCoding,
        501,
        "unsupported_transfer_coding",
        "The request's transfer coding is not supported",
    ),
    (parser_errors.ForbiddenProxyRequest, 403, "forbidden", "The proxy request is forbidden"),
)


def _parser_refusal(exc: BaseException) -> ErrorReply | None:
    """The JSON reply for a request gunicorn's parser refused; None for errors that are
    not the request's: a response header the application made, gunicorn's configuration."""
    if not isinstance(exc, parser_errors.ParseException) or isinstance(
        exc,
        parser_errors.InvalidResponseHeader
        | parser_errors.InvalidResponseHeaderName
        | parser_errors.ConfigurationProblem,
    ):
        return None
    for kind, status, code, lead in _PARSER_REFUSALS:
        if isinstance(exc, kind):
            return ErrorReply(status, code, f"{lead}: {exc}.")
    return ErrorReply(400, "bad_request", f"The request is not valid HTTP/1.1: {exc}.")
