"""Kamailio evapi wire format -> schema v1 events. Pure: no sockets, no clock.

evapi frames each JSON payload as a netstring (``<len>:<payload>,``). The payloads are
the ones ``sip-edge/kamailio.cfg`` builds in ``route[PUBLISH_EVENT]``; this module is the
only reader of that shape, and :mod:`core.events` the only writer of ours.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from core.events import Direction, Event, EventType, InvalidEvent
from core.phone import is_extension, normalise

__all__ = ["FramingError", "DecodeContext", "split_netstrings", "decode_evapi", "GREETING"]

GREETING = "evapi.connected"
"""Sent by the edge to every new evapi client; a control message, not an event."""

CANCELLED_CODE = 487
"""Request Terminated: the caller sent CANCEL while the call was ringing."""

_MAX_FRAME = 1 << 20


class FramingError(ValueError):
    """The byte stream is not netstrings any more; the connection must be re-opened."""


@dataclass(frozen=True)
class DecodeContext:
    """What the decoder needs to know about where the payloads come from."""

    source: str
    country: str = "RU"
    tenant_for_domain: Callable[[str | None], str] = lambda domain: "default"


def split_netstrings(buffer: bytes) -> tuple[list[bytes], bytes]:
    """Complete payloads in ``buffer`` and the unfinished rest to keep for the next read."""
    frames: list[bytes] = []
    pos = 0
    while pos < len(buffer):
        colon = buffer.find(b":", pos)
        header = buffer[pos:] if colon < 0 else buffer[pos:colon]
        if not header.isdigit() or int(header) > _MAX_FRAME:
            raise FramingError(f"bad netstring length: {header[:40]!r}")
        end = colon + 1 + int(header)
        if colon < 0 or end >= len(buffer):
            break
        if buffer[end:end + 1] != b",":
            raise FramingError(f"netstring not terminated by ',' at byte {end}")
        frames.append(buffer[colon + 1:end])
        pos = end + 1
    return frames, buffer[pos:]


def event_id_of(payload: dict[str, Any]) -> str:
    """Same payload -> same id, so a repeated evapi delivery is recognised downstream."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def _ts(value: Any) -> datetime:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidEvent(f"ts: expected epoch seconds, got {value!r}")
    return datetime.fromtimestamp(round(float(value), 3), tz=UTC)


def _require(payload: dict[str, Any], *names: str) -> None:
    missing = [n for n in names if payload.get(n) in (None, "")]
    if missing:
        raise InvalidEvent(f"{payload.get('event')}: missing {', '.join(missing)}")


def _code(payload: dict[str, Any]) -> int | None:
    code = payload.get("code")
    if code is None:
        return None
    if isinstance(code, bool) or not isinstance(code, int):
        raise InvalidEvent(f"code: expected an integer SIP code, got {code!r}")
    return code


def direction_of(caller: str | None, callee: str | None) -> Direction:
    """Internal between extensions; inbound from outside; outbound to outside."""
    if caller and not is_extension(caller):
        return Direction.INBOUND
    if callee and not is_extension(callee):
        return Direction.OUTBOUND
    return Direction.INTERNAL


def _base(payload: dict[str, Any], kind: EventType, ctx: DecodeContext) -> dict[str, Any]:
    return {
        "event_id": event_id_of(payload),
        "type": kind,
        "tenant": ctx.tenant_for_domain(payload.get("domain")),
        "ts": _ts(payload.get("ts")),
        "source": ctx.source,
    }


def _call(payload: dict[str, Any], kind: EventType, ctx: DecodeContext) -> dict[str, Any]:
    _require(payload, "call_id")
    caller = normalise(payload.get("from"), ctx.country)
    callee = normalise(payload.get("ruri_user") or payload.get("to"), ctx.country)
    direction = direction_of(caller, callee)
    return _base(payload, kind, ctx) | {
        "call_id": payload["call_id"],
        "leg_id": payload.get("leg_id") or payload["call_id"],
        "caller": caller,
        "callee": callee,
        "direction": direction,
        "did": callee if direction is Direction.INBOUND else None,
        "agent": normalise(payload.get("agent"), ctx.country),
        "sip_code": _code(payload),
        "reason": payload.get("reason"),
    }


_ROUTING_EXTRA = ("group", "route_target")


def _routing(p: dict[str, Any]) -> dict[str, Any]:
    """The group the call rings through (``group``) and, on the offer, where the PBX
    routed it (``route_target``: ``ext:<user>``, ``group:<name>``, ``tel:<number>``)."""
    return {k: p[k] for k in _ROUTING_EXTRA if p.get(k)}


