"""The read-only part of ClickHouse's HTTP interface, served by the warehouse's owner.

chdb lets one process open the store, so that process answers everyone else's reads
here, the way a ClickHouse server answers on port 8123: curl, ``tawag sql``, the
dashboards' :class:`~warehouse.client.HttpClient`, DBeaver, Grafana or clickhouse-connect
work unchanged. What is served::

    GET  /ping                         -> 200 "Ok.\\n"
    GET  /?query=SELECT...             -> the result
    POST /   (body = query, or query in the URL and more of it in the body)
         default_format=<Format>       result format when the query has no FORMAT clause
                                       (TabSeparated if neither); chdb renders every
                                       ClickHouse output format natively
         param_<name>=<value>          binds {name:Type} placeholders
         enable_http_compression=1     gzip the answer if the client accepts gzip

Only one read-only statement per request (:mod:`warehouse.readonly`); anything else is
403 with ``Code: 164. DB::Exception: tawag warehouse is read-only: <why>. (READONLY)``.
ClickHouse's own exceptions come back with its HTTP status mapping and the
``X-ClickHouse-Exception-Code`` header. Other URL arguments (user, password, database,
session_id, settings) are ignored: unqualified table names resolve in ``tawag``, and the
limits (max_execution_time, max_result_rows) are the reader session's own.
"""

from __future__ import annotations

import gzip
import logging
import threading
import zlib
from collections.abc import Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol
from urllib.parse import parse_qs, urlsplit

from warehouse.client import QueryError
from warehouse.readonly import ReadOnlyViolation, check_read_only, trailing_format

__all__ = ["QueryExecutor", "WarehouseHTTPServer", "make_server", "serve_in_thread",
           "status_for_code", "content_type"]

log = logging.getLogger(__name__)

DEFAULT_FORMAT = "TabSeparated"
MAX_QUERY_BYTES = 1 << 20
"""Largest accepted query text (URL + body): reads need no bulk data."""

READONLY_CODE = 164

_STATUS_BY_CODE = {
    **dict.fromkeys((6, 26, 27, 32, 33, 36, 38, 41, 42, 43, 53, 62, 69, 70, 117, 456, 457),
                    HTTPStatus.BAD_REQUEST),
    **dict.fromkeys((46, 47, 50, 56, 60, 73, 81, 115), HTTPStatus.NOT_FOUND),
    **dict.fromkeys((READONLY_CODE, 497), HTTPStatus.FORBIDDEN),
    48: HTTPStatus.NOT_IMPLEMENTED,
}
"""ClickHouse's own mapping (HTTPHandler.cpp) for the codes a read can meet: parse and
argument errors are 400, unknown tables/functions/columns 404, READONLY/ACCESS_DENIED
403, NOT_IMPLEMENTED 501; everything else 500."""


class QueryExecutor(Protocol):
    """Runs one statement and returns its bytes in a ClickHouse format (ChdbClient does)."""

    def execute(self, sql: str, fmt: str, params: Mapping[str, str] | None = None) -> bytes:
        ...


def status_for_code(code: int | None) -> HTTPStatus:
    """HTTP status for a ClickHouse error code, as a ClickHouse server would answer."""
    return _STATUS_BY_CODE.get(code or 0, HTTPStatus.INTERNAL_SERVER_ERROR)


def content_type(fmt: str) -> str:
    """Content-Type of a ClickHouse output format (as ClickHouse labels them)."""
    name = fmt.lower()
    if name.startswith(("tabseparated", "tsv")):
        return "text/tab-separated-values; charset=UTF-8"
    if name.startswith("csv"):
        return "text/csv; charset=UTF-8; header=present"
    if name in ("jsoneachrow", "jsonlines", "ndjson", "jsoncompacteachrow"):
        return "application/x-ndjson; charset=UTF-8"
    if name.startswith("json"):
        return "application/json; charset=UTF-8"
    if name in ("arrow", "arrowstream", "parquet", "native", "orc", "avro", "protobuf") \
            or name.startswith("rowbinary"):
        return "application/octet-stream"
    return "text/plain; charset=UTF-8"


def _readonly_error(reason: str) -> bytes:
    return (f"Code: {READONLY_CODE}. DB::Exception: tawag warehouse is read-only: {reason}. "
            "(READONLY)\n").encode()


