"""The CDR record: what ``streams`` publishes to ``tawag.cdrs`` and the warehouse stores.

One CDR per call. Each meaningful change publishes a new revision with a higher
``version`` (the number of distinct events folded in so far), keyed by ``call_id``; the
warehouse keeps the highest version (ReplacingMergeTree on ``version``).

The participants of the call travel with it: the legs that rang (:class:`Leg`), the
forwards (:class:`Forward`) and transfers (:class:`Transfer`) on the way. Fields added
after the first release have defaults, so a revision written by an older worker still
reads (``cdr_from_json`` fills what is missing).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from core.codec import decode, encode

__all__ = ["Disposition", "LegOutcome", "Leg", "Forward", "Transfer", "Cdr",
           "cdr_to_json", "cdr_from_json"]


class Disposition(StrEnum):
    """How a call ended, from the caller's side (Asterisk/CGRateS vocabulary)."""

    IN_PROGRESS = "in_progress"
    ANSWERED = "answered"
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    CANCELLED = "cancelled"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    """The call's end was lost (the edge restarted mid-call, or the call outlived the
    maximum call duration): closed by ingest's reconciler at its last known event."""


class LegOutcome(StrEnum):
    """How one leg (one target rung) ended."""

    RINGING = "ringing"
    """Still ringing: the call has not reached a decision for this leg yet."""
    ANSWERED = "answered"
    CANCELLED = "cancelled"
    """Another leg answered, or the caller hung up, while this one rang."""
    NO_ANSWER = "no_answer"
    BUSY = "busy"
    FAILED = "failed"
    PICKED_UP = "picked_up"
    """Someone else took the call while this leg rang (call pickup)."""


@dataclass(frozen=True)
class Leg:
    """One target rung for the call: a group member, a forward's target, a transfer's."""

    leg_id: str
    target: str | None
    rang_from: datetime
    rang_until: datetime | None
    answered: bool
    outcome: LegOutcome


@dataclass(frozen=True)
class Forward:
    """The edge sent the call on: ``forwarded_from``/``to`` are ``kind:name`` targets."""

    at: datetime
    forwarded_from: str | None
    forwarded_to: str
    reason: str | None
    """no_answer, busy or unregistered."""
    hop: int | None


@dataclass(frozen=True)
class Transfer:
    """``transferred_from`` handed the call to ``transferred_to`` (blind or attended)."""

    at: datetime
    transferred_from: str | None
    transferred_to: str | None
    kind: str | None


@dataclass(frozen=True)
class Cdr:
    tenant: str
    call_id: str
    version: int
    direction: str | None
    caller: str | None
    callee: str | None
    did: str | None
    agent: str | None
    """Extension that handled the call: answered it, or placed it (outbound); if any."""
    started_at: datetime
    answered_at: datetime | None
    ended_at: datetime | None
    ring_ms: int
    """Time from offer to answer, or to the end for unanswered calls (the caller's wait)."""
    talk_ms: int
    disposition: Disposition
    sip_code: int | None
    reason: str | None
    hangup_by: str | None
    closed: bool
    recording: str | None
    mos: float | None
    packet_loss: float | None
    jitter_ms: float | None
    event_count: int
    last_event_ts: datetime
    legs: tuple[Leg, ...] = ()
    """Every target rung, by the time it started ringing."""
    forwards: tuple[Forward, ...] = ()
    transfers: tuple[Transfer, ...] = ()
    hold_ms: int = 0
    """Time on hold; 0 until the edge reports hold (re-INVITE sendonly) events."""
    recorded: bool = False
    recording_bytes: int | None = None
    recording_duration_ms: int | None = None
    rtp_packets: int | None = None
    rtp_bytes: int | None = None
    rtp_errors: int | None = None
    route_target: str | None = None
    """Where the PBX routed the call on its offer: ``ext:<user>``, ``group:<name>``,
    ``tel:<number>`` (through the trunk) or ``mask:<code>`` (``extra.route_target``)."""
    route_group: str | None = None
    """The group (queue) the call was routed to or rang through (``extra.group``): the
    "by group" of the KPIs; None for a call no group rang."""
    pdd_ms: int | None = None
    """Post-dial delay (RFC 6076 session request delay) of a call the PBX sent to the
    trunk: INVITE (the offer) to the first 18x or the answer, whichever came first;
    None for other calls, and while neither has come."""


def cdr_to_json(cdr: Cdr) -> bytes:
    """The CDR as wire JSON (:func:`core.codec.encode`)."""
    return encode(cdr)


def cdr_from_json(raw: bytes | str) -> Cdr:
    """Inverse of :func:`cdr_to_json`, validating every field against its declaration
    (ValueError saying which one is wrong); unknown keys are ignored."""
    return decode(Cdr, raw)