_OFFER_EXTRA = ("speed_dial", "mask_code", "masked_to", "transferred_from", "referred_by",
                "replaces")


def _offered(p: dict[str, Any], ctx: DecodeContext) -> dict[str, Any]:
    """call.start; extra names a short number dialled, a masked client (code and masked
    number, never the real one), the call a transfer continues (``transferred_from``,
    also its ``call_id``; ``leg_id`` is then the new dialog's SIP Call-ID) and, for an
    attended transfer, the consultation dialog it replaces (``replaces``, a SIP Call-ID)."""
    extra = {"sip_source": p.get("source")} | {k: p[k] for k in _OFFER_EXTRA if k in p}
    return _call(p, EventType.CALL_OFFERED, ctx) | {"extra": extra | _routing(p)}


def _transferred(p: dict[str, Any], ctx: DecodeContext) -> dict[str, Any]:
    """call.transferred (a REFER): ``from`` transfers ``transferee`` to ``to``."""
    _require(p, "to")
    extra = {k: p[k] for k in ("transferee", "kind") if k in p}
    return _call(p, EventType.CALL_TRANSFERRED, ctx) | {"extra": extra}


def _ringing(p: dict[str, Any], ctx: DecodeContext) -> dict[str, Any]:
    """One ringing branch: ``leg_id`` "<SIP Call-ID>#<branch>", the member rung in
    ``agent`` and ``extra.leg_to`` (the callee may be a group or a DID)."""
    fields = _call(p, EventType.CALL_RINGING, ctx)
    leg_to = normalise(p.get("leg_to"), ctx.country) if p.get("leg_to") else None
    extra = ({"leg_to": leg_to} if leg_to else {}) | _routing(p)
    return fields | {"agent": fields["agent"] or leg_to, "extra": extra}


def _hold(p: dict[str, Any], kind: EventType, ctx: DecodeContext) -> dict[str, Any]:
    """call.held / call.resumed: ``held_by`` sent the re-INVITE (hold or resume)."""
    _require(p, "held_by")
    return _call(p, kind, ctx) | {"agent": normalise(p["held_by"], ctx.country),
                                  "extra": {"held_by": p["held_by"]}}


def _answered(p: dict[str, Any], ctx: DecodeContext) -> dict[str, Any]:
    fields = _call(p, EventType.CALL_ANSWERED, ctx)
    # "agent" is who really answered (a group member, the extension behind a DID)
    agent = fields["agent"] or fields["callee"]
    return fields | {"agent": agent, "sip_code": fields["sip_code"] or 200,
                     "extra": _routing(p)}


def _failed(p: dict[str, Any], ctx: DecodeContext) -> dict[str, Any]:
    """call.failed of the call, or of one leg (``leg_id`` "<SIP Call-ID>#<branch>",
    ``agent`` the leg's target: busy, no answer, cancelled as another branch answered)."""
    _require(p, "code")
    kind = EventType.CALL_CANCELLED if p["code"] == CANCELLED_CODE else EventType.CALL_FAILED
    return _call(p, kind, ctx) | {"extra": {"origin": p.get("origin")} | _routing(p)}


def _forwarded(p: dict[str, Any], ctx: DecodeContext) -> dict[str, Any]:
    """call.forwarded: ``reason`` is no_answer, busy or unregistered; targets in extra."""
    _require(p, "reason", "forwarded_to")
    extra = {k: p[k] for k in ("forwarded_from", "forwarded_to", "hop") if k in p}
    return _call(p, EventType.CALL_FORWARDED, ctx) | {"extra": extra}


def _recording_ready(p: dict[str, Any], ctx: DecodeContext) -> dict[str, Any]:
    _require(p, "file")
    # "recording" is what the CDR fold reads; "file" is the name the event documents
    extra = {"file": p["file"], "recording": p["file"]}
    extra |= {k: p[k] for k in ("size", "duration") if k in p}
    return _call(p, EventType.CALL_RECORDING_READY, ctx) | {"extra": extra}


_MEDIA_KEYS = ("packets", "bytes", "errors", "mos", "packet_loss", "jitter_ms")


def _media(p: dict[str, Any]) -> dict[str, float] | None:
    """RTP counters and quality from call.end's ``media`` object (numbers only)."""
    media = p.get("media")
    if not isinstance(media, dict):
        return None
    values = {k: float(media[k]) for k in _MEDIA_KEYS
              if isinstance(media.get(k), int | float) and not isinstance(media.get(k), bool)}
    return values or None


