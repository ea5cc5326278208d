"""The analysts' SQL box: run one read-only statement, confined to one tenant's rows.

Three layers, each enough to stop a different kind of escape::

    1. text      warehouse.readonly (one SELECT/WITH..., no file/url/remote functions),
                 then: SELECT or WITH only, no SETTINGS and no FORMAT clause (a SETTINGS
                 clause in a subquery would override the tenant filter of layer 3)
    2. syntax    ClickHouse's own parser (EXPLAIN AST: parses, evaluates nothing): every
                 table read is one of TENANT_TABLES (system.*, information_schema and
                 other databases refused), no table function but NUMBER_FUNCTIONS (merge(),
                 view(), loop() ... could read a table around the filter), no dictGet /
                 joinGet, no ``x IN table`` (write ``IN (SELECT ...)``)
    3. rows      the statement runs as a subquery with
                 SETTINGS additional_table_filters = {'tawag.cdrs': 'tenant = ''acme''', ...}
                 for every tenant table under both its qualified and bare name: ClickHouse
                 adds the filter to every read of the table (joins, UNION, CTEs,
                 scalar subqueries, FINAL), so ``WHERE 1 OR tenant = 'b'`` sees acme only

The statement is wrapped as ``SELECT * FROM (<statement>) LIMIT n+1`` on lines of its
own (a trailing ``--`` comment cannot swallow the wrapper), with ``max_execution_time``.
An administrator runs with ``tenant=None``: layers 1-2 still apply, no row filter.

Usage::

    result = run_statement(client, "SELECT count() FROM cdrs FINAL", tenant="acme")
    result.frame, result.truncated
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd

from warehouse.client import WarehouseClient
from warehouse.readonly import ReadOnlyViolation, check_read_only, mask, trailing_format
from warehouse.schema import AGENT_STATES, AGENT_STATS, CALL_EVENTS, CALLBACKS, CDRS

__all__ = ["TENANT_TABLES", "NUMBER_FUNCTIONS", "DEFAULT_ROW_LIMIT", "DEFAULT_TIMEOUT_S",
           "SqlRefused", "SqlResult", "check_statement", "run_statement"]

TENANT_TABLES = (CDRS, CALL_EVENTS, AGENT_STATES, AGENT_STATS, CALLBACKS)
"""The only tables the SQL box reads; each has a ``tenant`` column the filter uses."""

NUMBER_FUNCTIONS = frozenset({"numbers", "zeros", "generate_series", "generateseries"})
"""Table functions allowed: they generate numbers and read nothing."""

DEFAULT_ROW_LIMIT = 10_000
DEFAULT_TIMEOUT_S = 30

_TENANT = re.compile(r"^[A-Za-z0-9_.@-]+$")
_FIRST_WORD = re.compile(r"^[\s(]*([A-Za-z_]+)")
_SETTINGS = re.compile(r"\bSETTINGS\b", re.IGNORECASE)
_IN_FUNCTIONS = frozenset({"in", "notin", "globalin", "globalnotin", "nullin", "notnullin",
                           "globalnullin", "globalnotnullin"})
_BARE_NAMES = {t.split(".", 1)[1]: t for t in TENANT_TABLES}
_TAWAG_OTHER = frozenset({"schema_migrations"})


class SqlRefused(ValueError):
    """The statement is not allowed in the SQL box; the message says why (for the analyst)."""


@dataclass(frozen=True)
class SqlResult:
    """At most ``limit`` rows of the result; ``truncated`` if the statement returned more."""

    frame: pd.DataFrame
    truncated: bool
    limit: int


@dataclass
class _Node:
    text: str
    children: list[_Node]

    @property
    def kind(self) -> str:
        return self.text.split(" ", 1)[0]

    @property
    def name(self) -> str:
        """The node's name without ``(alias x)`` / ``(children n)`` and backquotes."""
        rest = self.text.split(" ", 1)[1] if " " in self.text else ""
        return re.sub(r"\s*\(.*$", "", rest).replace("`", "")


def _ast(lines: list[str]) -> _Node:
    """The EXPLAIN AST lines (one space of indent per level) as a tree."""
    root = _Node("Root", [])
    stack: list[tuple[int, _Node]] = [(-1, root)]
    for line in lines:
        depth = len(line) - len(line.lstrip(" "))
        node = _Node(line.strip(), [])
        while stack[-1][0] >= depth:
            stack.pop()
        stack[-1][1].children.append(node)
        stack.append((depth, node))
    return root


