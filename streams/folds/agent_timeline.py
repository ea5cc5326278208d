"""From an agent's events to its calls, sessions and timeline of states (pure functions).

The rules, in telephony terms (which events concern an agent: ``agent_state.agent_keys``):

- logged in (a *session*): from ``agent.registered`` until ``agent.unregistered``, a
  REGISTER with ``expires`` 0, or the registration lapsing at ts + ``expires`` without a
  refresh. A lapse only counts once the agent's newest event is past it (event time).
- ringing: from the first ``call.ringing`` of a leg to the agent (its ``agent``; the
  callee for an event naming none) to the call's first answer, end, call-level failure
  or cancel, or the failure of the agent's own leg (busy, no answer, cancelled because
  another branch answered). Another agent's leg failing ends nothing here.
- on_call: from ``call.answered`` to ``call.ended``, for the answering agent and for an
  extension that placed the call. (A lost answer is rebuilt from ``duration_ms``.) A
  transferred call's dialogs (``leg_id``) are each answered and ended on their own: the
  transferee is on a call from its first answer to its last dialog's end.
- wrap_up: ``wrap_up_ms`` after each call the agent talked on, if logged in.

States and their priority when they overlap: on_call > ringing > wrap_up > available >
offline. Each rule gives *spans* (kind, start, end); the timeline is a sweep over the
spans' ends (:func:`sweep`), so it depends on the set of spans, not on their order.

The agent's row (``agent_state``) keeps only what is not final yet, as :class:`Fact`
records (the part of an event the rules read); :func:`sweep` continues a timeline from a
given point with the counters in force there.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from core.agent_records import AgentStatus
from core.events import Event, EventType

__all__ = ["Fact", "AgentCall", "Segment", "Span", "Cursor", "fact_of", "order",
           "call_of", "unsettled_dialogs", "scan_sessions", "session_end", "call_spans",
           "sweep", "REGISTRATIONS"]

MS = timedelta(milliseconds=1)
_RANK = {
    EventType.AGENT_REGISTERED: 0, EventType.CALL_OFFERED: 1, EventType.CALL_RINGING: 2,
    EventType.CALL_ANSWERED: 3, EventType.CALL_FAILED: 4, EventType.CALL_CANCELLED: 4,
    EventType.CALL_ENDED: 5, EventType.AGENT_UNREGISTERED: 6,
}
REGISTRATIONS = frozenset({EventType.AGENT_REGISTERED, EventType.AGENT_UNREGISTERED})
_RING_ENDS = frozenset({EventType.CALL_ANSWERED, EventType.CALL_FAILED,
                        EventType.CALL_CANCELLED, EventType.CALL_ENDED})
_KINDS = {"session": 0, "ring": 1, "talk": 2, "wrap": 3}


@dataclass(frozen=True)
class Fact:
    """What the agent fold reads of one event (times in whole milliseconds, as on the wire).

        fact_of(event)   # Fact(event_id, type, ts, call_id, caller, callee, agent, ...)
    """

    event_id: str
    type: EventType
    ts: datetime
    call_id: str | None = None
    caller: str | None = None
    callee: str | None = None
    agent: str | None = None
    duration_ms: int | None = None
    expires: int | None = None
    """A REGISTER's ``expires`` in seconds (None: absent or unreadable)."""
    dialog: str | None = None
    """The SIP dialog of a call event when it is not the call's own (a transferee's new
    dialog: ``leg_id`` up to ``#``); None for the call's own dialog."""


def _expires(ev: Event) -> int | None:
    raw = ev.extra.get("expires")
    try:
        return int(raw) if raw is not None and not isinstance(raw, bool) else None
    except (TypeError, ValueError):
        return None


