"""A stdlib ThreadingHTTPServer in a thread, on a port in the tests' range 31000-31099.

A fake is an app object with ``handle(Request) -> Reply``; the server can be stopped
and restarted on the same port to play "CRM down for ten minutes, then back".
"""

from __future__ import annotations

import contextlib
import errno
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

PORTS = range(31000, 31100)
HOLD_S = 20.0
_taken: set[int] = set()
_taken_lock = threading.Lock()


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    raw_query: str = ""
    """The query string as sent (a ``+`` is not a space to every server: 1C)."""

    def json(self) -> Any:
        return json.loads(self.body or b"null")

    def arg(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


@dataclass
class Reply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def json_reply(status: int, data: Any, content_type: str = "application/json") -> Reply:
    return Reply(status, json.dumps(data, ensure_ascii=False).encode(),
                 {"Content-Type": content_type})


class FakeServer:
    """Serves ``app`` on 127.0.0.1; ``stop()``/``start()`` keep the port."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.port: int | None = None
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeServer:
        handler = _handler_for(self.app)
        if self.port is None:
            self._httpd, self.port = _bind_free(handler)
        else:
            self._httpd = _Server(("127.0.0.1", self.port), handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def close(self) -> None:
        self.stop()
        with _taken_lock:
            _taken.discard(self.port or 0)


class _Server(ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 128


def _bind_free(handler: type) -> tuple[ThreadingHTTPServer, int]:
    for port in PORTS:
        with _taken_lock:
            if port in _taken:
                continue
            try:
                server = _Server(("127.0.0.1", port), handler)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    continue
                raise
            _taken.add(port)
            return server, port
    raise RuntimeError("no free port in 31000-31099")


def _handler_for(app: Any) -> type:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # One write per response and no Nagle: otherwise headers and body go out as two
        # small segments and delayed ACKs add ~40 ms to every keep-alive request.
        wbufsize = 65536
        disable_nagle_algorithm = True

        def log_message(self, *args: Any) -> None:
            pass

        def _serve(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            req = Request(self.command, unquote(parts.path),
                          parse_qs(parts.query, keep_blank_values=True),
                          {k.lower(): v for k, v in self.headers.items()},
                          self.rfile.read(length) if length else b"", parts.query)
            reply = app.handle(req)
            hold = getattr(app, "hold", None)
            if hold is not None and hold(req):
                # The CRM has applied the request but its answer never arrives in time:
                # the window in which a killed worker cannot know it was delivered.
                time.sleep(HOLD_S)
            with contextlib.suppress(OSError):  # the client was killed while we held it
                self._send(reply)

        def _send(self, reply: Reply) -> None:
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            if reply.body:
                self.wfile.write(reply.body)

        do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

    return Handler


class FaultPlan:
    """Queued replies a fake returns before its normal handling (500s, 429 storms)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: list[Reply] = []

    def add(self, reply: Reply, count: int = 1) -> None:
        with self._lock:
            self._queue += [reply] * count

    def next(self) -> Reply | None:
        with self._lock:
            return self._queue.pop(0) if self._queue else None

    def left(self) -> int:
        with self._lock:
            return len(self._queue)
