"""Routing facts: what the stream processors tell the edge (``tawag.routing``).

A fact is a small record keyed by what it is about (:func:`fact_key`), so the compacted
topic keeps the latest fact per agent and per client, and a restarted edge applier reads
the whole current routing picture from offset 0::

    raw = encode(RoutingFact(FactKind.AGENT, "acme", "101", "available", since, 12))
    fact = decode(RoutingFact, raw)

- ``agent``: ``subject`` the extension, ``value`` its :class:`core.agent_records.AgentStatus`
  (``available`` is the only state routing sends calls to), ``since`` when that state
  began (for ``available``: since when the agent is idle, possibly just ahead after a
  wrap-up), ``version`` the agent-state record's version.
- ``manager``: ``subject`` the client's number (E.164), ``value`` the extension of the
  client's responsible manager (None: no known manager), ``source`` the CRM it came from,
  ``version`` the lookup's time in epoch ms.
- ``calls``: ``subject`` the extension, ``value`` how many calls it answered today in the
  tenant's zone (the agent-stats ``day`` row's ``answered``), ``since``/``until`` that
  local day's start and end (23 or 25 h around a DST change), ``version`` the stats row's
  version. The edge counts 0 once ``until`` has passed (a new day with no call yet sends
  no row). A ``least_calls`` group rings the available member with the fewest.
- ``heartbeat``: the stream worker is alive; ``since`` when it was sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from core.codec import decode, encode

__all__ = ["FactKind", "RoutingFact", "fact_key", "fact_to_json", "fact_from_json",
           "HEARTBEAT_KEY"]


class FactKind(StrEnum):
    AGENT = "agent"
    MANAGER = "manager"
    CALLS = "calls"
    HEARTBEAT = "heartbeat"


HEARTBEAT_KEY = "heartbeat"


@dataclass(frozen=True)
class RoutingFact:
    """One thing routing knows (module docstring); row key :func:`fact_key`."""

    kind: FactKind
    tenant: str
    subject: str
    value: str | None
    since: datetime | None
    version: int
    source: str = ""
    until: datetime | None = None
    """``calls`` only: the end of the day the count is for."""


def fact_key(fact: RoutingFact) -> str:
    """``agent:<tenant>:<ext>``, ``manager:<tenant>:<phone>``, ``calls:<tenant>:<ext>``
    or ``heartbeat``."""
    if fact.kind is FactKind.HEARTBEAT:
        return HEARTBEAT_KEY
    return f"{fact.kind.value}:{fact.tenant}:{fact.subject}"


def fact_to_json(fact: RoutingFact) -> bytes:
    return encode(fact)


def fact_from_json(raw: bytes | str) -> RoutingFact:
    """Validating decode (ValueError naming the wrong field)."""
    return decode(RoutingFact, raw)
