"""The replay comparison's named queries: which rows of each table are compared, in
which order, and which columns are left out (``tawag replay``; see :mod:`tawag.replay`'s
docstring for why some versions depend on delivery)."""

from __future__ import annotations

from typing import Any

from warehouse import schema
from warehouse.client import WarehouseClient

__all__ = ["AS_READ", "COMPARED", "DELIVERY_VERSIONED", "NOT_COMPARED", "compared_rows"]

NOT_COMPARED = ("kafka_topic", "kafka_partition", "kafka_offset", "loaded_at")

COMPARED: dict[str, tuple[str, str]] = {
    # table -> (FROM clause, ORDER BY key)
    schema.CDRS: (f"{schema.CDRS} FINAL", "tenant, call_id"),
    schema.AGENT_STATES: (f"{schema.AGENT_STATES} FINAL", "tenant, agent, since"),
    schema.AGENT_STATS: (f"{schema.AGENT_STATS} FINAL",
                         "tenant, agent, interval_kind, interval_start"),
    schema.CALLBACKS: (f"{schema.CALLBACKS} FINAL", "tenant, client, item_id"),
    schema.CALL_EVENTS: (schema.CALL_EVENTS, "event_id, kafka_partition, kafka_offset"),
}
"""What :func:`compare` checks, row for row."""

DELIVERY_VERSIONED = frozenset({schema.AGENT_STATES, schema.AGENT_STATS, schema.CALLBACKS})
"""Tables whose ``version`` records the order events were delivered in (module docstring):
compared on every other column, retractions left out."""

_ACTIVITY = " + ".join(("logged_in_ms", "available_ms", "ringing_ms", "talk_ms", "wrap_up_ms",
                        "offered", "answered", "missed", "handled", "handled_talk_ms"))
AS_READ: dict[str, str] = {
    schema.AGENT_STATES: "WHERE NOT deleted",
    schema.CALLBACKS: "WHERE NOT deleted",
    schema.AGENT_STATS: f"WHERE {_ACTIVITY} > 0",
}
"""The rows readers use of the :data:`DELIVERY_VERSIONED` tables. A retraction (a segment
or item marked deleted, an interval sent back with all zeros - no real interval has all
zeros) undoes a revision that only some deliveries produce: a late event that removes a
segment or an interval's only activity does so only when another event came first. What
a retraction carries is that passing revision, so it is not compared; readers skip it."""


def compared_rows(client: WarehouseClient, table: str) -> list[dict[str, Any]]:
    """The rows of ``table`` that replay compares, every compared column, in key order."""
    source, order = COMPARED[table]
    except_ = ", ".join(c for c in NOT_COMPARED
                        if not (table == schema.CALL_EVENTS and c.startswith("kafka_")))
    where = AS_READ.get(table, "")
    return client.query(f"SELECT * EXCEPT ({except_}) FROM {source} {where} ORDER BY {order}")
