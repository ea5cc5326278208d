"""Routing decisions from the streams: pure folds, no I/O, no wall clock.

Two facts feed the edge (:mod:`core.routing`, applied by :mod:`edge.live`):

- an agent's current state, from its ``tawag.agent-states`` revisions
  (:func:`agent_fact`): the open segment (``until`` None) of the newest version is the
  agent's state now; a closed segment only ends one, its successor follows in the same
  batch (``agent_state.state_changes`` sends them in ``since`` order);
- a client's responsible manager, from ``tawag.crm-contacts`` lookups
  (:func:`remember_lookup`, :func:`manager_of`): per CRM the latest lookup, and of those
  the newest one that found an extension, so a manager changed in the CRM wins from its
  next lookup on, and one CRM not knowing the client does not erase what another knows.

:func:`idle_order` is the hunt order of a ``longest_idle`` group, the rule the edge's
route[HUNT_IDLE] applies at call time on the same facts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from core.agent_records import AgentStateChange, AgentStatus
from core.routing import FactKind, RoutingFact

__all__ = ["agent_fact", "remember_lookup", "manager_of", "manager_fact", "idle_order"]

Lookups = dict[str, tuple[str | None, int]]
"""CRM -> (extension of the client's manager or None, lookup time in epoch ms)."""


def agent_fact(current: RoutingFact | None, change: AgentStateChange) -> RoutingFact | None:
    """The agent's fact after ``change``, or None when the change leaves it as it is."""
    if current is not None and change.version < current.version:
        return None  # a redelivered older revision
    if change.deleted:
        if current is None or current.since != change.since:
            return None
        # the current segment was retracted and no newer open one came first: unknown
        # until the next revision, and unknown is never routed to
        return RoutingFact(FactKind.AGENT, change.tenant, change.agent,
                           AgentStatus.OFFLINE.value, change.since, change.version)
    if change.until is not None:
        return None
    if (current is not None and change.version == current.version
            and change.since < current.since):
        return None
    new = RoutingFact(FactKind.AGENT, change.tenant, change.agent, change.state.value,
                      change.since, change.version)
    return None if new == current else new


def remember_lookup(lookups: Mapping[str, tuple[str | None, int]], crm: str,
                    extension: str | None, at_ms: int) -> Lookups:
    """``lookups`` with this CRM's lookup, unless an even newer one of it is known."""
    known = lookups.get(crm)
    if known is not None and known[1] > at_ms:
        return dict(lookups)
    return {**lookups, crm: (extension or None, at_ms)}


def manager_of(lookups: Mapping[str, tuple[str | None, int]]) -> tuple[str | None, str, int]:
    """(extension, CRM, lookup time) of the newest lookup that found a manager;
    (None, "", newest lookup time) when none did."""
    found = [(at, crm, ext) for crm, (ext, at) in lookups.items() if ext]
    if not found:
        return None, "", max((at for _, at in lookups.values()), default=0)
    at, crm, ext = max(found)
    return ext, crm, at


def manager_fact(tenant: str, phone: str,
                 lookups: Mapping[str, tuple[str | None, int]]) -> RoutingFact:
    """The client's manager fact from every CRM's latest lookup."""
    ext, crm, at = manager_of(lookups)
    return RoutingFact(FactKind.MANAGER, tenant, phone, ext, None, at, crm)


def idle_order(members: Iterable[str], available_since: Mapping[str, int],
               now: int) -> list[str]:
    """Who a ``longest_idle`` group rings, in order: the members available now (idle
    since at or before ``now``), idle the longest first, ties in the group's order."""
    ranked = [(since, i, m) for i, m in enumerate(members)
              if (since := available_since.get(m)) is not None and since <= now]
    return [m for _, _, m in sorted(ranked)]