def fact_of(event: Event) -> Fact:
    """The fold's view of ``event``; sub-millisecond time is cut as the wire would."""
    ts = event.ts.replace(microsecond=event.ts.microsecond // 1000 * 1000)
    return Fact(event.event_id, event.type, ts, event.call_id, event.caller, event.callee,
                event.agent, event.duration_ms,
                _expires(event) if event.type is EventType.AGENT_REGISTERED else None,
                _dialog_of(event))


def _dialog_of(event: Event) -> str | None:
    dialog = (event.leg_id or "").split("#", 1)[0]
    return dialog if dialog and dialog != event.call_id else None


def order(fact: Fact) -> tuple[datetime, int, str]:
    """Sort key of facts: event time, then the call's natural order, then the id."""
    return (fact.ts, _RANK.get(fact.type, 9), fact.event_id)


# --- calls -------------------------------------------------------------------------------


@dataclass(frozen=True)
class AgentCall:
    """What one call meant for the agent (all times in event time)."""

    call_id: str
    ring_start: datetime | None
    ring_end: datetime | None
    talk_start: datetime | None
    talk_end: datetime | None
    answered_by_agent: bool
    settled: bool
    """A terminal event is in: call.ended, or a failure/cancel before any answer."""
    last_ts: datetime


def _first(facts: Iterable[Fact], *types: EventType) -> Fact | None:
    return next((f for f in facts if f.type in types), None)


def _answer(answer: Fact | None, end: Fact | None) -> tuple[datetime | None, str | None]:
    """When the call was answered and by whom; a lost answer is rebuilt from the BYE."""
    if answer is not None:
        return answer.ts, answer.agent or answer.callee
    if end is not None and end.duration_ms is not None:
        return end.ts - end.duration_ms * MS, end.agent or end.callee
    return None, None


def _concerns(fact: Fact, agent: str) -> bool:
    """Whether a leg event is about ``agent``'s leg: the agent it names, else its callee
    (a call-level event names no agent and concerns every party of the call)."""
    return (fact.agent or fact.callee) == agent


def _mine(fact: Fact, agent: str) -> bool:
    """A fact that can end ``agent``'s ringing or settle its call: not the failure of
    another agent's leg (a group member busy while this one rings on)."""
    if fact.type in (EventType.CALL_FAILED, EventType.CALL_CANCELLED):
        return fact.agent is None or fact.agent == agent
    return True


@dataclass(frozen=True)
class _DialogPart:
    """What one SIP dialog of the call meant for the agent."""

    answered_at: datetime | None
    answerer: str | None
    ended_at: datetime | None
    talked: bool
    settled: bool


def _dialog_part(agent: str, facts: Sequence[Fact]) -> _DialogPart:
    answer = _first(facts, EventType.CALL_ANSWERED)
    end = _first(facts, EventType.CALL_ENDED)
    failure = _first([f for f in facts if _mine(f, agent)],
                     EventType.CALL_FAILED, EventType.CALL_CANCELLED)
    answered_at, answerer = _answer(answer, end)
    placed = any(f.caller == agent for f in facts)
    return _DialogPart(
        answered_at, answerer, end.ts if end is not None else None,
        talked=answered_at is not None and (answerer == agent or placed),
        settled=end is not None or (failure is not None and answer is None))


def _by_dialog(facts: Sequence[Fact]) -> dict[str | None, list[Fact]]:
    out: dict[str | None, list[Fact]] = {}
    for fact in facts:
        out.setdefault(fact.dialog, []).append(fact)
    return out


def call_of(agent: str, call_id: str, facts: Sequence[Fact]) -> AgentCall:
    """The call from its facts (sorted by :func:`order`); remembered for a tuple of facts
    (a row's facts are tuples of frozen facts, met several times per event by the fold:
    :data:`_CALLS`)."""
    if type(facts) is not tuple:
        return _call_of(agent, call_id, facts)
    hit = _CALLS.get(id(facts))
    if hit is not None and hit[0] is facts and hit[1] == agent and hit[2] == call_id:
        return hit[3]
    call = _call_of(agent, call_id, facts)
    if len(_CALLS) >= _CALLS_MAX:
        _CALLS.clear()
    _CALLS[id(facts)] = (facts, agent, call_id, call)
    return call


_CALLS: dict[int, tuple[tuple[Fact, ...], str, str, AgentCall]] = {}
"""id(facts) -> (the facts tuple itself, agent, call id, its call). The entry holds the
tuple, so its id cannot be reused while it is remembered, and ``is`` checks it: a pure
function of immutable arguments, only the time changes."""
_CALLS_MAX = 65_536


def _call_of(agent: str, call_id: str, facts: Sequence[Fact]) -> AgentCall:
    """The call from its facts (sorted by :func:`order`).

    A transferred call has several dialogs (the transferee's new one after a REFER);
    each is answered and ended on its own. The agent talks from its first dialog
    answered by or placed by it to the last of those ending, and the call is settled
    once every dialog seen is."""
    dialogs = _by_dialog(facts)
    ringing = next((f for f in facts
                    if f.type is EventType.CALL_RINGING and _concerns(f, agent)), None)
    ring_start = ringing.ts if ringing else None
    ring_end = None
    if ringing is not None and ring_start is not None:
        ring_end = next((f.ts for f in dialogs[ringing.dialog]
                         if _mine(f, agent) and f.type in _RING_ENDS and f.ts >= ring_start),
                        None)
    parts = [_dialog_part(agent, group) for group in dialogs.values()]
    talks = [p for p in parts if p.talked]
    ends = [p.ended_at for p in talks]
    return AgentCall(
        call_id=call_id, ring_start=ring_start, ring_end=ring_end,
        talk_start=min(p.answered_at for p in talks if p.answered_at) if talks else None,
        talk_end=max(e for e in ends if e) if talks and None not in ends else None,
        answered_by_agent=any(p.answered_at is not None and p.answerer == agent
                              for p in parts),
        settled=all(p.settled for p in parts),
        last_ts=facts[-1].ts,
    )


def unsettled_dialogs(agent: str, facts: Sequence[Fact]) -> list[tuple[str | None, bool]]:
    """The dialogs of a call not settled yet for ``agent``, each with whether it was
    talked on (for the guard, which settles them)."""
    return [(dialog, part.answered_at is not None)
            for dialog, group in _by_dialog(facts).items()
            if not (part := _dialog_part(agent, group)).settled]


# --- sessions ----------------------------------------------------------------------------


Cursor = tuple[datetime | None, datetime | None]
"""Where a scan of registrations stands: (start of the open session, its lapse)."""
Session = tuple[datetime, datetime | None]


def _session_step(cursor: Cursor, fact: Fact, out: list[Session]) -> Cursor:
    """One registration of the scan; sessions it closes go to ``out``."""
    start, lapse = cursor
    if start is not None and lapse is not None and lapse <= fact.ts:
        out.append((start, lapse))
        start = None
    expires = fact.expires if fact.type is EventType.AGENT_REGISTERED else 0
    if fact.type is EventType.AGENT_UNREGISTERED or expires == 0:
        if start is not None:
            out.append((start, fact.ts))
        return None, lapse
    start = start if start is not None else fact.ts
    return start, fact.ts + timedelta(seconds=expires) if expires else None


def scan_sessions(cursor: Cursor, regs: Iterable[Fact]) -> tuple[Cursor, list[Session]]:
    """Continue the registration scan from ``cursor``: the new cursor, sessions closed."""
    out: list[Session] = []
    for fact in regs:
        cursor = _session_step(cursor, fact, out)
    return cursor, out


def session_end(cursor: Cursor, known: datetime | None) -> list[Session]:
    """The session still open after the scan (lapsed once ``known`` is past its lapse)."""
    start, lapse = cursor
    if start is None:
        return []
    lapses = lapse is not None and known is not None and lapse <= known
    return [(start, lapse if lapses else None)]


# --- timeline ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    """One stretch of a single state: ``[since, until)``, until None for the current one."""

    state: AgentStatus
    since: datetime
    until: datetime | None


Span = tuple[str, datetime, datetime | None]
"""(kind, start, end): kind session, ring, talk, wrap, or mark (a point, no state)."""


def call_spans(call: AgentCall, wrap_up_ms: int) -> list[Span]:
    """The call's ring, talk and wrap-up spans; remembered per call object (the fold asks
    for every open call's spans on every event, and :func:`call_of` hands out one object
    per facts tuple)."""
    hit = _SPANS.get(id(call))
    if hit is not None and hit[0] is call and hit[1] == wrap_up_ms:
        return list(hit[2])
    spans = _call_spans(call, wrap_up_ms)
    if len(_SPANS) >= _CALLS_MAX:
        _SPANS.clear()
    _SPANS[id(call)] = (call, wrap_up_ms, tuple(spans))
    return spans


_SPANS: dict[int, tuple[AgentCall, int, tuple[Span, ...]]] = {}
"""id(call) -> (the call, wrap-up ms, its spans): held like :data:`_CALLS`."""


def _call_spans(call: AgentCall, wrap_up_ms: int) -> list[Span]:
    spans: list[Span] = []
    if call.ring_start is not None:
        spans.append(("ring", call.ring_start, call.ring_end))
    if call.talk_start is not None:
        spans.append(("talk", call.talk_start, call.talk_end))
        if call.talk_end is not None and wrap_up_ms > 0:
            spans.append(("wrap", call.talk_end, call.talk_end + wrap_up_ms * MS))
    return spans


def _status_of(counters: list[int]) -> AgentStatus:
    """The state while that many spans of each kind are active (priority order)."""
    session, ring, talk, wrap = counters
    if talk > 0:
        return AgentStatus.ON_CALL
    if ring > 0:
        return AgentStatus.RINGING
    if session <= 0:
        return AgentStatus.OFFLINE
    return AgentStatus.WRAP_UP if wrap > 0 else AgentStatus.AVAILABLE


def _deltas(spans: Iterable[Span], frontier: datetime | None
            ) -> tuple[list[int], dict[datetime, list[int]]]:
    """Span ends as counter changes: those before ``frontier`` summed, the rest by point."""
    before = [0, 0, 0, 0]
    points: dict[datetime, list[int]] = {}
    for kind, start, end in spans:
        index = _KINDS.get(kind)
        for at, delta in ((start, 1), (end, -1)):
            if at is None or (delta == -1 and kind == "mark"):
                continue
            if frontier is not None and at < frontier:
                if index is not None:
                    before[index] += delta
                continue
            vector = points.setdefault(at, [0, 0, 0, 0])
            if index is not None:
                vector[index] += delta
    return before, points


def sweep(spans: Iterable[Span], frontier: datetime | None = None,
          base: Segment | None = None) -> list[Segment]:
    """The timeline the spans give from ``frontier`` on (all of it without one).

    ``base`` is the segment in force just before the frontier (final, published): the
    timeline goes on from it, with the counters the spans' ends before the frontier sum
    to. A span end before the frontier that ``base`` did not know of (a late event) thus
    shows from the frontier on and never rewrites what lies before it.
    """
    before, points = _deltas(spans, frontier)
    if frontier is not None and (base is not None or any(before)):
        points.setdefault(frontier, [0, 0, 0, 0])
    segments = [Segment(base.state, base.since, None)] if base is not None else []
    counters = before
    for at in sorted(points):
        counters = [c + d for c, d in zip(counters, points[at], strict=True)]
        status = _status_of(counters)
        if segments and segments[-1].state is status:
            continue
        if segments:
            last = segments[-1]
            segments[-1] = Segment(last.state, last.since, at)
        segments.append(Segment(status, at, None))
    return segments


def day_of(ts: datetime) -> datetime:
    """Start of the UTC day holding ``ts``."""
    return ts.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
