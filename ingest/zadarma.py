"""Zadarma's PBX notifications -> schema v1 events: a Zadarma account as a call source.

Pure: no sockets, no clock (the receiver passes the time it received the notification).
The contract itself (signed fields, disposition words, ``call_start`` and number formats)
is :mod:`core.zadarma`; :mod:`core.events` is the only writer of events. Mapping, in the
events the edge gives for the same call, so the CDR fold treats both alike::

    NOTIFY_START      -> call.offered   inbound, at call_start
    NOTIFY_INTERNAL   -> call.ringing   leg "<pbx_call_id>#<internal>", agent internal
    NOTIFY_ANSWER     -> call.answered  agent internal (else destination)
    NOTIFY_END        -> call.ended (answered; duration_ms = duration) or the call's
                         failure: cancel -> call.cancelled 487, busy -> call.failed 486,
                         no answer -> 408, the other words -> call.failed (FAILED_CODES)
    NOTIFY_OUT_START  -> call.offered   outbound from extension internal, route tel:<number>
    NOTIFY_OUT_END    -> as NOTIFY_END; answered also gives the call.answered Zadarma never
                         notifies for an outbound call, at the end minus ``duration``
    NOTIFY_RECORD     -> call.recording_ready (extra.call_id_with_rec: the file stays at
                         Zadarma, fetched with /v1/pbx/record/request/)

Times: ``call_start`` is the account's wall time, read in the tenant's IANA zone. The
other notifications carry no time of their own, so they are stamped when received (never
before the call's start). ``call_id`` is Zadarma's ``pbx_call_id`` (the same in every
notification of a call, and the id support finds in Zadarma's own records).

Identity: :func:`notification_id` is what makes a notification the same notification
when Zadarma retries it - tenant, event, ``pbx_call_id`` and the fields that tell two
genuine notifications of one event apart (``internal``, ``destination``: NOTIFY_INTERNAL
comes once per extension rung). Event ids derive from it, so a repeat that got past the
receiver's de-duplication is still the same event downstream.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

from core.events import Direction, Event, EventType, InvalidEvent
from core.zadarma import SIGNED_FIELDS, from_local, from_number

__all__ = ["SourceContext", "REQUIRED", "FAILED_CODES", "parse_form", "notification_id",
           "to_events"]

MAX_FIELDS = 32
"""A notification has at most a dozen fields; a body with many more is not one."""

REQUIRED = {"NOTIFY_START": ("call_start", "pbx_call_id", "called_did"),
            "NOTIFY_INTERNAL": ("call_start", "pbx_call_id", "called_did", "internal"),
            "NOTIFY_ANSWER": ("call_start", "pbx_call_id"),
            "NOTIFY_END": ("call_start", "pbx_call_id", "called_did", "duration",
                           "disposition"),
            "NOTIFY_OUT_START": ("call_start", "pbx_call_id", "internal", "destination"),
            "NOTIFY_OUT_END": ("call_start", "pbx_call_id", "internal", "destination",
                               "duration", "disposition"),
            "NOTIFY_RECORD": ("pbx_call_id", "call_id_with_rec")}
"""Fields without which a notification is refused (crm-contracts.md §4.2). ``caller_id``
may be empty: a caller who hides the number."""

FAILED_CODES = {"busy": 486, "no answer": 408, "failed": 500, "no money": 402,
                "unallocated number": 404, "no limit": 403, "no day limit": 403,
                "line limit": 503, "no money, no limit": 402}
"""Zadarma's unanswered ``disposition`` -> the SIP code the edge gives such a call
(486 busy, 408 its no-answer timer; the account's limits are refusals); ``cancel`` (the
caller hung up while it rang) is a call.cancelled, 487."""
CANCELLED_CODE = 487
ANSWERED = "answered"
CANCEL = "cancel"

_CALL_ID = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")
"""``in_<hex>`` / ``out_<hex>``; no ``#`` (it separates a dialog from its leg)."""
_DIGITS = re.compile(r"^[0-9]{1,9}$")


@dataclass(frozen=True)
class SourceContext:
    """Whose account the notifications are: the tenant, its IANA zone and country."""

    tenant: str
    zone: str
    country: str = "RU"

    @property
    def source(self) -> str:
        return f"zadarma@{self.tenant}"


def parse_form(body: bytes) -> dict[str, str]:
    """A form-encoded body as fields; InvalidEvent for anything else (a repeated field
    is refused too: PHP would keep the last, and the signature covers only one)."""
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text),
                          max_num_fields=MAX_FIELDS)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidEvent(f"not a form-encoded notification: {exc}") from exc
    form = dict(pairs)
    if len(form) != len(pairs):
        raise InvalidEvent("a field is repeated")
    return form


def notification_id(tenant: str, form: Mapping[str, str]) -> str:
    """The identity of one notification (a retry has the same): see the module docstring."""
    parts = (tenant, form.get("event", ""), form.get("pbx_call_id", ""),
             form.get("internal", ""), form.get("destination", ""),
             form.get("call_id_with_rec", ""))
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def _check(form: Mapping[str, str]) -> str:
    """The event name, once the fields it needs are there and well formed."""
    name = form.get("event", "")
    if name not in SIGNED_FIELDS:
        raise InvalidEvent(f"event: unknown Zadarma notification {name!r}")
    missing = [f for f in REQUIRED[name] if not form.get(f, "").strip()]
    if missing:
        raise InvalidEvent(f"{name}: missing {', '.join(missing)}")
    if not _CALL_ID.match(form["pbx_call_id"]):
        raise InvalidEvent(f"pbx_call_id: not a Zadarma call id: {form['pbx_call_id']!r}")
    if "duration" in REQUIRED[name] and not _DIGITS.match(form["duration"]):
        raise InvalidEvent(f"duration: expected whole seconds, got {form['duration']!r}")
    word = form.get("disposition")
    if "disposition" in REQUIRED[name] and word not in (ANSWERED, CANCEL, *FAILED_CODES):
        raise InvalidEvent(f"disposition: unknown Zadarma disposition {word!r}")
    return name


