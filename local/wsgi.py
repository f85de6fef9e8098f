"""Small WSGI plumbing shared by the local endpoint server and the local REST front (both served by waitress)."""

from __future__ import annotations

import json
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any

from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.server import create_server

from ml import contract

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict, StartResponse], Iterable[bytes]]
LISTENING = "listening on http://{host}:{port}"
log = logging.getLogger("local.wsgi")


def status_line(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Unknown"


def respond(start_response: StartResponse, status: int, body: bytes, content_type: str,
            headers: Iterable[tuple[str, str]] = ()) -> list[bytes]:
    start_response(status_line(status), [("Content-Type", content_type), ("Content-Length", str(len(body))),
                                         *headers])
    return [body]


def respond_json(start_response: StartResponse, status: int, payload: Any,
                 headers: Iterable[tuple[str, str]] = ()) -> list[bytes]:
    return respond(start_response, status, json.dumps(payload).encode(), contract.JSON_CONTENT_TYPE, headers)


def respond_error(start_response: StartResponse, error: contract.ApiError, message: str,
                  headers: Iterable[tuple[str, str]] = ()) -> list[bytes]:
    return respond_json(start_response, error.status, contract.error_body(error, message), headers)


def content_length(environ: dict) -> int | None:
    try:
        value = int(environ.get("CONTENT_LENGTH") or -1)
    except ValueError:
        return None
    return value if value >= 0 else None


def read_body(environ: dict, limit: int) -> bytes | None:
    """The request body, or None when it is longer than `limit` (read no more than limit + 1 bytes)."""
    length = content_length(environ)
    if length is not None and length > limit:
        return None
    stream = environ["wsgi.input"]
    data = stream.read(length) if length is not None else stream.read(limit + 1)
    return None if len(data) > limit else data


# Slow and idle clients (waitress's defaults let ~98 silent sockets lock everyone out for 2 minutes: its limit
# counts the server's own sockets, and a connection that trickles a byte now and then is never idle).
MAX_CLIENTS = 512  # open client connections; at the limit the longest-idle ones are closed to make room
IDLE_TIMEOUT_S = 15  # a kept-alive connection with no request in progress is closed after this
REQUEST_TIMEOUT_S = 30  # a request's headers and body must arrive within this (slowloris), as API Gateway's 29 s


class _Channel(HTTPChannel):
    """waitress's channel, remembering when the request it is receiving began."""

    request_started = 0.0

    def received(self, data: bytes) -> bool:
        if self.request is None and data:
            self.request_started = time.monotonic()
        return super().received(data)


class Server:
    """A waitress server with a stop switch that works from any thread or a signal handler, and that slow or
    idle clients cannot starve (MAX_CLIENTS, IDLE_TIMEOUT_S, REQUEST_TIMEOUT_S).

    waitress's own run() only stops on KeyboardInterrupt in the main thread; this loop polls a flag between
    socket events instead, so tests, benchmarks and the CLIs share one clean shutdown path.
    """

    POLL_S = 0.2

    def __init__(self, app: WSGIApp, host: str, port: int, threads: int = 4, *, max_clients: int = MAX_CLIENTS,
                 idle_timeout: float = IDLE_TIMEOUT_S, request_timeout: float = REQUEST_TIMEOUT_S,
                 **adjustments: Any) -> None:
        self.app = app
        self.max_clients, self.request_timeout = max_clients, request_timeout
        # The limit is enforced here (waitress's own counts its listening socket and trigger too).
        self._server = create_server(app, host=host, port=port, threads=threads, map={},
                                     connection_limit=1 << 30, cleanup_interval=1,
                                     channel_timeout=max(1, math.ceil(idle_timeout)), **adjustments)
        self._server.channel_class = _Channel
        self._waitress_readable = self._server.readable
        self._server.readable = self._readable  # waitress calls its server's readable() on every loop
        self.host = host
        self.port = int(self._server.effective_port)
        self.url = f"http://{host}:{self.port}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _readable(self) -> bool:
        """Close clients too slow to send a request, and the longest-idle ones when at the limit; accept new
        connections only below it."""
        now = time.monotonic()
        channels = [c for c in self._server.active_channels.values() if not c.will_close]
        for channel in channels:
            if channel.request is not None and not channel.requests and \
                    now - channel.request_started > self.request_timeout:
                log.info("closing %s: no complete request within %g s", channel.addr, self.request_timeout)
                channel.will_close = True
        channels = [c for c in channels if not c.will_close]
        if len(channels) >= self.max_clients:
            idle = sorted((c for c in channels if c.request is None and not c.requests),
                          key=lambda c: c.last_activity)
            for channel in idle[: len(channels) - self.max_clients + 1]:
                channel.will_close = True
            channels = [c for c in channels if not c.will_close]
        self._waitress_readable()  # waitress's idle clean-up (IDLE_TIMEOUT_S)
        return self._server.accepting and len(channels) < self.max_clients

    def serve(self) -> None:
        """Serve until stop() (from another thread or a signal handler); then close every socket."""
        try:
            while not self._stop.is_set():
                wasyncore.loop(timeout=self.POLL_S, use_poll=True, map=self._server._map, count=1)
        finally:
            self._server.task_dispatcher.shutdown(timeout=5)
            wasyncore.close_all(self._server._map)

    def start(self) -> Server:
        """Serve in a background thread (tests, benchmarks, the REST front next to its endpoint)."""
        self._thread = threading.Thread(target=self.serve, name=f"waitress-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def stopped(self) -> threading.Event:
        """Set once stop() is called (for waits that must end with the server)."""
        return self._stop


def stop_on_signals(stop: Callable[[], None]) -> None:
    """SIGTERM and SIGINT (Ctrl-C) call `stop` instead of raising in the middle of a request."""
    def handle(signum: int, _frame: Any) -> None:
        log.info("received %s: shutting down", signal.Signals(signum).name)
        stop()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
