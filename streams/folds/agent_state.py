"""Agent state: fold an agent's registrations and calls into a timeline of states.

One state per agent (an extension), keyed ``tenant:agent``. Like the call fold, the
state is the set of distinct events that concern the agent, sorted by event time; the
timeline is *interpreted* from that set, so any arrival order of the same events gives
the same timeline, and a replay gives the same records. No wall-clock time is read.

    state = AgentState("acme", "101")
    for event in events:                       # call.* and agent.* events of extension 101
        state = apply(state, event)
    timeline(state)                            # [Segment(AVAILABLE, since, until), ...]
    state_changes(old, new)                    # AgentStateChange revisions to publish

Which events concern agent A (:func:`agent_keys`): ``agent.*`` events of A; call events
whose ``callee`` is A (the dialled extension: A rings), whose ``agent`` is A (A answered)
or whose ``caller`` is A (A placed the call). Every event of a call carries the parties,
so the whole call reaches every extension involved (an internal call reaches both).

States and their priority when they overlap (two calls at once, a call while not
registered): on_call > ringing > wrap_up > available > offline.

- logged in (a *session*): from ``agent.registered`` until ``agent.unregistered``, a
  REGISTER with ``expires`` 0, or the registration lapsing at ts + ``expires`` without a
  refresh. A lapse only counts once the agent's newest event is past it (event time).
- ringing: from the first ``call.ringing`` whose callee is A to the call's first answer,
  failure, cancel or end.
- on_call: from ``call.answered`` to ``call.ended``, for the answering agent and for an
  extension that placed the call. (A lost answer is rebuilt from ``duration_ms``.)
- wrap_up: ``wrap_up_ms`` after each call A talked on (default 0: no wrap-up), if logged in.

Bounded state: events older than ``retention`` before the agent's newest event (floored
to a UTC day, the *cutoff*) are dropped, except those still needed to know the state at
the cutoff (the current session's registrations, unfinished calls, the last call before
the cutoff). Records are only (re)computed from the cutoff on, and an event older than
the cutoff that no kept call needs is ignored: order-independence holds for events that
arrive within ``retention`` of the agent's newest event.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from ingest.events import CALL_TYPES, Event, EventType, from_dict, to_json
from ingest.phone import is_extension
from streams.agent_records import AgentStateChange, AgentStatus

__all__ = [
    "STATE_FORMAT",
    "AgentConfig",
    "AgentState",
    "AgentCall",
    "Segment",
    "agent_keys",
    "apply",
    "fold",
    "cutoff",
    "calls",
    "sessions",
    "timeline",
    "state_changes",
]

STATE_FORMAT = 1
_MS = timedelta(milliseconds=1)

_RANK = {
    EventType.AGENT_REGISTERED: 0, EventType.CALL_OFFERED: 1, EventType.CALL_RINGING: 2,
    EventType.CALL_ANSWERED: 3, EventType.CALL_FAILED: 4, EventType.CALL_CANCELLED: 4,
    EventType.CALL_ENDED: 5, EventType.AGENT_UNREGISTERED: 6,
}
_FOLDED = frozenset(_RANK)
_REGISTRATIONS = frozenset({EventType.AGENT_REGISTERED, EventType.AGENT_UNREGISTERED})
_RING_ENDS = frozenset({EventType.CALL_ANSWERED, EventType.CALL_FAILED,
                        EventType.CALL_CANCELLED, EventType.CALL_ENDED})


@dataclass(frozen=True)
class AgentConfig:
    """Rules that are a matter of policy, not of the events.

        AgentConfig(wrap_up_ms=15_000)   # 15 s of after-call work after every call
    """

    wrap_up_ms: int = 0
    """After-call work counted after each call the agent talked on; 0 = no wrap-up state."""
    retention: timedelta = timedelta(days=2)
    """How far behind the agent's newest event the state keeps (and revises) history."""