def _check_table(name: str) -> None:
    if "." in name:
        if name not in TENANT_TABLES:
            raise SqlRefused(f"table {name} is not available here; tables: "
                             f"{', '.join(TENANT_TABLES)}")
    elif name in _TAWAG_OTHER:
        raise SqlRefused(f"table {name} is not available here")


def _check_node(node: _Node, parent: _Node | None) -> None:
    kind, name = node.kind, node.name
    if kind == "TableIdentifier":
        _check_table(name)
    elif kind == "Function":
        lower = name.lower()
        if parent is not None and parent.kind == "TableExpression" \
                and lower not in NUMBER_FUNCTIONS:
            raise SqlRefused(f"table function {name}() is not allowed: read the tables "
                             "by name (numbers() and zeros() are allowed)")
        if lower.startswith(("dict", "joinget")):
            raise SqlRefused(f"function {name}() is not allowed (it reads outside the "
                             "tenant's tables)")
        if lower in _IN_FUNCTIONS and node.children:
            args = node.children[0].children
            if len(args) == 2 and args[1].kind == "Identifier":
                raise SqlRefused(f"`IN {args[1].name}` is not allowed: write "
                                 "`IN (SELECT column FROM table)`")
    for child in node.children:
        _check_node(child, node)


def _check_text(sql: str) -> str:
    """Layer 1: the statement (trailing ``;`` and comments dropped) or SqlRefused."""
    try:
        statement = check_read_only(sql)
    except ReadOnlyViolation as exc:
        raise SqlRefused(f"refused: {exc}") from None
    masked = mask(statement)
    first = _FIRST_WORD.match(masked)
    if not first or first.group(1).upper() not in ("SELECT", "WITH"):
        raise SqlRefused("refused: only SELECT (or WITH ... SELECT) statements run here")
    if _SETTINGS.search(masked):
        raise SqlRefused("refused: a SETTINGS clause is not allowed here (the box sets "
                         "the limits)")
    if trailing_format(statement):
        raise SqlRefused("refused: a FORMAT clause is not allowed (use the CSV download)")
    return statement


def check_statement(client: WarehouseClient, sql: str) -> str:
    """Layers 1 and 2: the statement to run, or :class:`SqlRefused` saying why.

    ClickHouse's parser may also refuse it (a syntax error): that is a
    :class:`~warehouse.client.QueryError` with ClickHouse's message.
    """
    statement = _check_text(sql)
    lines = client.query_df(f"EXPLAIN AST\n{statement}\n")["explain"].tolist()
    _check_node(_ast([str(line) for line in lines]), None)
    return statement


def _tenant_filters(tenant: str) -> str:
    """``additional_table_filters = {...}`` for every tenant table, qualified and bare."""
    if not _TENANT.match(tenant):
        raise ValueError(f"not a tenant name: {tenant!r}")
    condition = f"tenant = ''{tenant}''"
    pairs = [f"'{name}': '{condition}'" for table in TENANT_TABLES
             for name in (table, table.split(".", 1)[1])]
    return "additional_table_filters = {" + ", ".join(pairs) + "}"


def run_statement(client: WarehouseClient, sql: str, *, tenant: str | None,
                  limit: int = DEFAULT_ROW_LIMIT,
                  timeout_s: int = DEFAULT_TIMEOUT_S) -> SqlResult:
    """Check ``sql`` (:func:`check_statement`) and run it on ``tenant``'s rows only.

    ``tenant=None`` (administrators) reads every tenant. At most ``limit`` rows come
    back; the statement is stopped after ``timeout_s`` seconds (a QueryError, code 159).
    """
    statement = check_statement(client, sql)
    settings = [f"max_execution_time = {int(timeout_s)}"]
    if tenant is not None:
        settings.insert(0, _tenant_filters(tenant))
    wrapped = (f"SELECT * FROM (\n{statement}\n)\nLIMIT {int(limit) + 1}\n"
               f"SETTINGS {', '.join(settings)}\n")
    frame = client.query_df(wrapped)
    truncated = len(frame) > limit
    return SqlResult(frame.head(limit).reset_index(drop=True), truncated, limit)
