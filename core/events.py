"""Event schema v1: the contract of the call-event log (topic ``tawag.call-events``).

Every producer writes, and every consumer reads, :class:`Event` through
:func:`to_json` / :func:`from_json`; nothing else in the code base knows the wire
shape. A message is one JSON object::

    {"schema": 1, "event_id": "9f0c...", "type": "call.answered", "tenant": "acme",
     "ts": "2026-11-26T07:01:02.345Z", "source": "kamailio@127.0.0.1",
     "call_id": "1-2345@127.0.0.1", "leg_id": "1-2345@127.0.0.1",
     "direction": "internal", "caller": "101", "callee": "102", "did": null,
     "agent": "102", "sip_code": 200, "reason": "OK", "hangup_by": null,
     "duration_ms": null, "media": null}

``call_id`` is the Tawag call: the same for every leg of a call (group ringing,
forwards, and the transferee's new dialog after a transfer); ``leg_id`` is one SIP
dialog (its SIP Call-ID) or one ringing branch of it (``<SIP Call-ID>#<branch>``).
Attribution (added to v1, additive): every leg event names the agent it concerns in
``agent``, so no consumer needs state of its own to attribute it - ``call.ringing``
(the member or extension that branch rings, also in ``extra.leg_to``), a leg's own
``call.failed`` / ``call.cancelled`` (``leg_id`` "<SIP Call-ID>#<branch>": the branch
was busy, not answered in time, or cancelled because another branch answered - a
failure of one leg, not of the call), ``call.answered`` and ``call.ended`` (who
answered). A call-level failure (``leg_id`` the call's own dialog) has no ``agent``;
its callee is the extension dialled. ``agent`` may be an outside number (a forward to
a mobile through the trunk); only extensions are agents. A call rung through a group
names it in ``extra.group`` on its offer, ringing, leg failures, answer and end;
``call.offered`` says where the PBX routed the call in ``extra.route_target``
(``ext:<user>``, ``group:<name>``, ``tel:<number>``, ``mask:<code>`` for a masked client).
``call.held`` / ``call.resumed`` (added to v1, additive): a party put the call on hold
with a re-INVITE (a=sendonly or a=inactive) or took it off hold; ``agent`` and
``extra.held_by`` name that party.
``call.ended``: ``reason`` is ``bye`` (``hangup_by`` is the party that sent it),
``max_duration`` (the edge ended the call at its maximum duration, BYE to both
parties; ``hangup_by`` is ``system``), ``local`` (ended over the edge's JSON-RPC,
``hangup_by`` null) or ``interrupted`` (added to v1, additive: the end was lost - the
edge no longer has the dialog after a restart, or the call outlived the maximum call
duration - and ingest's reconciler, ``ingest.reconcile``, closed it; ``ts`` is the last
time the call was known alive (its last event, or the reconciler's last sight of it on
the edge), ``hangup_by`` null, ``source`` ends in ``#reconciler``,
``extra.interrupted`` says why: ``edge_lost`` or ``max_age``, ``extra.detected_at`` when).
An interrupted call gets one such event per dialog still open (``agent`` who answered
there, if anyone) and, before them, a ``call.cancelled`` (same ``reason``, ``ts`` and
``extra``) of each leg still ringing (``leg_id`` the leg, ``agent`` its agent), so every
party is released; a real end arriving later does not reopen the call.
Reason ``recovered`` (added to v1, additive): the call's own ``call.ended`` never reached ingest,
but the edge still listed its answered dialog as ended (``dlg.list``): the reconciler closed it
at the edge's end time (whole seconds), ``hangup_by`` null, ``source`` ending in
``#reconciler``, ``extra.recovered`` ``edge_dialog_ended``; the CDR stays ``answered``.
``media`` of ``call.ended`` holds the RTP figures; when the edge has none,
``extra.media_missing`` (added to v1, additive) says why: ``unknown_call`` (rtpengine
no longer knew the call, e.g. one ended on the edge's timers) or ``no_rtp_stats``.

``route.decided`` (added to v1, additive): a routing rule beyond the dialled number's
own target decided where an inbound call goes (``leg_id`` the call's dialog, ``caller``
the client, ``callee``/``did`` the DID). ``extra``: ``rule`` (``blacklist``: refused
with 603; ``whitelist``: straight to the extension that lists the caller, skipping the
DID's group or queue; ``schedule``: out of the DID's hours; ``webhook``: the tenant's
NOTIFY_START receiver redirected, refused or named the caller, ``api.steering``;
``responsible_manager``: to the CRM client's responsible manager, available per the
streams' live agent state; ``responsible_manager_unavailable``: the manager is not
available, the DID's target at once; ``responsible_manager_fallback``: the manager did
not take the call, the DID's target after them; ``longest_idle``: the group member idle
the longest, one event per member tried; ``least_calls``: the available group member
with the fewest calls answered today in the tenant's zone, ties by idle the longest;
``round_robin``: the next available group member after the one rung last in the group;
``static_order``: a longest_idle, least_calls or round_robin group hunted in its
provisioned order, the live state being stale or showing nobody available;
``queue_wait``: nobody of a queue-enabled group is available, the caller waits (180);
``queue_offer``: the longest-waiting caller is offered the member idle the longest (the
target); ``queue_overflow``: to the group's overflow target, ``inputs`` ``reason=timeout``
(waited ``max_wait_s``), ``reason=full`` (``max_length`` callers were waiting) or
``reason=no_agent``; ``queue_abandon``: the caller hung up while waiting, a missed call),
``target`` (``ext:<user>``, ``refuse:<rule>``), ``default_target`` (where the DID, or the
group, alone would have sent it), ``decision_us`` (the edge's time deciding) and, when the
rule used live facts, ``inputs`` (added to v1, additive): what it saw, ``key=value`` pairs
joined by ``;`` (``manager=103;idle_since=<epoch s>``, ``reason=no_answer``,
``calls_today=2;idle_since=<epoch s>``, ``after=101;idle_since=<epoch s>``,
``live=stale``); queue rules add ``position`` (the caller's place when it entered the
queue, 1 = first; beyond ``max_length`` for ``reason=full``) and ``wait_ms`` (how long
it had waited then; added to v1, additive).
The DID's own routing stays in ``call.offered``'s ``route_target``. Keyed by the call.

Call events are keyed by ``call_id`` (one call's events stay ordered on one
partition); agent events by ``tenant:agent``. ``event_id`` is derived from the raw
source payload, so a repeated delivery carries the same id and is dropped downstream.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from enum import StrEnum
from functools import lru_cache
from typing import Any

__all__ = [
    "SCHEMA_VERSION",
    "EventType",
    "Direction",
    "Event",
    "InvalidEvent",
    "CALL_TYPES",
    "AGENT_TYPES",
    "CALL_KEYED",
    "to_json",
    "from_json",
    "from_dict",
    "format_ts",
    "parse_ts",
]

SCHEMA_VERSION = 1


class EventType(StrEnum):
    """Every event type of schema v1; consumers dispatch on these constants only."""

    CALL_OFFERED = "call.offered"
    CALL_RINGING = "call.ringing"
    CALL_ANSWERED = "call.answered"
    CALL_FAILED = "call.failed"
    CALL_CANCELLED = "call.cancelled"
    CALL_ENDED = "call.ended"
    CALL_TRANSFERRED = "call.transferred"
    CALL_FORWARDED = "call.forwarded"
    CALL_PICKED_UP = "call.picked_up"
    CALL_RECORDING_READY = "call.recording_ready"
    CALL_HELD = "call.held"
    CALL_RESUMED = "call.resumed"
    AGENT_REGISTERED = "agent.registered"
    AGENT_UNREGISTERED = "agent.unregistered"
    AGENT_AUTH_FAILED = "agent.auth_failed"
    AGENT_STATE_CHANGED = "agent.state_changed"
    ROUTE_DECIDED = "route.decided"


CALL_TYPES = frozenset(t for t in EventType if t.value.startswith("call."))
AGENT_TYPES = frozenset(t for t in EventType if t.value.startswith("agent."))
CALL_KEYED = CALL_TYPES | {EventType.ROUTE_DECIDED}
"""Keyed (and ordered) by the call: its own events and the routing decisions about it."""


class Direction(StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"
    INTERNAL = "internal"


class InvalidEvent(ValueError):
    """Input that is not a valid v1 event; the message says which field and why."""


@dataclass(frozen=True)
class Event:
    """One fact from the edge, in event time (``ts``, UTC, millisecond precision)."""

    event_id: str
    type: EventType
    tenant: str
    ts: datetime
    source: str
    call_id: str | None = None
    leg_id: str | None = None
    direction: Direction | None = None
    caller: str | None = None
    callee: str | None = None
    did: str | None = None
    agent: str | None = None
    sip_code: int | None = None
    reason: str | None = None
    hangup_by: str | None = None
    duration_ms: int | None = None
    media: dict[str, float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    schema: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def key(self) -> str:
        """Kafka message key: the call for call events, ``tenant:agent`` for agent events."""
        if self.type in CALL_KEYED:
            return self.call_id or ""
        return f"{self.tenant}:{self.agent}"

    def with_changes(self, **changes: Any) -> Event:
        return replace(self, **changes)


def format_ts(ts: datetime) -> str:
    """ISO-8601 UTC with milliseconds and a ``Z``, the only timestamp form on the wire."""
    if ts.tzinfo is UTC:
        return _format_utc(ts)
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@lru_cache(maxsize=1 << 16)
def _format_utc(ts: datetime) -> str:
    """A UTC time's text, remembered: the records repeat the same times (interval starts,
    event times). Only UTC ones: in a zone with a DST fold, two different instants
    compare (and hash) equal."""
    return ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_ts(raw: str) -> datetime:
    try:
        ts = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except (TypeError, ValueError, AttributeError) as exc:
        raise InvalidEvent(f"ts: not an ISO-8601 timestamp: {raw!r}") from exc
    if ts.tzinfo is None:
        raise InvalidEvent(f"ts: timestamp without a time zone: {raw!r}")
    return ts.astimezone(UTC)


def _validate(ev: Event) -> None:
    if ev.schema != SCHEMA_VERSION:
        raise InvalidEvent(f"schema: unsupported version {ev.schema!r}")
    if not ev.event_id:
        raise InvalidEvent("event_id: missing")
    if not ev.tenant:
        raise InvalidEvent("tenant: missing")
    if ev.ts.tzinfo is None:
        raise InvalidEvent("ts: must be timezone-aware (UTC)")
    if ev.type in CALL_KEYED and not ev.call_id:
        raise InvalidEvent(f"call_id: missing on {ev.type.value}")
    if ev.type in AGENT_TYPES and not ev.agent:
        raise InvalidEvent(f"agent: missing on {ev.type.value}")
    if ev.sip_code is not None and not 100 <= ev.sip_code <= 699:
        raise InvalidEvent(f"sip_code: out of range: {ev.sip_code}")


def to_dict(ev: Event) -> dict[str, Any]:
    """The event as JSON-native values (the wire object before it is dumped).

    Built field by field rather than with ``dataclasses.asdict``, whose deep copy was the
    largest cost of the folds (bench/README.md); ``media`` and ``extra`` are copied, so
    the dict can be changed without touching the frozen event.
    """
    out = {name: getattr(ev, name) for name in _FIELD_NAMES}
    out["type"] = ev.type.value
    out["direction"] = ev.direction.value if ev.direction else None
    out["ts"] = format_ts(ev.ts)
    out["media"] = None if ev.media is None else dict(ev.media)
    out["extra"] = _copy(ev.extra)
    return out


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_copy(v) for v in value]
    return value


def to_json(ev: Event) -> bytes:
    """The wire form: compact UTF-8 JSON with sorted keys (stable bytes for one event)."""
    return json.dumps(to_dict(ev), separators=(",", ":"), sort_keys=True,
                      ensure_ascii=False).encode()


_FIELD_NAMES = tuple(f.name for f in fields(Event))
_FIELDS = set(_FIELD_NAMES)
_INT_FIELDS = ("sip_code", "duration_ms", "schema")


def from_dict(data: Any) -> Event:
    """Validate a decoded JSON object as a v1 event, or raise :class:`InvalidEvent`."""
    if not isinstance(data, dict):
        raise InvalidEvent(f"event: expected a JSON object, got {type(data).__name__}")
    unknown = set(data) - _FIELDS
    if unknown:
        raise InvalidEvent(f"unknown fields: {', '.join(sorted(unknown))}")
    missing = {"event_id", "type", "tenant", "ts", "source"} - set(data)
    if missing:
        raise InvalidEvent(f"missing fields: {', '.join(sorted(missing))}")
    values = dict(data)
    try:
        values["type"] = EventType(data["type"])
    except ValueError as exc:
        raise InvalidEvent(f"type: unknown event type {data['type']!r}") from exc
    if data.get("direction") is not None:
        try:
            values["direction"] = Direction(data["direction"])
        except ValueError as exc:
            raise InvalidEvent(f"direction: unknown value {data['direction']!r}") from exc
    values["ts"] = parse_ts(data["ts"])
    for name in _INT_FIELDS:
        if values.get(name) is not None and not isinstance(values[name], int):
            raise InvalidEvent(f"{name}: expected an integer, got {values[name]!r}")
    if values.get("extra") is None:
        values["extra"] = {}
    return Event(**values)


def from_json(raw: bytes | str) -> Event:
    """Decode one wire message; any defect raises :class:`InvalidEvent` with the reason."""
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidEvent(f"not JSON: {exc}") from exc
    return from_dict(data)
