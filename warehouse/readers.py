"""A small pool of read-only chdb sessions: the HTTP interface's readers.

One chdb session runs one query at a time, so a single reader made every tenant's
dashboard wait behind one heavy statement. chdb lets one process open several sessions
on the same store and runs them concurrently; :class:`ReaderPool` keeps ``size`` of them
(``mode=ro``, i.e. ClickHouse ``readonly=2``) and lends one per request. A statement
that runs ``max_execution_time`` holds one session, not the store.

Each session speaks ClickHouse's JSON-AST dialect (``dialect = 'clickhouse_json'``): it
runs the tree :mod:`warehouse.guard` checked and wrapped, not SQL text. Parsing is done
in the same session, by the constant tree of ``SELECT parseQueryToJSON({q:String})``.

Usage::

    pool = ReaderPool(settings.chdb_path, size=4)
    data, fmt = pool.run_statement("SELECT count() FROM cdrs", tenant="acme",
                                   fmt="TSV", allow_format=True)
"""

from __future__ import annotations

import json
import queue
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from warehouse import guard, schema
from warehouse.client import QueryError, UnavailableError, error_code, quote_identifier
from warehouse.params import encode_params

__all__ = ["ReaderPool", "DEFAULT_READERS"]

DEFAULT_READERS = 4
"""Sessions in the pool: concurrent statements (more wait for a free one)."""


class _Reader:
    def __init__(self, path: Path, database: str) -> None:
        from chdb.session import Session

        try:
            self.session = Session(f"{path}?mode=ro")
        except Exception as exc:  # chdb raises bare RuntimeErrors
            raise UnavailableError(f"cannot open the chdb store at {path}: {exc}") from exc
        self._raw(f"USE {quote_identifier(database)}")
        self.timezone = self._raw("SELECT timezone()", "TSVRaw").decode().strip()
        self.parse_tree = self._raw("SELECT parseQueryToJSON({q:String})", "TSVRaw",
                                    {"q": guard.PARSE_SQL}).decode().strip()
        self._raw("SET enable_json_ast_dialect = 1")
        self._raw("SET dialect = 'clickhouse_json'")

    def _raw(self, sql: str, fmt: str = "TSV", params: Mapping[str, Any] | None = None
             ) -> bytes:
        try:
            result = self.session.query(sql, fmt, params=encode_params(params or {}))
        except Exception as exc:
            message = str(exc)
            raise QueryError(message, error_code(message)) from exc
        return result.bytes() if result is not None else b""

    def parse(self, sql: str) -> dict[str, Any]:
        try:
            text = self._raw(self.parse_tree, "TSVRaw", {"q": sql}).decode().strip()
        except QueryError as exc:
            refusal = guard.unparsable(exc.code)
            if refusal is not None:
                raise refusal from None
            raise
        return json.loads(text)

    def run_tree(self, tree: Mapping[str, Any], fmt: str,
                 params: Mapping[str, str] | None,
                 stats: dict[str, int] | None = None) -> bytes:
        try:
            result = self.session.query(guard.dumps(tree), fmt, params=dict(params or {}))
        except Exception as exc:
            message = str(exc)
            raise QueryError(message, error_code(message)) from exc
        if result is None:
            return b""
        if stats is not None:
            stats.update(read_rows=result.storage_rows_read(),
                         read_bytes=result.storage_bytes_read(),
                         result_rows=result.rows_read(), result_bytes=result.size(),
                         elapsed_ns=int(result.elapsed() * 1e9))
        return result.bytes()

    def close(self) -> None:
        self.session.close()


class ReaderPool:
    """``size`` read-only sessions on the store at ``path``, lent one per statement."""

    def __init__(self, path: str | Path, *, size: int = DEFAULT_READERS,
                 database: str = schema.DATABASE) -> None:
        self._idle: queue.LifoQueue[_Reader] = queue.LifoQueue()
        self._all = [_Reader(Path(path), database) for _ in range(max(1, size))]
        for reader in self._all:
            self._idle.put(reader)
        self.timezone = self._all[0].timezone
        """The sessions' time zone (``X-ClickHouse-Timezone``: how clients read DateTime)."""

    @contextmanager
    def _reader(self) -> Iterator[_Reader]:
        reader = self._idle.get()
        try:
            yield reader
        finally:
            self._idle.put(reader)

    def run_statement(self, sql: str, *, tenant: str | None, fmt: str,
                      params: Mapping[str, str] | None = None, allow_format: bool = True,
                      limits: Mapping[str, int] = guard.DEFAULT_LIMITS,
                      row_limit: int | None = None, admin: bool = False,
                      stats: dict[str, int] | None = None) -> tuple[bytes, str]:
        """Parse, check, scope and run ``sql``: (result bytes, output format).

        ``tenant``: whose rows (None: every tenant's); ``admin``: the caller is an
        administrator (may also read :data:`guard.ADMIN_TABLES`). ``stats``, if given, is
        filled with ClickHouse's progress figures (read_rows, read_bytes, result_rows,
        result_bytes, elapsed_ns) for ``X-ClickHouse-Summary``.

        :class:`guard.Refused` if the statement is not allowed, :class:`QueryError` if
        ClickHouse refuses it (a syntax error, an unknown column, a limit).
        """
        with self._reader() as reader:
            checked = guard.check(reader.parse(sql), allow_format=allow_format,
                                  admin=admin and tenant is None)
            tree = guard.wrap(checked, tenant=tenant, limits=limits, row_limit=row_limit,
                              readonly=False)
            fmt = checked.output_format or fmt
            return reader.run_tree(tree, fmt, params, stats), fmt

    def execute(self, sql: str, fmt: str, params: Mapping[str, str] | None = None) -> bytes:
        """Run ``sql`` parsed but NOT checked nor scoped (the owner's own use and tests:
        the session itself still refuses writes)."""
        with self._reader() as reader:
            return reader.run_tree(reader.parse(sql), fmt, params)

    def close(self) -> None:
        for reader in self._all:
            reader.close()