class _Handler(BaseHTTPRequestHandler):
    server: WarehouseHTTPServer
    protocol_version = "HTTP/1.1"
    server_version = "tawag-warehouse"
    timeout = 120  # a stalled client must not hold a thread forever

    # --- routes --------------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path, args = self._target()
        if path == "/ping" or (path == "/" and "query" not in args):
            self._reply(HTTPStatus.OK, b"Ok.\n", "text/plain; charset=UTF-8")
        elif path == "/":
            self._run(args["query"][0], args)
        else:
            self._reply(HTTPStatus.NOT_FOUND, b"There is no handle " + path.encode() + b"\n",
                        "text/plain; charset=UTF-8")

    def do_POST(self) -> None:  # noqa: N802
        path, args = self._target()
        if path != "/":
            self.close_connection = True  # the body is left unread
            self._reply(HTTPStatus.NOT_FOUND, b"There is no handle " + path.encode() + b"\n",
                        "text/plain; charset=UTF-8")
            return
        try:
            body = self._body()
        except (ValueError, OSError, zlib.error) as exc:
            self.close_connection = True
            self._reply(HTTPStatus.BAD_REQUEST, f"Code: 36. DB::Exception: {exc}. "
                        "(BAD_ARGUMENTS)\n".encode(), "text/plain; charset=UTF-8")
            return
        parts = [*args.get("query", [])[:1], body.decode("utf-8", "replace")]
        self._run("\n".join(p for p in parts if p), args)

    # --- helpers ---------------------------------------------------------------------------

    def _target(self) -> tuple[str, dict[str, list[str]]]:
        url = urlsplit(self.path)
        return url.path, parse_qs(url.query, keep_blank_values=True)

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            raw = self._read_chunked()
        else:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_QUERY_BYTES:
                raise ValueError(f"query is larger than {MAX_QUERY_BYTES} bytes")
            raw = self.rfile.read(length)
        return self._decompress(raw)

    def _read_chunked(self) -> bytes:
        chunks, total = [], 0
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                self.rfile.readline()
                return b"".join(chunks)
            total += size
            if total > MAX_QUERY_BYTES:
                raise ValueError(f"query is larger than {MAX_QUERY_BYTES} bytes")
            chunks.append(self.rfile.read(size))
            self.rfile.readline()

    def _decompress(self, raw: bytes) -> bytes:
        encoding = self.headers.get("Content-Encoding", "").lower()
        if encoding in ("", "identity"):
            return raw
        if encoding == "gzip":
            return gzip.decompress(raw)
        if encoding == "deflate":
            return zlib.decompress(raw)
        raise ValueError(f"unsupported Content-Encoding {encoding!r} (use gzip or deflate)")

    def _run(self, sql: str, args: dict[str, list[str]]) -> None:
        fmt = args.get("default_format", [""])[0] or self.headers.get("X-ClickHouse-Format") \
            or DEFAULT_FORMAT
        params = {k[len("param_"):]: v[0] for k, v in args.items() if k.startswith("param_")}
        try:
            statement = check_read_only(sql)
        except ReadOnlyViolation as exc:
            log.info("refused query from %s: %s", self.client_address[0], exc)
            self._error(HTTPStatus.FORBIDDEN, READONLY_CODE, _readonly_error(str(exc)))
            return
        fmt = trailing_format(statement) or fmt
        try:
            data = self.server.executor.execute(statement, fmt, params)
        except QueryError as exc:
            self._error(status_for_code(exc.code), exc.code, (str(exc).strip() + "\n").encode())
            return
        self._reply(HTTPStatus.OK, data, content_type(fmt), fmt=fmt,
                    compress=args.get("enable_http_compression", ["0"])[0] == "1")

    def _error(self, status: HTTPStatus, code: int | None, body: bytes) -> None:
        headers = {"X-ClickHouse-Exception-Code": str(code)} if code else {}
        self._reply(status, body, "text/plain; charset=UTF-8", headers=headers)

    def _reply(self, status: HTTPStatus, body: bytes, ctype: str, *, fmt: str | None = None,
               compress: bool = False, headers: Mapping[str, str] | None = None) -> None:
        if compress and "gzip" in self.headers.get("Accept-Encoding", ""):
            body = gzip.compress(body, compresslevel=3)
            headers = {**(headers or {}), "Content-Encoding": "gzip"}
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        if fmt:
            self.send_header("X-ClickHouse-Format", fmt)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        log.debug("%s %s", self.client_address[0], format % args)


class WarehouseHTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that answers reads from ``executor`` (a read-only session)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], executor: QueryExecutor) -> None:
        super().__init__(address, _Handler)
        self.executor = executor

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"


def make_server(host: str, port: int, executor: QueryExecutor) -> WarehouseHTTPServer:
    """Bind the HTTP interface (port 0 picks a free port; see ``server.url``)."""
    return WarehouseHTTPServer((host, port), executor)


def serve_in_thread(server: WarehouseHTTPServer) -> threading.Thread:
    """Start ``server.serve_forever`` in a daemon thread; stop with ``server.shutdown()``."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              name="warehouse-http", daemon=True)
    thread.start()
    return thread
