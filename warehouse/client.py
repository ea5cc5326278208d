"""One small client protocol for the warehouse, and its three implementations.

Who uses which (``connect`` picks for everyone but the owner)::

    owner process (warehouse.service)  ChdbClient(path)        in-process chdb, read/write
    anyone else, embedded mode          HttpClient(url)         the owner's read-only HTTP port
    anyone, server mode                 DriverClient(settings, reader=True)  clickhouse-driver
    the writer, server mode             DriverClient(settings)  (migrations, loader)

chdb lets exactly one process open a data path, so in embedded mode only the owner holds
a :class:`ChdbClient`; dashboards and analysts speak ClickHouse's HTTP interface to it,
exactly as they would to a ClickHouse server's port 8123.

Values are always bound as ``{name:Type}`` parameters (see :mod:`warehouse.params`);
only identifiers from :mod:`warehouse.schema` are ever put into SQL text.

Usage::

    client = connect(settings)
    rows = client.query("SELECT count() AS n FROM tawag.cdrs FINAL WHERE tenant = {t:String}",
                        {"t": "acme"})

Errors are :class:`WarehouseError` subclasses; no chdb/httpx/clickhouse-driver exception
reaches callers.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import httpx
import orjson
import pandas as pd
import pyarrow as pa

from warehouse.params import encode_params, format_datetime

if TYPE_CHECKING:
    from core.settings import Settings

__all__ = [
    "WarehouseClient",
    "ChdbClient",
    "HttpClient",
    "service_client",
    "DriverClient",
    "WarehouseError",
    "QueryError",
    "ReadOnlyClientError",
    "UnavailableError",
    "connect",
    "quote_identifier",
    "rows_to_json_each_row",
]

Params = Mapping[str, Any] | None

ARROW_FORMAT = "ArrowStream"
"""Result format the chdb and HTTP clients ask for: typed columns (DateTime64, Nullable)
for free. One trap: ClickHouse sends ``DateTime`` (seconds, e.g. ``toStartOfHour()``) as a
bare UInt32 in Arrow, so queries return DateTime64 (``toDateTime64(x, 3, 'UTC')``)."""

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
_CODE = re.compile(r"Code: (\d+)\.")


# --- errors ------------------------------------------------------------------------------


class WarehouseError(Exception):
    """Base of every warehouse client error.

    WarehouseError
     +-- QueryError           ClickHouse refused or failed the query (``code`` set)
     +-- ReadOnlyClientError  a write through a read-only client
     +-- UnavailableError     the store or the server cannot be reached / opened
    """

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class QueryError(WarehouseError):
    """ClickHouse answered with an exception; ``code`` is ClickHouse's error code."""


class ReadOnlyClientError(WarehouseError):
    """Writes go through the owner (chdb) or the server (driver), never over HTTP."""


class UnavailableError(WarehouseError):
    """The warehouse cannot be reached (server down, store locked by another process)."""


def error_code(message: str) -> int | None:
    """ClickHouse's numeric code from an exception text (``Code: 62. DB::Exception``)."""
    match = _CODE.search(message)
    return int(match.group(1)) if match else None


# --- the protocol -------------------------------------------------------------------------


@runtime_checkable
class WarehouseClient(Protocol):
    """What queries, the loader and migrations need from a warehouse connection."""

    def query(self, sql: str, params: Params = None) -> list[dict[str, Any]]:
        """Rows as dicts with Python values (datetimes are UTC-aware)."""
        ...

    def query_df(self, sql: str, params: Params = None) -> pd.DataFrame:
        """The result as a DataFrame (nullable integer columns stay integers)."""
        ...

    def command(self, sql: str, params: Params = None) -> None:
        """A statement without a result (DDL, INSERT ... SELECT)."""
        ...

    def insert_rows(self, table: str, rows: Sequence[Mapping[str, Any]],
                    dedup_token: str | None = None) -> None:
        """Insert rows (dicts keyed by column); a repeated ``dedup_token`` adds nothing."""
        ...

    def close(self) -> None: ...


# --- shared helpers ---------------------------------------------------------------------


def quote_identifier(name: str) -> str:
    """``name`` if it is a plain (optionally db-qualified) identifier, else ValueError."""
    if not _IDENTIFIER.match(name):
        raise ValueError(f"not a plain identifier: {name!r}")
    return name


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_datetime(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"cannot store {type(value).__name__} in the warehouse")


