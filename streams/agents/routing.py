"""Routing stages: agent states and CRM contacts -> routing facts (``tawag.routing``).

Two steps (run by :mod:`streams.runner`) and a heartbeat:

1. ``routing-agents`` reads ``tawag.agent-states`` (key ``tenant:agent``), keeps the
   agent's current fact in the ``routing-agents`` table (same key, co-partitioned) and
   sends it when it changed (:func:`streams.folds.routing.agent_fact`).
2. ``routing-contacts-router`` re-keys ``tawag.crm-contacts`` (key ``tenant:phone:crm``,
   one partition) by client (``tenant:phone``) into an internal repartition topic with
   the stack's partition count: Faust tables, the dead-letter count included, must have
   their source's partitions. A lookup it cannot read is skipped and logged there.
3. ``routing-contacts`` reads that, keeps every CRM's latest lookup per client in
   ``routing-contacts`` and sends the client's manager fact when it changed.
4. ``routing-calls`` reads ``tawag.agent-stats`` (key ``tenant:agent``), keeps the
   agent's calls-today fact in ``routing-calls`` (same key, co-partitioned) and sends it
   when the count of the tenant's current day changed
   (:func:`streams.folds.routing.calls_fact`; the day's end from the tenant's zone).
5. :func:`heartbeat_fact` every ``routing_heartbeat_s``: the edge trusts its live facts only
   while heartbeats come (``edge.live``), so a stopped worker makes the edge route on
   provisioning alone instead of on a picture that grows old.

A redelivered message folds to the same row and sends the same fact again (harmless: the
topic is compacted and the edge's write is idempotent).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from faust.types import CollectionT

from core.agent_records import AgentStateChange, AgentStats, IntervalKind, record_from_json
from core.routing import FactKind, RoutingFact, fact_from_json, fact_key, fact_to_json
from streams.folds.agent_intervals import interval_end
from streams.folds.agent_state import DEFAULT_CONFIG, AgentConfig
from streams.folds.routing import (
    agent_fact,
    calls_changed,
    calls_fact,
    manager_fact,
    remember_lookup,
)

if TYPE_CHECKING:
    from streams.topology import Output

__all__ = ["AGENTS_NAME", "CONTACTS_ROUTER_NAME", "CONTACTS_NAME", "CALLS_NAME",
           "agent_step", "contact_route_step", "contact_step", "calls_step",
           "heartbeat_fact"]

AGENTS_NAME = "routing-agents"
CONTACTS_ROUTER_NAME = "routing-contacts-router"
CONTACTS_NAME = "routing-contacts"
CALLS_NAME = "routing-calls"

log = logging.getLogger(__name__)


def agent_step(table: CollectionT, key: Any, value: Any) -> list[Output]:
    """routing-agents: the agent's fact, when this state revision changed it."""
    change = record_from_json(AgentStateChange, value)
    row_key = f"{change.tenant}:{change.agent}"
    row = table.get(row_key)
    new = agent_fact(fact_from_json(row) if row is not None else None, change)
    if new is None:
        return []
    raw = fact_to_json(new)
    table[row_key] = raw.decode()
    return [("routing", fact_key(new).encode(), raw)]


def contact_route_step(table: None, key: Any, value: Any) -> list[Output]:
    """routing-contacts-router: the lookup keyed ``tenant:phone`` ([] if unreadable)."""
    try:
        tenant, phone, _ = _lookup_names(json.loads(value))
    except (ValueError, TypeError, KeyError) as exc:
        log.warning("crm contact %r skipped: %s", key, exc)
        return []
    return [("contact_lookups", f"{tenant}:{phone}".encode(), value)]


def _lookup_names(record: Any) -> tuple[str, str, str]:
    names = record["tenant"], record["phone"], record["crm"]
    if not all(isinstance(n, str) and n for n in names):
        raise ValueError("crm contact: tenant, phone and crm must be strings")
    return names


def contact_step(table: CollectionT, key: Any, value: Any) -> list[Output]:
    """routing-contacts: the client's manager fact, when this lookup changed it."""
    record = json.loads(value)
    tenant, phone, crm = _lookup_names(record)
    row_key = f"{tenant}:{phone}"
    row = table.get(row_key) or {}
    lookups = {c: (ext, int(at)) for c, (ext, at) in row.get("lookups", {}).items()}
    old = manager_fact(tenant, phone, lookups) if lookups else None
    lookups = remember_lookup(lookups, crm, record.get("extension"),
                              round(float(record["ts"]) * 1000))
    new = manager_fact(tenant, phone, lookups)
    table[row_key] = {"lookups": {c: [ext, at] for c, (ext, at) in lookups.items()}}
    if old is not None and (old.value, old.source) == (new.value, new.source):
        return []
    return [("routing", fact_key(new).encode(), fact_to_json(new))]


def calls_step(table: CollectionT, key: Any, value: Any,
               config: AgentConfig = DEFAULT_CONFIG) -> list[Output]:
    """routing-calls: the agent's calls-today fact, when this stats row changed it."""
    row = record_from_json(AgentStats, value)
    if row.interval_kind is not IntervalKind.DAY:
        return []
    row_key = f"{row.tenant}:{row.agent}"
    current = table.get(row_key)
    day_end = interval_end((IntervalKind.DAY, row.interval_start), config.zone(row.tenant))
    old = fact_from_json(current) if current is not None else None
    new = calls_fact(old, row, day_end)
    if new is None:
        return []
    raw = fact_to_json(new)
    table[row_key] = raw.decode()
    return [("routing", fact_key(new).encode(), raw)] if calls_changed(old, new) else []


def heartbeat_fact(now: datetime | None = None) -> tuple[bytes, bytes]:
    """Key and value of one heartbeat (the only wall-clock time of the routing stages)."""
    fact = RoutingFact(FactKind.HEARTBEAT, "", "", None, now or datetime.now(UTC), 0)
    return fact_key(fact).encode(), fact_to_json(fact)