DEFAULT_CONFIG = AgentConfig()


def agent_keys(event: Event) -> list[str]:
    """The ``tenant:agent`` keys of every extension the event concerns (sorted, distinct)."""
    if event.type in _REGISTRATIONS:
        return [f"{event.tenant}:{event.agent}"]
    if event.type not in _FOLDED:
        return []
    parties = {p for p in (event.caller, event.callee, event.agent) if p and is_extension(p)}
    return sorted(f"{event.tenant}:{p}" for p in parties)


@dataclass(frozen=True)
class AgentState:
    """The distinct events of one agent in event-time order; the value of the agents table.

        state = AgentState.from_dict(row) if row is not None else AgentState("acme", "101")
    """

    tenant: str
    agent: str
    events: tuple[Event, ...] = ()
    accepted: int = 0
    """Distinct events ever folded in (pruned ones too): the version of what is emitted."""

    @property
    def key(self) -> str:
        return f"{self.tenant}:{self.agent}"

    @property
    def newest(self) -> datetime | None:
        """The agent's newest event time: what is known so far, in event time."""
        return max((ev.ts for ev in self.events), default=None)

    def has(self, event_id: str) -> bool:
        return any(ev.event_id == event_id for ev in self.events)

    def to_dict(self) -> dict[str, Any]:
        events = [json.loads(to_json(ev)) for ev in self.events]
        return {"format": STATE_FORMAT, "tenant": self.tenant, "agent": self.agent,
                "accepted": self.accepted, "events": events}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AgentState:
        if data.get("format") != STATE_FORMAT:
            raise ValueError(f"agent state: unknown format {data.get('format')!r}")
        events = tuple(sorted((from_dict(ev) for ev in data["events"]), key=_order))
        return cls(data["tenant"], data["agent"], events, int(data["accepted"]))


def _order(ev: Event) -> tuple[datetime, int, str]:
    return (ev.ts, _RANK.get(ev.type, 9), ev.event_id)


def _concerns(state: AgentState, ev: Event) -> bool:
    return ev.tenant == state.tenant and f"{ev.tenant}:{state.agent}" in agent_keys(ev)


def apply(state: AgentState, event: Event, config: AgentConfig = DEFAULT_CONFIG) -> AgentState:
    """Fold one event in; a repeat, an unrelated or a too-late event returns ``state`` itself."""
    if not _concerns(state, event) or state.has(event.event_id):
        return state
    limit = cutoff(state, config)
    kept_calls = {ev.call_id for ev in state.events if ev.type in CALL_TYPES}
    if limit is not None and event.ts < limit and event.call_id not in kept_calls:
        return state  # older than the kept history: nothing left to revise it against
    events = tuple(sorted((*state.events, event), key=_order))
    return _prune(replace(state, events=events, accepted=state.accepted + 1), config)


def fold(tenant: str, agent: str, events: Iterable[Event],
         config: AgentConfig = DEFAULT_CONFIG) -> AgentState:
    """Fold a whole sequence, as a replay does."""
    state = AgentState(tenant, agent)
    for event in events:
        state = apply(state, event, config)
    return state


def cutoff(state: AgentState, config: AgentConfig = DEFAULT_CONFIG) -> datetime | None:
    """Start of the UTC day ``retention`` before the newest event; records start here."""
    newest = state.newest
    if newest is None:
        return None
    day = (newest - config.retention).astimezone(UTC)
    return day.replace(hour=0, minute=0, second=0, microsecond=0)


# --- interpretation: events -> calls, sessions, timeline ------------------------------------


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


def _first(events: Iterable[Event], *types: EventType) -> Event | None:
    return next((ev for ev in events if ev.type in types), None)