def rows_to_json_each_row(rows: Sequence[Mapping[str, Any]]) -> str:
    """Rows as JSONEachRow text (one object a line, datetimes as DateTime64 text).
    orjson: the stdlib encoder was a quarter of the loader's CPU
    (``bench/loader_throughput.py --profile``)."""
    dumps, default = orjson.dumps, _json_default
    return b"\n".join(dumps(r if type(r) is dict else dict(r), default=default,
                             option=orjson.OPT_PASSTHROUGH_DATETIME)
                       for r in rows).decode()


def _columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    columns = list(rows[0])
    for row in rows:
        if list(row) != columns:
            raise ValueError("insert_rows: every row must have the same columns in one order")
    return [quote_identifier(c) for c in columns]


def _arrow_table(data: bytes) -> pa.Table:
    if not data:
        return pa.table({})
    return pa.ipc.open_stream(data).read_all()


_PANDAS_INTS = {
    pa.int8(): pd.Int8Dtype(), pa.int16(): pd.Int16Dtype(), pa.int32(): pd.Int32Dtype(),
    pa.int64(): pd.Int64Dtype(), pa.uint8(): pd.UInt8Dtype(), pa.uint16(): pd.UInt16Dtype(),
    pa.uint32(): pd.UInt32Dtype(), pa.uint64(): pd.UInt64Dtype(),
}


def arrow_to_records(data: bytes) -> list[dict[str, Any]]:
    """Decode an ArrowStream result into a list of dicts."""
    return _arrow_table(data).to_pylist()


def arrow_to_frame(data: bytes) -> pd.DataFrame:
    """Decode an ArrowStream result into a DataFrame (nullable ints as ``Int64`` etc.)."""
    return _arrow_table(data).to_pandas(types_mapper=_PANDAS_INTS.get)


# --- chdb (the owner) -------------------------------------------------------------------------


class ChdbClient:
    """The in-process chdb store at ``path``; only the owning process may open it.

    Usage::

        client = ChdbClient(settings.chdb_path)                  # owner: read/write
        reader = ChdbClient(settings.chdb_path, read_only=True,  # same process, refuses writes
                            database="tawag", settings={"max_execution_time": 30})

    One lock serialises the session: ClickHouse sessions keep per-session state (current
    database, settings) that must not interleave between threads.
    """

    def __init__(self, path: str | Path, *, read_only: bool = False,
                 database: str | None = None,
                 settings: Mapping[str, int | float | str] | None = None) -> None:
        from chdb.session import Session

        Path(path).mkdir(parents=True, exist_ok=True)
        self.read_only = read_only
        self._lock = threading.Lock()
        self._types: dict[str, dict[str, str]] = {}
        try:
            self._session = Session(f"{path}?mode=ro" if read_only else str(path))
        except Exception as exc:  # chdb raises bare RuntimeErrors
            raise UnavailableError(
                f"cannot open the chdb store at {path}: {exc} (is another process the "
                "owner? other processes must use the owner's HTTP interface)") from exc
        for name, value in (settings or {}).items():
            self._apply_setting(name, value)
        if database:
            self.execute(f"USE {quote_identifier(database)}", "TSV")

    def _apply_setting(self, name: str, value: int | float | str) -> None:
        if not isinstance(value, int | float):
            raise ValueError(f"setting {name}: only numeric session settings are supported")
        self.execute(f"SET {quote_identifier(name)} = {value!r}", "TSV")

    def execute(self, sql: str, fmt: str, params: Mapping[str, str] | None = None) -> bytes:
        """Run one statement and return the result bytes in ClickHouse format ``fmt``.

        ``params`` are already in ClickHouse's escaped text form (as on the HTTP interface);
        this is the seam the HTTP server uses.
        """
        with self._lock:
            try:
                result = self._session.query(sql, fmt, params=dict(params or {}))
            except Exception as exc:
                message = str(exc)
                raise QueryError(message, error_code(message)) from exc
        return result.bytes() if result is not None else b""

    def query(self, sql: str, params: Params = None) -> list[dict[str, Any]]:
        return arrow_to_records(self.execute(sql, ARROW_FORMAT, encode_params(params)))

    def query_df(self, sql: str, params: Params = None) -> pd.DataFrame:
        return arrow_to_frame(self.execute(sql, ARROW_FORMAT, encode_params(params)))

    def command(self, sql: str, params: Params = None) -> None:
        self.execute(sql, "TSV", encode_params(params))

    def insert_rows(self, table: str, rows: Sequence[Mapping[str, Any]],
                    dedup_token: str | None = None) -> None:
        """INSERT ... SELECT FROM format(JSONEachRow, structure, rows): the data is a bound
        parameter too, parsed with the table's own column types (no schema inference)."""
        if not rows:
            return
        columns = _columns(rows)
        params: dict[str, Any] = {"structure": self._structure(table, columns),
                                  "rows": rows_to_json_each_row(rows)}
        settings = ""
        if dedup_token is not None:
            settings = "SETTINGS insert_deduplication_token = {dedup_token:String} "
            params["dedup_token"] = dedup_token
        self.command(f"INSERT INTO {quote_identifier(table)} ({', '.join(columns)}) "
                     f"{settings}SELECT * FROM format(JSONEachRow, {{structure:String}}, "
                     "{rows:String})", params)

    def _structure(self, table: str, columns: Sequence[str]) -> str:
        """``name Type, ...`` of ``columns`` as declared in ``table`` (cached per table)."""
        if table not in self._types:
            database, _, name = quote_identifier(table).rpartition(".")
            rows = self.query("SELECT name, type FROM system.columns WHERE database = "
                              "{db:String} AND table = {table:String}",
                              {"db": database or "default", "table": name})
            self._types[table] = {r["name"]: r["type"] for r in rows}
        types = self._types[table]
        unknown = [c for c in columns if c not in types]
        if unknown:
            raise QueryError(f"{table} has no column(s) {', '.join(unknown)}", 16)
        return ", ".join(f"{c} {types[c]}" for c in columns)

    def close(self) -> None:
        with self._lock:
            self._session.close()


