"""local/wsgi.py's server under slow and idle clients: they are timed out and cannot lock others out (the REST
front of `make serve` and the endpoint server both run on it)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from local import wsgi
from local.rest_api import create_server
from ml import contract
from tests.support.serve import GOOD_PNG, http_request

# Generous waits: a loaded machine may be slow, never wrong.
PROMPT_S = 20.0


def _lambda(event, context):
    return {"statusCode": 200, "headers": {"Content-Type": contract.JSON_CONTENT_TYPE}, "body": '{"ok": true}'}


def _silent_sockets(stack: ExitStack, port: int, n: int) -> list[socket.socket]:
    sockets = []
    for _ in range(n):
        sock = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=PROMPT_S))
        sockets.append(sock)
    return sockets


def _closed_by_server(sock: socket.socket, within: float) -> bool:
    sock.settimeout(within)
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


@contextmanager
def serving(**limits) -> Iterator[wsgi.Server]:
    """The REST front of `make serve` (its own defaults, or `limits`) around a Lambda that answers 200."""
    server = (wsgi.Server(create_server(_lambda).app, "127.0.0.1", 0, **limits) if limits
              else create_server(_lambda)).start()
    try:
        yield server
    finally:
        server.stop()


def _predict(server: wsgi.Server):
    return http_request(server.port, "POST", contract.PREDICT_PATH, GOOD_PNG, "image/png", timeout=PROMPT_S)


def test_120_idle_connections_do_not_lock_out_a_request():
    # Issue 12 item 16: waitress's limit of 100 counted the server's own sockets; ~98 silent clients locked
    # everyone out until waitress's 120 s channel timeout.
    with serving() as server, ExitStack() as stack:
        _silent_sockets(stack, server.port, 120)
        started = time.monotonic()
        reply = _predict(server)
        assert reply.status == 200 and reply.json() == {"ok": True}
        assert time.monotonic() - started < PROMPT_S


def test_at_the_limit_the_longest_idle_clients_make_room():
    with serving(max_clients=20) as server, ExitStack() as stack:
        first = _silent_sockets(stack, server.port, 30)
        assert _predict(server).status == 200
        assert _closed_by_server(first[0], PROMPT_S), "the longest-idle client was kept"


def test_slowloris_partial_headers_time_out():
    with serving(request_timeout=2) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=PROMPT_S) as sock:
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")
            deadline, closed = time.monotonic() + 4 * PROMPT_S, False
            while time.monotonic() < deadline and not closed:
                try:
                    sock.sendall(b"X-a: b\r\n")  # a header line every half second: never idle, never done
                except (BrokenPipeError, ConnectionResetError):
                    closed = True
                    break
                closed = _closed_by_server(sock, 0.5)
            assert closed, "a client trickling headers kept its connection"
        assert _predict(server).status == 200


def test_idle_keep_alive_connections_are_closed():
    with serving(idle_timeout=1) as server, \
            socket.create_connection(("127.0.0.1", server.port), timeout=PROMPT_S) as sock:
        assert _closed_by_server(sock, PROMPT_S)


def test_a_normal_slow_upload_within_the_timeout_is_served():
    with serving() as server, socket.create_connection(("127.0.0.1", server.port), timeout=PROMPT_S) as sock:
        head = (f"POST {contract.PREDICT_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                f"Content-Length: {len(GOOD_PNG)}\r\nConnection: close\r\n\r\n").encode()
        for i in range(0, len(head), 16):
            sock.sendall(head[i:i + 16])
            time.sleep(0.05)
        sock.sendall(GOOD_PNG)
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
        assert data.startswith(b"HTTP/1.1 200"), data[:200]
