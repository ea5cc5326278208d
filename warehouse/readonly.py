"""Which SQL the warehouse's HTTP interface accepts: one read-only statement.

The HTTP interface serves dashboards and analysts from the process that also loads the
store, so it must never write, and must not reach outside the store. Two layers:

1. this module (pure, tested on its own) refuses, with a reason, anything that is not a
   single SELECT / WITH / SHOW / DESCRIBE / DESC / EXPLAIN / EXISTS statement, ``INTO
   OUTFILE``, and the table functions that read or write files, URLs or other servers;
2. the queries then run in a chdb session opened with ``mode=ro`` (ClickHouse
   ``readonly=2``), which refuses writes and DDL on its own.

The scan masks string literals, quoted identifiers and comments first, so a ``;`` or a
keyword inside ``'...'`` does not count.
"""

from __future__ import annotations

import re

__all__ = ["ALLOWED_STATEMENTS", "DENIED_TABLE_FUNCTIONS", "ReadOnlyViolation",
           "mask", "check_read_only", "trailing_format"]

ALLOWED_STATEMENTS = frozenset({"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN",
                                "EXISTS"})

DENIED_TABLE_FUNCTIONS = frozenset({
    "file", "filecluster", "url", "urlcluster", "s3", "s3cluster", "gcs", "oss", "cosn",
    "hdfs", "hdfscluster", "azureblobstorage", "azureblobstoragecluster", "remote",
    "remotesecure", "cluster", "clusterallreplicas", "mysql", "postgresql", "sqlite",
    "mongodb", "redis", "jdbc", "odbc", "executable", "python", "iceberg", "deltalake",
    "hudi", "input",
})
"""Table functions that touch files, the network, other programs or Python objects."""

_FUNCTION_CALL = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]*)\s*\(")
_FIRST_WORD = re.compile(r"^[\s(]*([A-Za-z_]+)")
_OUTFILE = re.compile(r"\bINTO\s+OUTFILE\b", re.IGNORECASE)
_FORMAT = re.compile(r"\bFORMAT\s+([A-Za-z][A-Za-z0-9_]*)\s*$", re.IGNORECASE)


class ReadOnlyViolation(ValueError):
    """The statement is not allowed on the read-only interface; the message says why."""


def _skip_quoted(sql: str, start: int, quote: str) -> int:
    """Index just past the literal opened at ``start`` (backslash and doubled quotes)."""
    i = start + 1
    while i < len(sql):
        if sql[i] == "\\":
            i += 2
            continue
        if sql[i] == quote:
            if i + 1 < len(sql) and sql[i + 1] == quote:
                i += 2
                continue
            return i + 1
        i += 1
    raise ReadOnlyViolation(f"unterminated {quote}-quoted literal")


def _comment_end(sql: str, i: int) -> int | None:
    """End of a comment starting at ``i`` (``--``, ``#``, ``/* */``), or None."""
    if sql.startswith("--", i) or sql[i] == "#":
        end = sql.find("\n", i)
        return len(sql) if end < 0 else end
    if sql.startswith("/*", i):
        end = sql.find("*/", i + 2)
        if end < 0:
            raise ReadOnlyViolation("unterminated /* comment")
        return end + 2
    return None


def mask(sql: str) -> str:
    """``sql`` with comments blanked to spaces, string literals to ``~`` runs and quoted
    identifiers to ``_`` runs (same length, so positions still match ``sql``).
    """
    out, i = [], 0
    while i < len(sql):
        ch = sql[i]
        comment_end = _comment_end(sql, i)
        if comment_end is not None:
            out.append(" " * (comment_end - i))
            i = comment_end
        elif ch in "'\"`":
            end = _skip_quoted(sql, i, ch)
            out.append(("~" if ch == "'" else "_") * (end - i))
            i = end
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def check_read_only(sql: str) -> str:
    """The statement without trailing ``;``, or :class:`ReadOnlyViolation` saying why."""
    masked = mask(sql).rstrip()
    while masked.endswith(";"):
        masked = masked[:-1].rstrip()
    if not masked.strip():
        raise ReadOnlyViolation("empty query")
    if ";" in masked:
        raise ReadOnlyViolation("multi-statement queries are not allowed")
    first = _FIRST_WORD.match(masked)
    keyword = first.group(1).upper() if first else masked.split()[0]
    if keyword not in ALLOWED_STATEMENTS:
        raise ReadOnlyViolation(f"{keyword} statements are not allowed, only "
                                f"{', '.join(sorted(ALLOWED_STATEMENTS))}")
    if _OUTFILE.search(masked):
        raise ReadOnlyViolation("INTO OUTFILE is not allowed")
    for match in _FUNCTION_CALL.finditer(masked):
        if match.group(1).lower() in DENIED_TABLE_FUNCTIONS:
            raise ReadOnlyViolation(f"table function {match.group(1)}() is not allowed")
    return sql[:len(masked)]


def trailing_format(sql: str) -> str | None:
    """The format named by a trailing ``FORMAT X`` clause, if the statement has one."""
    match = _FORMAT.search(mask(sql).rstrip().rstrip(";"))
    return match.group(1) if match else None
