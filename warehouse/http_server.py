"""The read-only part of ClickHouse's HTTP interface, served by the warehouse's owner.

chdb lets one process open the store, so that process answers everyone else's reads
here, the way a ClickHouse server answers on port 8123: curl, ``tawag sql``, the
dashboards' :class:`~warehouse.client.HttpClient`, DBeaver, Grafana or clickhouse-connect
work unchanged. What is served::

    GET  /ping, /replicas_status      -> 200 "Ok.\n"
    GET  /?query=SELECT...             -> the result
    POST /   (body = query, or query in the URL and more of it in the body)
         default_format=<Format>       result format when the query has no FORMAT clause
         (or X-ClickHouse-Format)      (TabSeparated if neither); chdb renders every
                                       ClickHouse output format natively
         param_<name>=<value>          binds {name:Type} placeholders
         compress=1                    the answer in ClickHouse's compressed blocks (LZ4,
                                       CityHash128 checksums: :mod:`warehouse.chblocks`),
                                       as the JDBC driver asks by default
         decompress=1                  the body is in those blocks
         enable_http_compression=1     gzip, deflate, zstd or lz4, as Accept-Encoding prefers
         database=tawag                (or X-ClickHouse-Database) the only database served
         query_id=<id>                 (or X-ClickHouse-Query-Id) echoed back

Every answer carries ``X-ClickHouse-Query-Id``, ``X-ClickHouse-Timezone``, and on success
``X-ClickHouse-Format`` and ``X-ClickHouse-Summary`` (rows and bytes read, result rows,
elapsed), as a ClickHouse server sends them. Request bodies may be gzip, deflate, zstd or
lz4 (``Content-Encoding``).

Every request authenticates as on ClickHouse: HTTP basic auth, the
``X-ClickHouse-User``/``X-ClickHouse-Key`` headers or the ``user``/``password`` URL
arguments, checked against the users file of :mod:`warehouse.users` (the dashboards'
users) and the service credential. A wrong or missing credential is ``Code: 516 ...
(AUTHENTICATION_FAILED)``: HTTP 401 with a Basic challenge when none was sent, 403
otherwise. An administrator reads every tenant; a tenant-user only its tenant's rows.
An administrator (the dashboards' service credential) may narrow a request to one
tenant with the URL argument ``tawag_tenant=<tenant>`` (the SQL box does).

Each statement is parsed by ClickHouse, checked against the allow-lists and run scoped
and limited (:mod:`warehouse.guard`), in one of a few concurrent read-only sessions
(:mod:`warehouse.readers`). A statement that is not a SELECT is 403 with ``Code: 164
... (READONLY)``; a SELECT that reaches outside the allowed tables and functions is 403
with ``Code: 497 ... (ACCESS_DENIED)``. ClickHouse's own exceptions come back with its
HTTP status mapping and the ``X-ClickHouse-Exception-Code`` header. The URL arguments
max_execution_time, max_rows_to_read, max_bytes_to_read, max_result_rows,
max_memory_usage may lower the server's limits, never raise them; ``limit=n`` caps the
rows returned. Other arguments (session_id, other settings) are ignored.

Tools read the catalogue from ``system.databases``, ``system.tables`` and
``system.columns``: those are served too, limited to the analyst tables' rows and their
harmless columns (:data:`warehouse.guard.METADATA_COLUMNS`).

Not served: ``Native`` for a client that sends ``client_protocol_version`` (clickhouse-go,
hence Grafana's ClickHouse plugin): such a client expects the native protocol's block
info and per-column serialization flags, which chdb does not write; it gets ``Code: 48
(NOT_IMPLEMENTED)`` rather than bytes it would misread.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import io
import json
import logging
import threading
import time
import uuid
import zlib
from collections.abc import Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol
from urllib.parse import parse_qs, urlsplit

import lz4.frame
import zstandard

from warehouse import chblocks, guard, metrics, schema
from warehouse.client import QueryError
from warehouse.users import Authenticator, User

__all__ = ["QueryExecutor", "WarehouseHTTPServer", "make_server", "serve_in_thread",
           "status_for_code", "content_type", "pick_encoding", "http_encode", "http_decode",
           "summary_header"]

log = logging.getLogger(__name__)

DEFAULT_FORMAT = "TabSeparated"
MAX_QUERY_BYTES = 1 << 20
"""Largest accepted query text (URL + body): reads need no bulk data."""

READONLY_CODE = 164
ACCESS_DENIED_CODE = 497
AUTHENTICATION_FAILED_CODE = 516
UNKNOWN_DATABASE_CODE = 81
NOT_IMPLEMENTED_CODE = 48
TENANT_ARG = "tawag_tenant"
ENCODINGS = ("gzip", "deflate", "zstd", "lz4")
"""HTTP compressions answered (``enable_http_compression=1``) and accepted in bodies."""

_STATUS_BY_CODE = {
    **dict.fromkeys((6, 26, 27, 32, 33, 36, 38, 41, 42, 43, 53, 62, 69, 70, 117, 456, 457),
                    HTTPStatus.BAD_REQUEST),
    **dict.fromkeys((46, 47, 50, 56, 60, 73, 81, 115), HTTPStatus.NOT_FOUND),
    **dict.fromkeys((READONLY_CODE, ACCESS_DENIED_CODE, AUTHENTICATION_FAILED_CODE),
                    HTTPStatus.FORBIDDEN),
    48: HTTPStatus.NOT_IMPLEMENTED,
}
"""ClickHouse's own mapping (HTTPHandler.cpp) for the codes a read can meet: parse and
argument errors are 400, unknown tables/functions/columns 404, READONLY/ACCESS_DENIED
403, NOT_IMPLEMENTED 501; everything else 500."""


class QueryExecutor(Protocol):
    """Checks, scopes and runs one statement (:class:`warehouse.readers.ReaderPool`)."""

    def run_statement(self, sql: str, *, tenant: str | None, fmt: str,
                      params: Mapping[str, str] | None = None, allow_format: bool = True,
                      limits: Mapping[str, int] = guard.DEFAULT_LIMITS,
                      row_limit: int | None = None, admin: bool = False,
                      stats: dict[str, int] | None = None) -> tuple[bytes, str]:
        ...


def pick_encoding(accept: str) -> str | None:
    """The compression to answer with for an ``Accept-Encoding`` header (None: none):
    the supported one with the highest q-value, the client's order breaking ties."""
    best, best_q = None, 0.0
    for item in accept.split(","):
        name, _, rest = item.partition(";")
        q = 1.0
        for part in rest.split(";"):
            key, _, value = part.strip().partition("=")
            if key.lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if name.strip().lower() in ENCODINGS and q > best_q:
            best, best_q = name.strip().lower(), q
    return best