def _call(agent: str, call_id: str, events: list[Event]) -> AgentCall:
    answer = _first(events, EventType.CALL_ANSWERED)
    end = _first(events, EventType.CALL_ENDED)
    failure = _first(events, EventType.CALL_FAILED, EventType.CALL_CANCELLED)
    ringing = next((ev for ev in events
                    if ev.type is EventType.CALL_RINGING and ev.callee == agent), None)
    ring_start = ringing.ts if ringing else None
    ring_end = None
    if ring_start is not None:
        ring_end = next((ev.ts for ev in events if ev.type in _RING_ENDS and ev.ts >= ring_start),
                        None)
    answered_at, answerer = _answer(events, answer, end)
    placed = any(ev.caller == agent for ev in events)
    talked = answered_at is not None and (answerer == agent or placed)
    return AgentCall(
        call_id=call_id, ring_start=ring_start, ring_end=ring_end,
        talk_start=answered_at if talked else None,
        talk_end=end.ts if talked and end is not None else None,
        answered_by_agent=answered_at is not None and answerer == agent,
        settled=end is not None or (failure is not None and answer is None),
        last_ts=events[-1].ts,
    )


def _answer(events: list[Event], answer: Event | None,
            end: Event | None) -> tuple[datetime | None, str | None]:
    """When the call was answered and by whom; a lost answer is rebuilt from the BYE."""
    if answer is not None:
        return answer.ts, answer.agent or answer.callee
    if end is not None and end.duration_ms is not None:
        return end.ts - end.duration_ms * _MS, end.agent or end.callee
    return None, None


def calls(state: AgentState) -> list[AgentCall]:
    """The agent's calls, in order of their first event."""
    grouped: dict[str, list[Event]] = defaultdict(list)
    for ev in state.events:
        if ev.type in CALL_TYPES and ev.call_id:
            grouped[ev.call_id].append(ev)
    return [_call(state.agent, call_id, evs) for call_id, evs in grouped.items()]


def _expires(ev: Event) -> int | None:
    """The REGISTER's ``expires`` in seconds, or None if absent or unreadable."""
    raw = ev.extra.get("expires")
    try:
        return int(raw) if raw is not None and not isinstance(raw, bool) else None
    except (TypeError, ValueError):
        return None


def sessions(state: AgentState) -> list[tuple[datetime, datetime | None]]:
    """Logged-in periods ``[start, end)``; end None while the agent is still registered."""
    known = state.newest
    out: list[tuple[datetime, datetime | None]] = []
    start: datetime | None = None
    lapse: datetime | None = None
    for ev in (e for e in state.events if e.type in _REGISTRATIONS):
        if start is not None and lapse is not None and lapse <= ev.ts:
            out.append((start, lapse))
            start = None
        expires = _expires(ev) if ev.type is EventType.AGENT_REGISTERED else 0
        if ev.type is EventType.AGENT_UNREGISTERED or expires == 0:
            if start is not None:
                out.append((start, ev.ts))
            start = None
            continue
        start = start if start is not None else ev.ts
        lapse = ev.ts + timedelta(seconds=expires) if expires else None
    if start is not None:
        lapses = lapse is not None and known is not None and lapse <= known
        out.append((start, lapse if lapses else None))
    return out


@dataclass(frozen=True)
class Segment:
    """One stretch of a single state: ``[since, until)``, until None for the current one."""

    state: AgentStatus
    since: datetime
    until: datetime | None


def _spans(state: AgentState, config: AgentConfig) -> list[tuple[str, datetime, datetime | None]]:
    spans: list[tuple[str, datetime, datetime | None]] = [
        ("session", start, end) for start, end in sessions(state)]
    wrap = config.wrap_up_ms * _MS
    for call in calls(state):
        if call.ring_start is not None:
            spans.append(("ring", call.ring_start, call.ring_end))
        if call.talk_start is not None:
            spans.append(("talk", call.talk_start, call.talk_end))
            if call.talk_end is not None and config.wrap_up_ms > 0:
                spans.append(("wrap", call.talk_end, call.talk_end + wrap))
    # an unregister with no known registration still says "offline from here"
    spans += [("mark", ev.ts, ev.ts) for ev in state.events
              if ev.type is EventType.AGENT_UNREGISTERED]
    return spans