def _start(form: Mapping[str, str], ctx: SourceContext) -> datetime:
    try:
        return from_local(form["call_start"], ctx.zone)
    except ValueError as exc:
        raise InvalidEvent(f"call_start: expected 'Y-m-d H:i:s', got "
                           f"{form['call_start']!r}") from exc


@dataclass(frozen=True)
class _Notice:
    """One checked notification and what every event made from it shares."""

    name: str
    form: Mapping[str, str]
    ctx: SourceContext
    nid: str
    start: datetime | None
    received: datetime

    @property
    def at(self) -> datetime:
        """When it happened: on receipt (no time of its own), never before the start."""
        return max(self.received, self.start) if self.start else self.received

    def number(self, name: str) -> str | None:
        return from_number(self.form.get(name), self.ctx.country)

    def event(self, kind: EventType, ts: datetime, **fields: Any) -> Event:
        call_id = self.form["pbx_call_id"]
        event_id = hashlib.sha256(f"{self.nid}/{kind.value}".encode()).hexdigest()[:32]
        extra = {"zadarma_event": self.name, **fields.pop("extra", {})}
        return Event(event_id=event_id, type=kind, tenant=self.ctx.tenant, ts=ts,
                     source=self.ctx.source, call_id=call_id,
                     leg_id=fields.pop("leg_id", call_id), extra=extra, **fields)

    def inbound(self) -> dict[str, Any]:
        did = self.number("called_did")
        return {"direction": Direction.INBOUND, "caller": self.number("caller_id"),
                "callee": did, "did": did}

    def outbound(self) -> dict[str, Any]:
        return {"direction": Direction.OUTBOUND, "caller": self.number("internal"),
                "callee": self.number("destination"), "did": None}


def _start_in(n: _Notice) -> list[Event]:
    return [n.event(EventType.CALL_OFFERED, n.start, **n.inbound())]


def _internal(n: _Notice) -> list[Event]:
    agent = n.number("internal")
    return [n.event(EventType.CALL_RINGING, n.at, **n.inbound(), agent=agent,
                    leg_id=f"{n.form['pbx_call_id']}#{agent}", extra={"leg_to": agent})]


def _answer(n: _Notice) -> list[Event]:
    agent = n.number("internal") or n.number("destination")
    return [n.event(EventType.CALL_ANSWERED, n.at, **n.inbound(), agent=agent, sip_code=200)]


def _end_in(n: _Notice) -> list[Event]:
    return _outcome(n, n.inbound(), n.number("internal"))


def _start_out(n: _Notice) -> list[Event]:
    parties = n.outbound()
    return [n.event(EventType.CALL_OFFERED, n.start, **parties,
                    extra={"route_target": f"tel:{parties['callee']}"})]


def _end_out(n: _Notice) -> list[Event]:
    """Zadarma has no answer notification for an outbound call: the answer is the end
    minus the talk time (``duration``), the client answering, as the edge reports it."""
    parties = n.outbound()
    events = _outcome(n, parties, parties["caller"])
    if n.form["disposition"] == ANSWERED:
        talk = timedelta(seconds=int(n.form["duration"]))
        answered = max(n.at - talk, n.start or n.at - talk)
        events.insert(0, n.event(EventType.CALL_ANSWERED, answered, **parties,
                                 agent=parties["callee"], sip_code=200))
    return events


def _outcome(n: _Notice, parties: dict[str, Any], agent: str | None) -> list[Event]:
    """The call's end: a BYE after an answer, else the call-level failure."""
    word = n.form["disposition"]
    extra = {k: n.form[k] for k in ("status_code", "call_id_with_rec") if n.form.get(k)}
    if word == ANSWERED:
        recorded = {"recorded": True} if n.form.get("is_recorded") == "1" else {}
        return [n.event(EventType.CALL_ENDED, n.at, **parties, agent=agent, reason="bye",
                        duration_ms=int(n.form["duration"]) * 1000,
                        extra=extra | recorded)]
    if word == CANCEL:
        return [n.event(EventType.CALL_CANCELLED, n.at, **parties, sip_code=CANCELLED_CODE,
                        reason=word, extra=extra)]
    return [n.event(EventType.CALL_FAILED, n.at, **parties, sip_code=FAILED_CODES[word],
                    reason=word, extra=extra)]


def _record(n: _Notice) -> list[Event]:
    return [n.event(EventType.CALL_RECORDING_READY, n.at,
                    extra={"call_id_with_rec": n.form["call_id_with_rec"]})]


_TRANSLATE: dict[str, Callable[[_Notice], list[Event]]] = {
    "NOTIFY_START": _start_in, "NOTIFY_INTERNAL": _internal, "NOTIFY_ANSWER": _answer,
    "NOTIFY_END": _end_in, "NOTIFY_OUT_START": _start_out, "NOTIFY_OUT_END": _end_out,
    "NOTIFY_RECORD": _record}


def to_events(form: Mapping[str, str], ctx: SourceContext, received_at: datetime
              ) -> list[Event]:
    """The events of one (verified) notification; InvalidEvent naming what is wrong."""
    name = _check(form)
    start = _start(form, ctx) if "call_start" in REQUIRED[name] else None
    received = received_at.astimezone(UTC).replace(
        microsecond=received_at.microsecond // 1000 * 1000)
    notice = _Notice(name, form, ctx, notification_id(ctx.tenant, form), start, received)
    return _TRANSLATE[name](notice)