# --- HTTP (everyone else in embedded mode, or a ClickHouse server's port 8123) ----------------


class HttpClient:
    """Read-only client of a ClickHouse HTTP interface (ours, or a server's port 8123).

    Usage::

        client = HttpClient("http://127.0.0.1:18123/")
        df = client.query_df("SELECT * FROM tawag.cdrs FINAL WHERE tenant = {t:String}",
                             {"t": "acme"})

    Parameters go as ``param_<name>`` URL arguments; the result comes back as ArrowStream.
    ``user``/``password`` go as HTTP basic auth; ``args`` are more URL arguments sent with
    every statement (e.g. ``max_execution_time``, or ``tawag_tenant`` to narrow an
    administrator to one tenant; see :mod:`warehouse.http_server`).
    Pass ``transport=httpx.MockTransport(handler)`` in tests.
    """

    def __init__(self, url: str, *, timeout: float = 60.0, user: str | None = None,
                 password: str | None = None,
                 transport: httpx.BaseTransport | None = None,
                 args: Mapping[str, str | int] | None = None) -> None:
        auth = (user, password or "") if user else None
        self._http = httpx.Client(base_url=url, timeout=timeout, auth=auth,
                                  transport=transport)
        self._args = {k: str(v) for k, v in (args or {}).items()}

    def with_args(self, **args: str | int) -> HttpClient:
        """A client on the same connection whose statements carry ``args`` too."""
        other = object.__new__(HttpClient)
        other._http = self._http
        other._args = {**self._args, **{k: str(v) for k, v in args.items()}}
        return other

    def execute(self, sql: str, fmt: str, params: Params = None) -> bytes:
        """POST one statement; the raw result bytes in ClickHouse format ``fmt``."""
        args = {**self._args, "default_format": fmt}
        args.update({f"param_{k}": v for k, v in encode_params(params).items()})
        try:
            resp = self._http.post("/", params=args, content=sql.encode())
        except httpx.HTTPError as exc:
            raise UnavailableError(f"warehouse at {self._http.base_url} not answering: "
                                   f"{exc}") from exc
        if resp.status_code != 200:
            message = resp.text.strip()
            code = resp.headers.get("X-ClickHouse-Exception-Code")
            raise QueryError(message, int(code) if code else error_code(message))
        return resp.content

    def query(self, sql: str, params: Params = None) -> list[dict[str, Any]]:
        return arrow_to_records(self.execute(sql, ARROW_FORMAT, params))

    def query_df(self, sql: str, params: Params = None) -> pd.DataFrame:
        return arrow_to_frame(self.execute(sql, ARROW_FORMAT, params))

    def command(self, sql: str, params: Params = None) -> None:
        raise ReadOnlyClientError("HttpClient is read-only: statements run in the owner")

    def insert_rows(self, table: str, rows: Sequence[Mapping[str, Any]],
                    dedup_token: str | None = None) -> None:
        raise ReadOnlyClientError("HttpClient is read-only: the loader writes in the owner")

    def close(self) -> None:
        self._http.close()


