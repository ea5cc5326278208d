"""Age-based retention of the warehouse tables, as ClickHouse table TTLs.

Two settings decide how long rows are kept (0 = forever, the default):

* ``cdr_retention_days``: ``cdrs``, ``agent_stats`` and ``callbacks``, what managers
  read; the derived tables go with the CDRs they were folded from;
* ``call_events_retention_days``: ``call_events``, the raw audit log, kept apart because
  replay (``tawag replay``) rebuilds everything else from it.

ClickHouse drops expired rows when it merges parts (``OPTIMIZE ... FINAL`` forces that), so
retention costs no job of ours. The warehouse applies the TTLs at every start-up
(:func:`apply_retention`, from :mod:`warehouse.service`, embedded and server mode alike):
the wanted TTL is compared with the one in ``system.tables.engine_full`` and an ALTER is
issued only on a difference, because ``MODIFY TTL`` re-materialises the TTL over every
existing part -- a full rewrite of a large table at each restart otherwise.

Which column ages a row, and why: rows of a ReplacingMergeTree are *revisions*, and TTL
deletes each revision on its own. If the newest revision of a row expired before an
older one, FINAL would show the older, stale revision again. So the age column must
never decrease from one revision to the next:

* ``cdrs.last_event_ts``: the newest event folded so far (events are folded sorted by
  time), so it can only grow with ``version``. (``started_at``, the call's offer, no
  longer moves either, but a call's rows should outlive its last event, not its start.)
* ``agent_stats.interval_start``: in the sort key, the same for every revision.
* ``callbacks.last_missed_at``: only a newer missed call changes it, forwards. An item
  whose last missed call is older than the retention goes even when still open: the
  calls it points to are gone from ``cdrs`` by then.
* ``call_events.ts``: append-only, one row per event.

DDL takes no bound parameters, so the interval is formatted from an int validated by
:func:`validated_days`; column and table names come from this module and
:mod:`warehouse.schema` only.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass

from core.settings import Settings
from warehouse import schema
from warehouse.client import WarehouseClient

__all__ = ["MAX_RETENTION_DAYS", "TtlRule", "validated_days", "ttl_expression",
           "retention_rules", "ttl_statement", "retention_statements", "current_ttls",
           "apply_retention"]

log = logging.getLogger(__name__)

MAX_RETENTION_DAYS = 36_600
"""A hundred years: anything larger is a typo (or seconds), not a retention policy."""

_TTL_CLAUSE = re.compile(r"\bTTL (.+?)(?: SETTINGS |$)")
"""The table TTL inside ``engine_full`` (``... ORDER BY (...) TTL <expr> SETTINGS ...``)."""


@dataclass(frozen=True)
class TtlRule:
    """Keep rows of ``table`` for ``days`` after ``column`` (0: keep them forever)."""

    table: str
    column: str
    days: int


def validated_days(value: object, name: str) -> int:
    """``value`` as a day count fit for DDL text, or ValueError naming the setting.

    Only a real ``int`` in ``[0, MAX_RETENTION_DAYS]`` passes: it is formatted into the
    statement, so strings, floats and bools (an int subclass) are refused outright.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be a whole number of days, got {value!r}")
    if not 0 <= value <= MAX_RETENTION_DAYS:
        raise ValueError(f"{name} must be 0 (keep forever) to {MAX_RETENTION_DAYS}, "
                         f"got {value}")
    return value


def ttl_expression(column: str, days: int) -> str:
    """The TTL as ClickHouse prints it back in ``engine_full`` (so both compare equal).

    ``toDateTime`` because TTL needs a Date/DateTime on older servers (ours are DateTime64).
    """
    return f"toDateTime({column}) + toIntervalDay({validated_days(days, 'days'):d})"


def retention_rules(settings: Settings) -> tuple[TtlRule, ...]:
    """The TTL each table should have under ``settings`` (see the module docstring)."""
    cdr_days = validated_days(settings.cdr_retention_days, "cdr_retention_days")
    event_days = validated_days(settings.call_events_retention_days,
                                "call_events_retention_days")
    return (TtlRule(schema.CDRS, "last_event_ts", cdr_days),
            TtlRule(schema.AGENT_STATS, "interval_start", cdr_days),
            TtlRule(schema.CALLBACKS, "last_missed_at", cdr_days),
            TtlRule(schema.CALL_EVENTS, "ts", event_days))


def ttl_statement(rule: TtlRule, current: str | None) -> str | None:
    """The ALTER that brings ``rule.table`` from TTL ``current`` to the rule; None if none.

    ``REMOVE TTL`` fails on a table without one, so it is only issued when there is one.
    """
    if rule.days == 0:
        return None if current is None else f"ALTER TABLE {rule.table} REMOVE TTL"
    wanted = ttl_expression(rule.column, rule.days)
    return None if current == wanted else f"ALTER TABLE {rule.table} MODIFY TTL {wanted}"


def retention_statements(settings: Settings, current: Mapping[str, str | None]) -> list[str]:
    """Every ALTER needed, given each table's current TTL (``table -> expr or None``)."""
    statements = (ttl_statement(rule, current.get(rule.table))
                  for rule in retention_rules(settings))
    return [s for s in statements if s is not None]


def _ttl_of(engine_full: str) -> str | None:
    match = _TTL_CLAUSE.search(engine_full)
    return match.group(1).strip() if match else None


def current_ttls(client: WarehouseClient) -> dict[str, str | None]:
    """``tawag.<table> -> table TTL expression`` (None without one), from system.tables."""
    rows = client.query("SELECT name, engine_full FROM system.tables "
                        "WHERE database = {db:String}", {"db": schema.DATABASE})
    return {f"{schema.DATABASE}.{r['name']}": _ttl_of(r["engine_full"]) for r in rows}


def apply_retention(client: WarehouseClient, settings: Settings) -> list[str]:
    """Run the ALTERs the retention settings need (none when already in place).

    Returns the statements run, so the caller can log what changed.
    """
    statements = retention_statements(settings, current_ttls(client))
    for statement in statements:
        client.command(statement)
        log.info("warehouse retention: %s", statement)
    return statements