def http_encode(body: bytes, encoding: str) -> bytes:
    """``body`` in HTTP ``encoding`` (gzip, deflate = zlib stream, zstd, lz4 = LZ4 frame)."""
    if encoding == "gzip":
        return gzip.compress(body, compresslevel=3)
    if encoding == "deflate":
        return zlib.compress(body, 3)
    if encoding == "zstd":
        return zstandard.ZstdCompressor(level=3).compress(body)
    if encoding == "lz4":
        return lz4.frame.compress(body)
    raise ValueError(f"unsupported encoding {encoding!r}")


def http_decode(raw: bytes, encoding: str, limit: int = MAX_QUERY_BYTES) -> bytes:
    """A request body in HTTP ``encoding``, decoded; ValueError past ``limit`` bytes."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        out = raw
    elif encoding in ("gzip", "deflate"):
        # wbits 47: a gzip or a zlib header, detected (ClickHouse's deflate is zlib)
        out = zlib.decompressobj(47).decompress(raw, limit + 1)
    elif encoding == "zstd":
        with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(raw)) as reader:
            out = reader.read(limit + 1)
    elif encoding == "lz4":
        out = lz4.frame.LZ4FrameDecompressor().decompress(raw, max_length=limit + 1)
    else:
        raise ValueError(f"unsupported Content-Encoding {encoding!r} (use "
                         f"{', '.join(ENCODINGS)})")
    if len(out) > limit:
        raise ValueError(f"query is larger than {limit} bytes")
    return out


def summary_header(stats: Mapping[str, int]) -> str:
    """``X-ClickHouse-Summary``: ClickHouse's progress figures, each a JSON string."""
    keys = ("read_rows", "read_bytes", "written_rows", "written_bytes", "total_rows_to_read",
            "result_rows", "result_bytes", "elapsed_ns")
    values = {**stats, "total_rows_to_read": stats.get("read_rows", 0)}
    return json.dumps({k: str(int(values.get(k, 0))) for k in keys}, separators=(",", ":"))


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


def _access_denied(reason: str) -> bytes:
    return (f"Code: {ACCESS_DENIED_CODE}. DB::Exception: {reason}. (ACCESS_DENIED)\n"
            ).encode()


