"""Screen-pops: which CRM cards to show and hide while a live inbound call rings. Pure.

A card must be up while the phone rings, so this path is never queued durably (the
worker in :mod:`connectors.sync` sends it at once and gives up after a deadline):

    view, change = apply_event(view, event, "RU")    # change: a RingingCall or None
    call = for_target(target, change)                 # extensions -> that CRM's users
"""

from __future__ import annotations

from dataclasses import dataclass

from connectors.base import RingingCall
from connectors.mapping import client_phone
from connectors.targets import Target
from core.events import Direction, Event, EventType
from core.phone import is_extension

__all__ = ["SCREEN_POP_EVENTS", "CallView", "apply_event", "for_target"]

SCREEN_POP_EVENTS = frozenset({EventType.CALL_OFFERED, EventType.CALL_RINGING,
                               EventType.CALL_ANSWERED, EventType.CALL_ENDED,
                               EventType.CALL_FAILED, EventType.CALL_CANCELLED})
"""The events that can show or hide a card."""


@dataclass
class CallView:
    """What the screen-pop path knows about one live inbound call."""

    call_id: str
    phone: str
    started_at: float
    ringing: tuple[str, ...] = ()
    shown: tuple[str, ...] = ()


def _ringing_agent(ev: Event) -> str | None:
    """The extension this leg rings: ``agent``, else the edge's ``extra.leg_to`` (the
    callee of a DID or group call is the DID or group), else the callee."""
    agent = ev.agent or (ev.extra or {}).get("leg_to") or ev.callee
    return agent if agent and is_extension(agent) else None


def _is_leg_failure(ev: Event) -> bool:
    """A failure of one branch ("<Call-ID>#<branch>", its ``agent`` named), not the call's."""
    return (ev.type in (EventType.CALL_FAILED, EventType.CALL_CANCELLED)
            and ev.agent is not None and "#" in (ev.leg_id or ""))


def apply_event(view: CallView | None, ev: Event,
                country: str) -> tuple[CallView | None, RingingCall | None]:
    """Fold one event into the call's view; return the screen-pop change it calls for."""
    if ev.direction is not Direction.INBOUND and view is None:
        return None, None
    if view is None:
        phone = client_phone("inbound", ev.caller, ev.callee, country)
        if phone is None:
            return None, None
        view = CallView(ev.call_id or "", phone, ev.ts.timestamp())
    if ev.type in (EventType.CALL_OFFERED, EventType.CALL_RINGING):
        agent = _ringing_agent(ev)
        if agent is None or agent in view.shown:
            return view, None
        view.ringing += (agent,)
        view.shown += (agent,)
        return view, RingingCall(view.call_id, view.phone, "inbound", view.started_at,
                                 users=(agent,))
    if ev.type is EventType.CALL_ANSWERED:
        others = tuple(a for a in view.shown if a != ev.agent)
        view.shown = tuple(a for a in view.shown if a == ev.agent)
        if not others:
            return view, None
        return view, RingingCall(view.call_id, view.phone, "inbound", view.started_at,
                                 hide_users=others)
    if _is_leg_failure(ev):
        # one member's leg ended (busy, no answer): the call rings on elsewhere
        if ev.agent not in view.shown:
            return view, None
        view.ringing = tuple(a for a in view.ringing if a != ev.agent)
        view.shown = tuple(a for a in view.shown if a != ev.agent)
        return view, RingingCall(view.call_id, view.phone, "inbound", view.started_at,
                                 hide_users=(ev.agent,))
    if ev.type in (EventType.CALL_ENDED, EventType.CALL_FAILED, EventType.CALL_CANCELLED):
        if not view.shown:
            return None, None
        return None, RingingCall(view.call_id, view.phone, "inbound", view.started_at,
                                 hide_users=view.shown)
    return view, None


def for_target(target: Target, change: RingingCall) -> RingingCall | None:
    """The change in one CRM's users; None when none of the extensions is mapped there."""
    users = tuple(u for u in (target.user_for(a) for a in change.users) if u)
    hide = tuple(u for u in (target.user_for(a) for a in change.hide_users) if u)
    if not users and not hide:
        return None
    return RingingCall(change.call_id, change.phone, change.direction, change.started_at,
                       users=users, hide_users=hide)