# --- native protocol (server mode) -----------------------------------------------------------


class DriverClient:
    """clickhouse-driver against a ClickHouse server (server mode: loader and readers).

    Parameters are sent server-side (``server_side_params``), so the server binds the
    same ``{name:Type}`` placeholders as chdb and the HTTP interface do.
    """

    def __init__(self, settings: Settings, *, reader: bool = False) -> None:
        from clickhouse_driver import Client

        user, password = ((settings.clickhouse_reader_user, settings.clickhouse_reader_password)
                          if reader else (settings.clickhouse_user, settings.clickhouse_password))
        self._client = Client(host=settings.clickhouse_host, port=settings.clickhouse_port,
                              user=user, password=password,
                              settings={"server_side_params": True})

    def _execute(self, sql: str, params: Params, **kwargs: Any) -> Any:
        from clickhouse_driver.errors import Error, NetworkError

        try:
            return self._client.execute(sql, encode_params(params) or None, **kwargs)
        except NetworkError as exc:
            raise UnavailableError(str(exc)) from exc
        except Error as exc:
            raise QueryError(str(exc), getattr(exc, "code", None)) from exc

    def query(self, sql: str, params: Params = None) -> list[dict[str, Any]]:
        rows, columns = self._execute(sql, params, with_column_types=True)
        names = [name for name, _ in columns]
        return [dict(zip(names, row, strict=True)) for row in rows]

    def query_df(self, sql: str, params: Params = None) -> pd.DataFrame:
        rows, columns = self._execute(sql, params, with_column_types=True)
        return pd.DataFrame(rows, columns=[name for name, _ in columns])

    def command(self, sql: str, params: Params = None) -> None:
        self._execute(sql, params)

    def insert_rows(self, table: str, rows: Sequence[Mapping[str, Any]],
                    dedup_token: str | None = None) -> None:
        if not rows:
            return
        from clickhouse_driver.errors import Error

        settings = {"insert_deduplication_token": dedup_token} if dedup_token else None
        sql = f"INSERT INTO {quote_identifier(table)} ({', '.join(_columns(rows))}) VALUES"
        try:
            self._client.execute(sql, [dict(r) for r in rows], settings=settings)
        except Error as exc:
            raise QueryError(str(exc), getattr(exc, "code", None)) from exc

    def close(self) -> None:
        self._client.disconnect()


def service_client(settings: Settings, **kwargs: Any) -> HttpClient:
    """The owner's HTTP interface as the project's service user (an administrator)."""
    from warehouse.users import SERVICE_USER, service_password

    return HttpClient(settings.warehouse_url, user=SERVICE_USER,
                      password=service_password(settings.data_dir), **kwargs)


def connect(settings: Settings) -> WarehouseClient:
    """The client for every process except the owner of the embedded store.

    ``embedded``: the owner's read-only HTTP interface at ``settings.warehouse_url``;
    ``server``: the ClickHouse server through clickhouse-driver, as the reader user
    (read-only profile; see :mod:`warehouse.server_access`), never the writer.
    """
    if settings.warehouse_mode == "embedded":
        return service_client(settings)
    if settings.warehouse_mode == "server":
        if not settings.clickhouse_reader_password:
            raise UnavailableError("server mode reads as TAWAG_CLICKHOUSE_READER_USER, whose "
                                   "password TAWAG_CLICKHOUSE_READER_PASSWORD is not set")
        return DriverClient(settings, reader=True)
    raise ValueError(f"warehouse_mode must be 'embedded' or 'server', "
                     f"got {settings.warehouse_mode!r}")
