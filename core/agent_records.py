"""Records the agent and callback processors publish (``tawag.agent-states``,
``tawag.agent-stats``, ``tawag.callbacks``) and the warehouse stores.

Each record is a *revision* of one warehouse row: the row's key is named per type and
``version`` grows with every revision of the same key (the warehouse keeps the highest,
ReplacingMergeTree on ``version``). ``deleted`` marks a revision that retracts a row a
late event made wrong (a state segment that no longer exists, a callback item that
merged into an earlier one); readers skip deleted rows after FINAL.

    raw = record_to_json(AgentStateChange(...))
    change = record_from_json(AgentStateChange, raw)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TypeVar

from core.codec import decode, encode

__all__ = [
    "AgentStatus",
    "IntervalKind",
    "CallbackStatus",
    "AgentStateChange",
    "AgentStats",
    "CallbackItem",
    "record_to_json",
    "record_from_json",
]


class AgentStatus(StrEnum):
    """What an agent (an extension) is doing, highest priority last."""

    OFFLINE = "offline"
    AVAILABLE = "available"
    WRAP_UP = "wrap_up"
    RINGING = "ringing"
    ON_CALL = "on_call"


class IntervalKind(StrEnum):
    """Statistics intervals; each is aligned on UTC boundaries (00, 15, 30, 45 minutes...)."""

    QUARTER = "15m"
    HOUR = "hour"
    DAY = "day"


class CallbackStatus(StrEnum):
    OPEN = "open"
    CLOSED = "closed"


@dataclass(frozen=True)
class AgentStateChange:
    """One state segment of an agent's timeline; row key (tenant, agent, since)."""

    tenant: str
    agent: str
    since: datetime
    state: AgentStatus
    until: datetime | None
    """None while the segment is the agent's current state."""
    version: int
    deleted: bool = False


@dataclass(frozen=True)
class AgentStats:
    """One agent's numbers in one interval; row key (tenant, agent, interval_kind, interval_start).

    Durations are the agent's time in each state inside the interval (a state crossing a
    boundary is split). Counts are attributed to the interval where the call started to
    ring the agent (offered/answered/missed) or where its talk ended (handled).
    """

    tenant: str
    agent: str
    interval_kind: IntervalKind
    interval_start: datetime
    version: int
    logged_in_ms: int
    available_ms: int
    ringing_ms: int
    talk_ms: int
    wrap_up_ms: int
    offered: int
    answered: int
    missed: int
    handled: int
    handled_talk_ms: int
    aht_talk_ms: float | None
    """AHT, talk-only variant: handled_talk_ms / handled (no hold, no after-call work)."""
    occupancy: float | None
    """Connect variant: handle / (handle + idle); handle = talk + wrap-up, idle = available."""
    complete_until: datetime
    """The agent's newest event time when computed: a current state counts up to here."""


@dataclass(frozen=True)
class CallbackItem:
    """A client who called in and was not answered; row key (tenant, client, item_id)."""

    tenant: str
    client: str
    item_id: str
    """The call id of the first missed call of the item."""
    version: int
    status: CallbackStatus
    opened_at: datetime
    last_missed_at: datetime
    attempts: int
    """Missed inbound calls from the client while the item was open (>= 1)."""
    callback_attempts: int
    """Outbound calls to the client that were not answered while the item was open."""
    closed_at: datetime | None
    closed_by_call_id: str | None
    called_back_by: str | None
    """Extension that reached the client: the answering agent, or the caller of an outbound call."""
    callback_direction: str | None
    time_to_callback_ms: int | None
    """closed_at - opened_at: from the first missed call to the answer of the closing call."""
    deleted: bool = False
    night: bool = False
    """The first missed call came outside business hours, in the tenant's time zone."""
    weekend: bool = False
    """The first missed call came on a non-working day, in the tenant's time zone."""
    time_zone: str = "UTC"
    """The IANA zone the flags were computed in (the tenant's, from provisioning)."""


R = TypeVar("R", AgentStateChange, AgentStats, CallbackItem)

def record_to_json(record: AgentStateChange | AgentStats | CallbackItem) -> bytes:
    """The record as wire JSON (:func:`core.codec.encode`)."""
    return encode(record)


def record_from_json(kind: type[R], raw: bytes | str) -> R:
    """Inverse of :func:`record_to_json`, validating: every field present with its declared
    type (enums and timestamps included), unknown keys ignored; ValueError saying which
    field is wrong otherwise."""
    return decode(kind, raw)