def _status(active: dict[str, int]) -> AgentStatus:
    if active["talk"] > 0:
        return AgentStatus.ON_CALL
    if active["ring"] > 0:
        return AgentStatus.RINGING
    if active["session"] <= 0:
        return AgentStatus.OFFLINE
    return AgentStatus.WRAP_UP if active["wrap"] > 0 else AgentStatus.AVAILABLE


def timeline(state: AgentState, config: AgentConfig = DEFAULT_CONFIG) -> list[Segment]:
    """The agent's states from its first known event on, adjacent equal states merged."""
    deltas: dict[datetime, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for kind, start, end in _spans(state, config):
        deltas[start][kind] += 1
        if end is not None:
            deltas[end][kind] -= 1
    active: dict[str, int] = defaultdict(int)
    segments: list[Segment] = []
    for at in sorted(deltas):
        for kind, delta in deltas[at].items():
            active[kind] += delta
        status = _status(active)
        if segments and segments[-1].state is status:
            continue
        if segments:
            segments[-1] = replace(segments[-1], until=at)
        segments.append(Segment(status, at, None))
    return segments


# --- output: timeline -> state-change revisions ---------------------------------------------


def _visible(state: AgentState, config: AgentConfig,
             limit: datetime | None) -> dict[datetime, Segment]:
    return {s.since: s for s in timeline(state, config)
            if limit is None or s.until is None or s.until > limit}


def state_changes(old: AgentState, new: AgentState,
                  config: AgentConfig = DEFAULT_CONFIG) -> list[AgentStateChange]:
    """Segments that ``new`` adds, changes or retracts compared with ``old`` (from the cutoff)."""
    if new is old:
        return []
    limit = cutoff(new, config)
    before, after = _visible(old, config, limit), _visible(new, config, limit)
    out = [AgentStateChange(new.tenant, new.agent, s.since, s.state, s.until, new.accepted)
           for since, s in sorted(after.items()) if before.get(since) != s]
    out += [AgentStateChange(new.tenant, new.agent, s.since, s.state, s.until, new.accepted,
                             deleted=True)
            for since, s in sorted(before.items()) if since not in after]
    return sorted(out, key=lambda c: c.since)


# --- pruning ---------------------------------------------------------------------------------


def _prune(state: AgentState, config: AgentConfig) -> AgentState:
    """Drop history before the cutoff that the state at the cutoff no longer needs."""
    limit = cutoff(state, config)
    if limit is None or state.events[0].ts >= limit:
        return state
    keep_calls = _calls_to_keep(state, limit)
    keep_from = _registrations_from(state, limit)
    events = tuple(
        ev for ev in state.events
        if ev.ts >= limit
        or (ev.type in _REGISTRATIONS and keep_from is not None and ev.ts >= keep_from)
        or (ev.type in CALL_TYPES and ev.call_id in keep_calls))
    return replace(state, events=events)


def _calls_to_keep(state: AgentState, limit: datetime) -> set[str]:
    """Unfinished calls, calls reaching past the cutoff, and the last call before it."""
    done = [c for c in calls(state) if c.settled and c.last_ts < limit]
    keep = {c.call_id for c in calls(state)} - {c.call_id for c in done}
    if done:
        keep.add(max(done, key=lambda c: (c.last_ts, c.call_id)).call_id)
    return keep


def _registrations_from(state: AgentState, limit: datetime) -> datetime | None:
    """Registrations from the start of the last session begun before the cutoff are kept."""
    starts = [start for start, _ in sessions(state) if start < limit]
    last_reg = [ev.ts for ev in state.events if ev.type in _REGISTRATIONS and ev.ts < limit]
    candidates = [*starts[-1:], *last_reg[-1:]]
    return min(candidates) if candidates else None
