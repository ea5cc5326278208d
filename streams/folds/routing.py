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

- an agent's calls today, from its ``tawag.agent-stats`` day rows (:func:`calls_fact`).

The hunt orders are the rules the edge applies at call time on the same facts:
:func:`idle_order` for a ``longest_idle`` group (route[HUNT_IDLE]),
:func:`least_calls_order` for ``least_calls`` (route[HUNT_LEAST]) and
:func:`round_robin_order` for ``round_robin`` (route[HUNT_RR]). Each rings only members
available now: an agent ringing elsewhere, on a call, in wrap-up or offline has no
``available`` fact.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from core.agent_records import AgentStateChange, AgentStats, AgentStatus, IntervalKind
from core.routing import FactKind, RoutingFact

__all__ = ["agent_fact", "remember_lookup", "manager_of", "manager_fact", "calls_fact",
           "calls_changed", "idle_order", "least_calls_order", "round_robin_order"]

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



def calls_fact(current: RoutingFact | None, row: AgentStats, day_end: datetime
               ) -> RoutingFact | None:
    """The agent's calls-today fact after this stats row (``day_end``: the end of the row's
    local day), or None when the row leaves it as it is: not a day row, an older day's or
    an older revision. A newer revision with the same count is a new fact too (so an older
    one arriving after it cannot win); whether the edge needs it is :func:`calls_changed`.

    "Calls" are the calls the agent **answered** that day (``AgentStats.answered``, counted
    where the call started to ring it), the way Asterisk's ``fewestcalls`` counts completed
    calls: a call rung but missed is no work done, and counting it would push a busy
    group's calls towards the agent who keeps not answering."""
    if row.interval_kind is not IntervalKind.DAY:
        return None
    if current is not None and current.since is not None:
        if row.interval_start < current.since:
            return None  # a late revision of a past day
        if row.interval_start == current.since and row.version < current.version:
            return None
    return RoutingFact(FactKind.CALLS, row.tenant, row.agent, str(row.answered),
                       row.interval_start, row.version, until=day_end)


def calls_changed(old: RoutingFact | None, new: RoutingFact) -> bool:
    """Whether the edge must hear of ``new``: its count or its day differs from ``old``."""
    return old is None or (old.value, old.since, old.until) != (new.value, new.since, new.until)


def least_calls_order(members: Iterable[str], available_since: Mapping[str, int],
                      calls_today: Mapping[str, int], now: int) -> list[str]:
    """Who a ``least_calls`` group rings, in order: the members available now, fewest
    calls today first (none known: 0), ties by idle the longest, then the group's order."""
    ranked = [(calls_today.get(m, 0), since, i, m) for i, m in enumerate(members)
              if (since := available_since.get(m)) is not None and since <= now]
    return [m for *_, m in sorted(ranked)]


def round_robin_order(members: Sequence[str], available_since: Mapping[str, int],
                      last: int, now: int) -> list[str]:
    """Who a ``round_robin`` group rings, in order: the members available now, starting
    after the one at position ``last`` (the member rung last; -1: none yet) and going
    round the group's order once (Asterisk's ``rrmemory``)."""
    n = len(members)
    start = (last + 1) % n if n and last >= 0 else 0
    turn = [members[(start + k) % n] for k in range(n)]
    return [m for m in turn
            if (since := available_since.get(m)) is not None and since <= now]
