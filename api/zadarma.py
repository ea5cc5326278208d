"""Zadarma's PBX notifications from Tawag's events and CDRs (crm-contracts.md §4).

Pure: which NOTIFY_* a fact becomes, with exactly Zadarma's form fields (all strings,
in the documented order), and its ``Signature`` (the contract itself - signed fields,
signature, disposition words, time and number formats - is :mod:`core.zadarma`, shared
with :mod:`ingest.zadarma`, which reads Zadarma's notifications). Mapping:

    call.offered   inbound  -> NOTIFY_START      outbound -> NOTIFY_OUT_START
    call.ringing   inbound, an agent rings -> NOTIFY_INTERNAL
    call.answered  inbound  -> NOTIFY_ANSWER
    CDR closed     inbound  -> NOTIFY_END        outbound -> NOTIFY_OUT_END
    call.recording_ready    -> NOTIFY_RECORD

Internal (extension to extension) calls have no Zadarma notification. ``call_start`` is
the call's start in the subscription's zone (``Y-m-d H:i:s``, as Zadarma sends local
time); it is the same in every notification of a call, since it is signed. Numbers go
without ``+`` (``79161234567``); ``pbx_call_id`` is ``in_``/``out_`` + a stable hash of
Tawag's call id.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from core import zadarma as contract
from core.events import Direction, Event, EventType
from core.records import Cdr, Disposition
from core.zadarma import DISPOSITIONS, NOTIFY_TYPES, signed_string, to_local, to_number

__all__ = ["NOTIFY_TYPES", "DISPOSITIONS", "from_event", "from_cdr", "start_form",
           "signed_string", "encode", "signature"]

_Q850 = {Disposition.ANSWERED: 16, Disposition.BUSY: 17, Disposition.NO_ANSWER: 19,
         Disposition.CANCELLED: 16}
"""Q.850 cause per disposition (16 normal clearing, 17 user busy, 19 no answer)."""
_Q850_FAILED = {404: 1, 484: 28, 403: 21, 480: 18, 503: 34, 502: 27, 500: 41, 408: 102}
"""A failed call's cause from its SIP code (RFC 3398 §8.2.6.1); anything else is 31."""

Form = dict[str, str]


def pbx_call_id(call_id: str, direction: str | None) -> str:
    prefix = "out" if direction == Direction.OUTBOUND else "in"
    return f"{prefix}_{hashlib.sha1(call_id.encode()).hexdigest()}"


def start_form(call_id: str, caller: str | None, did: str | None, call_start: datetime,
               zone: str) -> Form:
    """NOTIFY_START of an inbound call: sent from the call's event, or by the edge's
    steering request before the call is routed (:mod:`api.steering`)."""
    return {"event": "NOTIFY_START", "call_start": to_local(call_start, zone),
            "pbx_call_id": pbx_call_id(call_id, Direction.INBOUND),
            "caller_id": to_number(caller), "called_did": to_number(did)}


def from_event(ev: Event, call_start: datetime | None, zone: str) -> list[tuple[str, Form]]:
    """The notifications one call event gives (``call_start``: the call's offer time, as
    remembered from its ``call.offered``; None if unknown: nothing but NOTIFY_RECORD)."""
    if ev.type is EventType.CALL_RECORDING_READY:
        return [("NOTIFY_RECORD", {"event": "NOTIFY_RECORD", "call_id_with_rec": ev.call_id,
                                   "pbx_call_id": pbx_call_id(ev.call_id, ev.direction)})]
    if call_start is None or ev.direction not in (Direction.INBOUND, Direction.OUTBOUND):
        return []
    start = to_local(call_start, zone)
    pbx_id = pbx_call_id(ev.call_id, ev.direction)
    if ev.direction is Direction.OUTBOUND:
        if ev.type is EventType.CALL_OFFERED:
            return [("NOTIFY_OUT_START", {"event": "NOTIFY_OUT_START", "call_start": start,
                                          "pbx_call_id": pbx_id, "internal": ev.caller or "",
                                          "destination": to_number(ev.callee)})]
        return []
    base = {"call_start": start, "pbx_call_id": pbx_id, "caller_id": to_number(ev.caller),
            "called_did": to_number(ev.did or ev.callee)}
    if ev.type is EventType.CALL_OFFERED:
        return [("NOTIFY_START", start_form(ev.call_id, ev.caller, ev.did or ev.callee,
                                            call_start, zone))]
    if ev.type is EventType.CALL_RINGING and ev.agent:
        return [("NOTIFY_INTERNAL", {"event": "NOTIFY_INTERNAL", **base,
                                     "internal": ev.agent})]
    if ev.type is EventType.CALL_ANSWERED:
        return [("NOTIFY_ANSWER", {"event": "NOTIFY_ANSWER", "caller_id": base["caller_id"],
                                   "destination": ev.agent or "", "call_start": start,
                                   "pbx_call_id": pbx_id, "internal": ev.agent or ""})]
    return []


def _status_code(cdr: Cdr) -> str:
    if cdr.disposition is Disposition.FAILED:
        return str(_Q850_FAILED.get(cdr.sip_code or 0, 31))
    return str(_Q850.get(cdr.disposition, 31))


def from_cdr(cdr: Cdr, zone: str) -> list[tuple[str, Form]]:
    """NOTIFY_END / NOTIFY_OUT_END of a closed inbound / outbound call."""
    if not cdr.closed or cdr.direction not in (Direction.INBOUND, Direction.OUTBOUND):
        return []
    recorded = bool(cdr.recorded or cdr.recording)
    common = {"duration": str(round(cdr.talk_ms / 1000)),
              "disposition": DISPOSITIONS.get(cdr.disposition, "failed"),
              "status_code": _status_code(cdr), "is_recorded": "1" if recorded else "0",
              "call_id_with_rec": cdr.call_id if recorded else ""}
    start = to_local(cdr.started_at, zone)
    pbx_id = pbx_call_id(cdr.call_id, cdr.direction)
    if cdr.direction == Direction.OUTBOUND:
        return [("NOTIFY_OUT_END", {"event": "NOTIFY_OUT_END", "call_start": start,
                                    "pbx_call_id": pbx_id, "caller_id": to_number(cdr.caller),
                                    "destination": to_number(cdr.callee),
                                    "internal": cdr.agent or cdr.caller or "", **common})]
    return [("NOTIFY_END", {"event": "NOTIFY_END", "call_start": start, "pbx_call_id": pbx_id,
                            "caller_id": to_number(cdr.caller),
                            "called_did": to_number(cdr.did or cdr.callee),
                            "internal": cdr.agent or "", **common})]


def signature(form: Form, secret: str) -> str:
    """The ``Signature`` header of a notification (core.zadarma's algorithm)."""
    return contract.signature(signed_string(form), secret)


def encode(form: dict[str, Any]) -> bytes:
    """The form-encoded body, fields in their documented order."""
    return urlencode(form).encode()
