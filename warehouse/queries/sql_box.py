"""The analysts' SQL box: run one read-only statement, confined to one tenant's rows.

The decision is :mod:`warehouse.guard`'s, on ClickHouse's own parse of the statement:
one SELECT over the analyst tables with allow-listed functions, no SETTINGS, FORMAT or
INTO OUTFILE anywhere; then the checked tree runs inside a wrapper whose SETTINGS the
server builds (``additional_table_filters`` for the tenant, the limits, ``readonly=1``).

Where it runs depends on the client:

* :class:`~warehouse.client.HttpClient` (the dashboards in embedded mode): the statement
  goes to the warehouse's HTTP interface with ``tawag_tenant=<tenant>`` (the dashboards'
  service user is an administrator narrowing itself to the logged-in user's tenant),
  ``limit`` and ``max_execution_time``; the HTTP interface parses, checks, scopes and runs
  it exactly as for any analyst (:mod:`warehouse.http_server`).
* any other client (the owner's ChdbClient, a ClickHouse server in server mode): the
  same parse and check here, then ``formatQueryFromJSON`` of the wrapped tree is run.

An administrator runs with ``tenant=None``: the same checks, no row filter.

Usage::

    result = run_statement(client, "SELECT count() FROM cdrs FINAL", tenant="acme")
    result.frame, result.truncated
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pandas as pd

from warehouse import guard
from warehouse.client import HttpClient, QueryError, WarehouseClient

__all__ = ["TENANT_TABLES", "NUMBER_FUNCTIONS", "DEFAULT_ROW_LIMIT", "DEFAULT_TIMEOUT_S",
           "SqlRefused", "SqlResult", "check_statement", "run_statement"]

TENANT_TABLES = guard.TABLES
"""The only tables the SQL box reads; each has a ``tenant`` column the filter uses."""

NUMBER_FUNCTIONS = guard.TABLE_FUNCTIONS
"""Table functions allowed: they generate numbers and read nothing."""

DEFAULT_ROW_LIMIT = 10_000
DEFAULT_TIMEOUT_S = 30

SqlRefused = guard.Refused
"""The statement is not allowed in the SQL box; the message says why (for the analyst)."""

_REFUSAL_CODES = (164, 497)  # READONLY, ACCESS_DENIED: the HTTP interface's refusals


@dataclass(frozen=True)
class SqlResult:
    """At most ``limit`` rows of the result; ``truncated`` if the statement returned more."""

    frame: pd.DataFrame
    truncated: bool
    limit: int


def check_statement(client: WarehouseClient, sql: str) -> guard.Checked:
    """ClickHouse's parse of ``sql`` (through ``client``), checked; or SqlRefused.

    ClickHouse's parser may also refuse it (a syntax error): that is a
    :class:`~warehouse.client.QueryError` with ClickHouse's message.
    """
    try:
        rows = client.query(guard.PARSE_SQL, {"q": sql})
    except QueryError as exc:
        refusal = guard.unparsable(exc.code)
        if refusal is not None:
            raise refusal from None
        raise
    return guard.check(json.loads(rows[0]["ast"]))


def _refusal(exc: QueryError) -> SqlRefused:
    message = str(exc).split("DB::Exception: ", 1)[-1]
    return SqlRefused(message.rsplit(". (", 1)[0])


def run_statement(client: WarehouseClient, sql: str, *, tenant: str | None,
                  limit: int = DEFAULT_ROW_LIMIT,
                  timeout_s: int = DEFAULT_TIMEOUT_S) -> SqlResult:
    """Check ``sql`` and run it on ``tenant``'s rows only (see the module docstring).

    ``tenant=None`` (administrators) reads every tenant. At most ``limit`` rows come
    back; the statement is stopped after ``timeout_s`` seconds (a QueryError, code 159).
    """
    if tenant is not None:
        guard.valid_tenant(tenant)
    if isinstance(client, HttpClient):
        args: dict[str, str | int] = {"limit": int(limit) + 1,
                                      "max_execution_time": int(timeout_s),
                                      "tawag_sql_box": 1}
        if tenant is not None:
            args["tawag_tenant"] = tenant
        try:
            frame = client.with_args(**args).query_df(sql)
        except QueryError as exc:
            if exc.code in _REFUSAL_CODES:
                raise _refusal(exc) from None
            raise
    else:
        checked = check_statement(client, sql)
        limits = guard.lowered_limits({"max_execution_time": int(timeout_s)})
        tree = guard.wrap(checked, tenant=tenant, limits=limits, row_limit=int(limit) + 1)
        text = client.query("SELECT formatQueryFromJSON({tree:String}) AS sql",
                            {"tree": guard.dumps(tree)})[0]["sql"]
        frame = client.query_df(text)
    truncated = len(frame) > limit
    return SqlResult(frame.head(limit).reset_index(drop=True), truncated, limit)