def _ended(p: dict[str, Any], ctx: DecodeContext) -> dict[str, Any]:
    fields = _call(p, EventType.CALL_ENDED, ctx)
    answered_ts = p.get("answered_ts")
    if isinstance(answered_ts, int | float) and answered_ts > 0:
        duration_ms = round((float(p["ts"]) - float(answered_ts)) * 1000)
    elif isinstance(p.get("duration"), int):
        duration_ms = p["duration"] * 1000
    else:
        duration_ms = None
    return fields | {
        "hangup_by": normalise(p.get("hangup_by"), ctx.country),
        "duration_ms": duration_ms,
        "sip_code": None,
        "media": _media(p),
        "extra": (({"recorded": True} if p.get("recorded") is True else {})
                  | _media_missing(p) | _routing(p)),
    }


MEDIA_MISSING_REASONS = ("unknown_call", "no_rtp_stats")
"""Why the edge has no media figures for an ended call (kamailio.cfg route[MEDIA_QUALITY]):
rtpengine no longer knew the call, or knew it without RTP counters."""


def _media_missing(p: dict[str, Any]) -> dict[str, Any]:
    """``extra.media_missing``: the edge's reason, when it says it has no media figures."""
    why = p.get("media_missing")
    return {"media_missing": why} if why in MEDIA_MISSING_REASONS else {}


def _agent(p: dict[str, Any], kind: EventType, ctx: DecodeContext) -> dict[str, Any]:
    _require(p, "user")
    keys = ("contact", "expires", "source", "aor", "reason", "auth_user", "method")
    extra = {k: p[k] for k in keys if k in p}
    return _base(p, kind, ctx) | {"agent": str(p["user"]), "extra": extra}


def _picked_up(p: dict[str, Any], ctx: DecodeContext) -> dict[str, Any]:
    """call.picked_up (*8): ``picked_up_by`` took the call ringing a group peer."""
    _require(p, "picked_up_by")
    return _call(p, EventType.CALL_PICKED_UP, ctx) | {
        "agent": normalise(p["picked_up_by"], ctx.country),
        "extra": {"picked_up_by": p["picked_up_by"]}}


_DECISION_EXTRA = ("rule", "target", "default_target", "decision_us", "inputs", "position",
                   "wait_ms")


def _route_decided(p: dict[str, Any], ctx: DecodeContext) -> dict[str, Any]:
    """route.decided: which rule fired for an inbound call, where it sent it, where the
    DID alone would have, and how long the edge took to decide (core.events)."""
    _require(p, "rule", "target")
    return _call(p, EventType.ROUTE_DECIDED, ctx) | {
        "extra": {k: p[k] for k in _DECISION_EXTRA if p.get(k) not in (None, "")}}


_DECODERS: dict[str, Callable[[dict[str, Any], DecodeContext], dict[str, Any]]] = {
    "call.start": _offered,
    "call.ringing": _ringing,
    "call.answered": _answered,
    "call.failed": _failed,
    "call.end": _ended,
    "register": lambda p, c: _agent(p, EventType.AGENT_REGISTERED, c),
    "unregister": lambda p, c: _agent(p, EventType.AGENT_UNREGISTERED, c),
    "register.auth_failed": lambda p, c: _agent(p, EventType.AGENT_AUTH_FAILED, c),
    "invite.auth_failed": lambda p, c: _agent(p | {"method": "INVITE"},
                                              EventType.AGENT_AUTH_FAILED, c),
    "call.forwarded": _forwarded,
    "call.transferred": _transferred,
    "call.picked_up": _picked_up,
    "call.recording_ready": _recording_ready,
    "call.held": lambda p, c: _hold(p, EventType.CALL_HELD, c),
    "call.resumed": lambda p, c: _hold(p, EventType.CALL_RESUMED, c),
    "route.decided": _route_decided,
}


def decode_evapi(frame: bytes, ctx: DecodeContext) -> Event | None:
    """One evapi payload -> an event; None for the greeting; InvalidEvent for the rest."""
    try:
        payload = json.loads(frame)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidEvent(f"evapi payload is not JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise InvalidEvent("evapi payload is not a JSON object")
    name = payload.get("event")
    if name == GREETING:
        return None
    decoder = _DECODERS.get(name)  # type: ignore[arg-type]
    if decoder is None:
        raise InvalidEvent(f"unknown evapi event {name!r}")
    return Event(**decoder(payload, ctx))