def _auth_failed(user: str) -> bytes:
    return (f"Code: {AUTHENTICATION_FAILED_CODE}. DB::Exception: {user}: Authentication "
            "failed: password is incorrect, or there is no user with such name. "
            "(AUTHENTICATION_FAILED)\n").encode()


class _Handler(BaseHTTPRequestHandler):
    server: WarehouseHTTPServer
    protocol_version = "HTTP/1.1"
    server_version = "tawag-warehouse"
    timeout = 120  # a stalled client must not hold a thread forever

    # --- routes --------------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path, args = self._target()
        if path in ("/ping", "/replicas_status") or (path == "/" and "query" not in args):
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
            if args.get("decompress", ["0"])[0] == "1":
                body = chblocks.decompress(body, MAX_QUERY_BYTES)
        except (ValueError, OSError, RuntimeError, zlib.error, zstandard.ZstdError) as exc:
            self.close_connection = True
            self._error(HTTPStatus.BAD_REQUEST, 36, f"Code: 36. DB::Exception: {exc}. "
                        "(BAD_ARGUMENTS)\n".encode())
            return
        parts = [*args.get("query", [])[:1], body.decode("utf-8", "replace")]
        self._run("\n".join(p for p in parts if p), args)

    # --- helpers ---------------------------------------------------------------------------

    def _target(self) -> tuple[str, dict[str, list[str]]]:
        url = urlsplit(self.path)
        self._query_id = ""
        return url.path, parse_qs(url.query, keep_blank_values=True)

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            raw = self._read_chunked()
        else:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_QUERY_BYTES:
                raise ValueError(f"query is larger than {MAX_QUERY_BYTES} bytes")
            raw = self.rfile.read(length)
        return http_decode(raw, self.headers.get("Content-Encoding", ""))

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

    def _arg(self, args: dict[str, list[str]], name: str, header: str) -> str:
        """A URL argument, else its ``X-ClickHouse-*`` header, else ''."""
        return args.get(name, [""])[0] or self.headers.get(header, "")

    def _credentials(self, args: dict[str, list[str]]) -> tuple[str, str] | None:
        """(user, password) from the headers, basic auth or URL arguments; None if none."""
        name = self.headers.get("X-ClickHouse-User")
        if name is not None:
            return name, self.headers.get("X-ClickHouse-Key", "")
        header = self.headers.get("Authorization", "")
        if header[:6].lower() == "basic ":
            try:
                name, _, password = base64.b64decode(header[6:].strip()).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return "", ""
            return name, password
        if "user" in args:
            return args["user"][0], args.get("password", [""])[0]
        return None

    def _user(self, args: dict[str, list[str]]) -> User | None:
        credentials = self._credentials(args)
        name, password = credentials or ("default", "")
        user = self.server.authenticator.authenticate(name, password)
        if user is None:
            log.info("authentication failed for %r from %s", name, self.client_address[0])
            if credentials is None:
                self._error(HTTPStatus.UNAUTHORIZED, AUTHENTICATION_FAILED_CODE,
                            _auth_failed(name),
                            {"WWW-Authenticate": 'Basic realm="ClickHouse server"'})
            else:
                self._error(HTTPStatus.FORBIDDEN, AUTHENTICATION_FAILED_CODE,
                            _auth_failed(name))
        return user

    def _scope(self, user: User, args: dict[str, list[str]]) -> str | None:
        """The tenant whose rows ``user`` reads here (None: every tenant)."""
        if not user.is_admin:
            return user.tenant
        wanted = args.get(TENANT_ARG, [""])[0]
        return guard.valid_tenant(wanted) if wanted else None

    def _run(self, sql: str, args: dict[str, list[str]]) -> None:
        wanted = self._arg(args, "query_id", "X-ClickHouse-Query-Id")[:128]
        self._query_id = "".join(c for c in wanted if " " < c <= "~") or str(uuid.uuid4())
        user = self._user(args)
        if user is None:
            return
        database = self._arg(args, "database", "X-ClickHouse-Database")
        if database not in ("", schema.DATABASE):
            self._error(HTTPStatus.NOT_FOUND, UNKNOWN_DATABASE_CODE, (
                f"Code: {UNKNOWN_DATABASE_CODE}. DB::Exception: Database {database} does not "
                f"exist: this warehouse serves {schema.DATABASE}. (UNKNOWN_DATABASE)\n"
            ).encode())
            return
        fmt = self._arg(args, "default_format", "X-ClickHouse-Format") or DEFAULT_FORMAT
        if fmt.lower() not in guard.OUTPUT_FORMATS:
            self._error(HTTPStatus.FORBIDDEN, ACCESS_DENIED_CODE,
                        _access_denied(f"output format {fmt} is not available"))
            return
        params = {k[len("param_"):]: v[0] for k, v in args.items() if k.startswith("param_")}
        limits = guard.lowered_limits({k: v[0] for k, v in args.items()})
        row_limit = args.get("limit", [""])[0]
        started = time.perf_counter()
        stats: dict[str, int] = {}
        try:
            tenant = self._scope(user, args)
            data, fmt = self.server.executor.run_statement(
                sql, tenant=tenant, fmt=fmt, params=params, limits=limits,
                row_limit=int(row_limit) if row_limit.isdigit() else None,
                admin=user.is_admin, allow_format="tawag_sql_box" not in args, stats=stats)
        except guard.NotASelect as exc:
            log.info("refused query of %s: %s", user.name, exc)
            metrics.QUERIES.labels("refused").inc()
            self._error(HTTPStatus.FORBIDDEN, READONLY_CODE, _readonly_error(str(exc)))
            return
        except (guard.Refused, ValueError) as exc:
            log.info("refused query of %s: %s", user.name, exc)
            metrics.QUERIES.labels("refused").inc()
            self._error(HTTPStatus.FORBIDDEN, ACCESS_DENIED_CODE, _access_denied(str(exc)))
            return
        except QueryError as exc:
            metrics.QUERY_SECONDS.observe(time.perf_counter() - started)
            metrics.QUERIES.labels("error").inc()
            self._error(status_for_code(exc.code), exc.code, (str(exc).strip() + "\n").encode())
            return
        metrics.QUERY_SECONDS.observe(time.perf_counter() - started)
        metrics.QUERIES.labels("ok").inc()
        if fmt.lower() == "native" and args.get("client_protocol_version", ["0"])[0] != "0":
            self._error(HTTPStatus.NOT_IMPLEMENTED, NOT_IMPLEMENTED_CODE, (
                f"Code: {NOT_IMPLEMENTED_CODE}. DB::Exception: Native results for a native-"
                "protocol client (client_protocol_version) are not available on this "
                "embedded warehouse: ask for RowBinaryWithNamesAndTypes, Arrow or JSON. "
                "(NOT_IMPLEMENTED)\n").encode())
            return
        if args.get("compress", ["0"])[0] == "1":
            data = chblocks.compress(data)
        encoding = None
        if args.get("enable_http_compression", ["0"])[0] == "1":
            encoding = pick_encoding(self.headers.get("Accept-Encoding", ""))
        self._reply(HTTPStatus.OK, data, content_type(fmt), encoding=encoding, headers={
            "X-ClickHouse-Format": fmt, "X-ClickHouse-Summary": summary_header(stats)})

    def _error(self, status: HTTPStatus, code: int | None, body: bytes,
               extra: Mapping[str, str] | None = None) -> None:
        headers = {"X-ClickHouse-Exception-Code": str(code)} if code else {}
        headers.update(extra or {})
        self._reply(status, body, "text/plain; charset=UTF-8", headers=headers)

    def _reply(self, status: HTTPStatus, body: bytes, ctype: str, *,
               encoding: str | None = None, headers: Mapping[str, str] | None = None) -> None:
        headers = dict(headers or {})
        if encoding:
            body = http_encode(body, encoding)
            headers["Content-Encoding"] = encoding
        if getattr(self, "_query_id", ""):
            headers["X-ClickHouse-Query-Id"] = self._query_id
            headers["X-ClickHouse-Timezone"] = getattr(self.server.executor, "timezone", "UTC")
        if status >= 400:
            metrics.HTTP_ERRORS.labels(str(int(status))).inc()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        log.debug("%s %s", self.client_address[0], format % args)


class WarehouseHTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that answers authenticated reads from ``executor``."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], executor: QueryExecutor,
                 authenticator: Authenticator) -> None:
        super().__init__(address, _Handler)
        self.executor = executor
        self.authenticator = authenticator

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"


def make_server(host: str, port: int, executor: QueryExecutor,
                authenticator: Authenticator) -> WarehouseHTTPServer:
    """Bind the HTTP interface (port 0 picks a free port; see ``server.url``)."""
    return WarehouseHTTPServer((host, port), executor, authenticator)


def serve_in_thread(server: WarehouseHTTPServer) -> threading.Thread:
    """Start ``server.serve_forever`` in a daemon thread; stop with ``server.shutdown()``."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              name="warehouse-http", daemon=True)
    thread.start()
    return thread
