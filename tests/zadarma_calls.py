"""Three calls as a Zadarma account notifies them, and the same calls as the edge reports
them (tests/builders.py), for the unit tests and the pipeline test alike.

Account zone Europe/Moscow (UTC+3); every notification comes with the instant it is
received (UTC), which stamps the notifications that carry no time of their own:

    answered  +79161234567 -> DID 74951234567, rings 101 at 09:15:08 local, answered
              09:15:12, ended 09:15:54 (42 s talk)
    missed    +79035550199 -> DID 74951234567, rings 102 at 09:20:01, the caller hangs
              up (cancel) at 09:20:16
    outbound  102 -> +79161112233 at 09:30:00; answered after 6 s, 75 s talk
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from builders import call_events

from core import zadarma
from core.events import Direction, Event, EventType

SECRET = "zadarma-api-secret"
ZONE = "Europe/Moscow"
TENANT = "acme"


def utc(h: int, m: int, s: int) -> datetime:
    """A Moscow wall time of 5 October 2026 as a UTC instant."""
    return datetime(2026, 10, 5, h, m, s, tzinfo=UTC) - timedelta(hours=3)


IN_ID = "in_ae6b03b3b0765d127ec0b739209346bbc4f0d52d"
MISSED_ID = "in_0d52dae6b03b3b0765d127ec0b739209346bbc4f"
OUT_ID = "out_5d127ec0b739209346bbc4f0d52dae6b03b3b076"


def _in(event: str, pbx: str, start: str, caller: str, **more: str) -> dict[str, str]:
    return {"event": event, "call_start": start, "pbx_call_id": pbx, "caller_id": caller,
            "called_did": "74951234567", **more}


ANSWERED_CALL = [  # (form, received at)
    (_in("NOTIFY_START", IN_ID, "2026-10-05 09:15:07", "79161234567"), utc(9, 15, 7)),
    (_in("NOTIFY_INTERNAL", IN_ID, "2026-10-05 09:15:07", "79161234567", internal="101"),
     utc(9, 15, 8)),
    ({"event": "NOTIFY_ANSWER", "caller_id": "79161234567", "destination": "101",
      "call_start": "2026-10-05 09:15:07", "pbx_call_id": IN_ID, "internal": "101"},
     utc(9, 15, 12)),
    (_in("NOTIFY_END", IN_ID, "2026-10-05 09:15:07", "79161234567", internal="101",
         duration="42", disposition="answered", status_code="16", is_recorded="1",
         call_id_with_rec="1759644907.2741"), utc(9, 15, 54)),
]
MISSED_CALL = [
    (_in("NOTIFY_START", MISSED_ID, "2026-10-05 09:20:00", "79035550199"), utc(9, 20, 0)),
    (_in("NOTIFY_INTERNAL", MISSED_ID, "2026-10-05 09:20:00", "79035550199",
         internal="102"), utc(9, 20, 1)),
    (_in("NOTIFY_END", MISSED_ID, "2026-10-05 09:20:00", "79035550199", internal="102",
         duration="0", disposition="cancel", status_code="16", is_recorded="0",
         call_id_with_rec=""), utc(9, 20, 16)),
]
OUTBOUND_CALL = [
    ({"event": "NOTIFY_OUT_START", "call_start": "2026-10-05 09:30:00", "pbx_call_id": OUT_ID,
      "internal": "102", "destination": "79161112233"}, utc(9, 30, 0)),
    ({"event": "NOTIFY_OUT_END", "call_start": "2026-10-05 09:30:00", "pbx_call_id": OUT_ID,
      "caller_id": "74951230000", "destination": "79161112233", "internal": "102",
      "duration": "75", "disposition": "answered", "status_code": "16", "is_recorded": "0",
      "call_id_with_rec": ""}, utc(9, 31, 21)),
]
CALLS = {IN_ID: ANSWERED_CALL, MISSED_ID: MISSED_CALL, OUT_ID: OUTBOUND_CALL}


def signed(form: dict[str, str], secret: str = SECRET) -> str:
    """The ``Signature`` header Zadarma sends with ``form``."""
    return zadarma.signature(zadarma.signed_string(form), secret)


def edge_calls() -> dict[str, list[Event]]:
    """The same three calls as the edge's events (leg ids in the edge's shape)."""
    inbound = {"caller": "+79161234567", "callee": "+74951234567", "did": "+74951234567",
               "direction": Direction.INBOUND}
    ev = call_events(IN_ID, t0=utc(9, 15, 7), unit="s", **inbound)
    answered = [ev(EventType.CALL_OFFERED, 0),
                ev(EventType.CALL_RINGING, 1, agent="101", leg_id=f"{IN_ID}#101",
                   extra={"leg_to": "101"}),
                ev(EventType.CALL_ANSWERED, 5, agent="101", sip_code=200),
                ev(EventType.CALL_ENDED, 47, agent="101", reason="bye", duration_ms=42_000,
                   extra={"recorded": True})]
    ev = call_events(MISSED_ID, t0=utc(9, 20, 0), unit="s",
                     **(inbound | {"caller": "+79035550199"}))
    missed = [ev(EventType.CALL_OFFERED, 0),
              ev(EventType.CALL_RINGING, 1, agent="102", leg_id=f"{MISSED_ID}#102",
                 extra={"leg_to": "102"}),
              ev(EventType.CALL_CANCELLED, 16, sip_code=487)]
    ev = call_events(OUT_ID, t0=utc(9, 30, 0), unit="s", caller="102",
                     callee="+79161112233", direction=Direction.OUTBOUND)
    outbound = [ev(EventType.CALL_OFFERED, 0, extra={"route_target": "tel:+79161112233"}),
                ev(EventType.CALL_ANSWERED, 6, agent="+79161112233", sip_code=200),
                ev(EventType.CALL_ENDED, 81, reason="bye", duration_ms=75_000)]
    return {IN_ID: answered, MISSED_ID: missed, OUT_ID: outbound}


CDR_FIELDS = ("tenant", "call_id", "direction", "caller", "callee", "did", "agent",
              "started_at", "answered_at", "ended_at", "ring_ms", "talk_ms", "disposition",
              "sip_code", "closed", "recorded", "route_target", "pdd_ms")
"""What the two paths must agree on; the legs are compared by target and outcome."""


def comparable(cdr) -> dict:
    """A CDR's fields the edge and Zadarma paths share (either a Cdr or a warehouse row)."""
    get = (lambda k: cdr[k]) if isinstance(cdr, dict) else (lambda k: getattr(cdr, k))
    out = {k: get(k) for k in CDR_FIELDS}
    out["disposition"] = str(out["disposition"])
    return out
