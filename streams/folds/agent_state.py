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

Cost: :func:`apply` keeps the state's derived data (calls, sessions, the timeline's span
deltas and segments) up to date in place and hands it on to the new state, so folding an
event costs what it changes (its call, the segments from the earliest point it moves), not
the kept history; :func:`state_changes` compares only those segments. The ``*_full``
functions recompute everything from the events: they are the reference, and what a state
decoded from the table (no derived data yet) falls back to.
"""

from __future__ import annotations

import json
import weakref
from bisect import bisect_left, insort
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from ingest.events import CALL_TYPES, Event, EventType, from_dict, to_json
from ingest.phone import is_extension
from streams.agent_records import AgentStateChange, AgentStatus

__all__ = [
    "STATE_FORMAT",
    "Step",
    "derived_of",
    "round_trips",
    "step_between",
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
    "without_event",
    "resend_since",
    "resent_changes",
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
        derived = _attached(self)
        if derived is not None:
            return derived.newest
        return max((ev.ts for ev in self.events), default=None)

    def has(self, event_id: str) -> bool:
        derived = _attached(self)
        if derived is not None:
            return event_id in derived.ids
        return any(ev.event_id == event_id for ev in self.events)

    def to_dict(self) -> dict[str, Any]:
        """The table value. Each event's JSON form is computed once per derived state and
        the dicts are shared between successive values (table values are never mutated)."""
        derived = _attached(self)
        events = (derived.json_events(self.events) if derived is not None
                  else [_event_json(ev) for ev in self.events])
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


def _event_json(ev: Event) -> dict[str, Any]:
    """An event as the table value holds it (the wire JSON, decoded): done once per event."""
    return json.loads(to_json(ev))


def round_trips(state: AgentState, event: Event) -> bool:
    """Whether ``event``, as ``state.to_dict()`` stores it, decodes back equal.

    Events on the wire have millisecond timestamps, so they do; an in-memory event with
    microseconds would come back truncated from the table, and a state cached across
    events must then be dropped to give what decoding the table value gives.
    """
    derived = _attached(state)
    at = bisect_left(state.events, _order(event), key=_order)
    if at == len(state.events) or state.events[at] is not event:
        return False
    raw = derived.json[at] if derived is not None and derived.json is not None else None
    return from_dict(raw if raw is not None else _event_json(event)) == event


def _concerns(state: AgentState, ev: Event) -> bool:
    return ev.tenant == state.tenant and f"{ev.tenant}:{state.agent}" in agent_keys(ev)


def apply(state: AgentState, event: Event, config: AgentConfig = DEFAULT_CONFIG) -> AgentState:
    """Fold one event in; a repeat, an unrelated or a too-late event returns ``state`` itself.

    The work is proportional to what the event changes, not to the kept history: the
    state's derived data (:class:`_Derived`) moves on to the new state and is updated in
    place, and the new state remembers what changed (:class:`Step`) for
    :func:`state_changes` and ``agent_stats.stats_changes``.
    """
    if not _concerns(state, event):
        return state
    derived = _derived_for(state, config)
    if event.event_id in derived.ids:
        return state
    limit = _day_cutoff(derived.newest, config)
    if limit is not None and event.ts < limit and event.call_id not in derived.call_events:
        return state  # older than the kept history: nothing left to revise it against
    at = bisect_left(state.events, _order(event), key=_order)
    events = (*state.events[:at], event, *state.events[at:])
    new = AgentState(state.tenant, state.agent, events, state.accepted + 1)
    new_limit = _day_cutoff(max(event.ts, derived.newest or event.ts), config)
    # _prune (O(history)) can only drop events before the cutoff. If the state already was
    # a fixed point of it under this cutoff and the event is not older, nothing can drop:
    # the event only makes its own call unfinished and leaves earlier sessions as they were.
    if new_limit is not None and events[0].ts < new_limit and not (
            derived.clean_limit == new_limit and event.ts >= new_limit):
        pruned = _prune(new, config)
        if len(pruned.events) != len(events):
            return _rebuilt(state, pruned, derived, config)
    derived.clean_limit = new_limit
    return _hand_over(state, new, derived, derived.add(event, at, state))


def fold(tenant: str, agent: str, events: Iterable[Event],
         config: AgentConfig = DEFAULT_CONFIG) -> AgentState:
    """Fold a whole sequence, as a replay does."""
    state = AgentState(tenant, agent)
    for event in events:
        state = apply(state, event, config)
    return state


def cutoff(state: AgentState, config: AgentConfig = DEFAULT_CONFIG) -> datetime | None:
    """Start of the UTC day ``retention`` before the newest event; records start here."""
    return _day_cutoff(state.newest, config)


def _day_cutoff(newest: datetime | None, config: AgentConfig) -> datetime | None:
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


Cursor = tuple[datetime | None, datetime | None]
"""Where a scan of registrations stands: (start of the open session, its lapse)."""


def _session_step(cursor: Cursor, ev: Event,
                  out: list[tuple[datetime, datetime | None]]) -> Cursor:
    """One registration event of the :func:`sessions` scan; closed sessions go to ``out``."""
    start, lapse = cursor
    if start is not None and lapse is not None and lapse <= ev.ts:
        out.append((start, lapse))
        start = None
    expires = _expires(ev) if ev.type is EventType.AGENT_REGISTERED else 0
    if ev.type is EventType.AGENT_UNREGISTERED or expires == 0:
        if start is not None:
            out.append((start, ev.ts))
        return None, lapse
    start = start if start is not None else ev.ts
    return start, ev.ts + timedelta(seconds=expires) if expires else None


def _session_end(cursor: Cursor, known: datetime | None) -> list[tuple[datetime, datetime | None]]:
    """The session still open after the scan (lapsed once ``known`` is past its lapse)."""
    start, lapse = cursor
    if start is None:
        return []
    lapses = lapse is not None and known is not None and lapse <= known
    return [(start, lapse if lapses else None)]


def sessions(state: AgentState) -> list[tuple[datetime, datetime | None]]:
    """Logged-in periods ``[start, end)``; end None while the agent is still registered."""
    out: list[tuple[datetime, datetime | None]] = []
    cursor: Cursor = (None, None)
    for ev in (e for e in state.events if e.type in _REGISTRATIONS):
        cursor = _session_step(cursor, ev, out)
    return out + _session_end(cursor, state.newest)


@dataclass(frozen=True)
class Segment:
    """One stretch of a single state: ``[since, until)``, until None for the current one."""

    state: AgentStatus
    since: datetime
    until: datetime | None


Span = tuple[str, datetime, datetime | None]
"""(kind, start, end): kind session, ring, talk, wrap, or mark (a point, no state)."""


def _call_spans(call: AgentCall, config: AgentConfig) -> list[Span]:
    spans: list[Span] = []
    if call.ring_start is not None:
        spans.append(("ring", call.ring_start, call.ring_end))
    if call.talk_start is not None:
        spans.append(("talk", call.talk_start, call.talk_end))
        if call.talk_end is not None and config.wrap_up_ms > 0:
            spans.append(("wrap", call.talk_end, call.talk_end + config.wrap_up_ms * _MS))
    return spans


def _spans(state: AgentState, config: AgentConfig) -> list[Span]:
    spans: list[Span] = [("session", start, end) for start, end in sessions(state)]
    for call in calls(state):
        spans += _call_spans(call, config)
    # an unregister with no known registration still says "offline from here"
    spans += [("mark", ev.ts, ev.ts) for ev in state.events
              if ev.type is EventType.AGENT_UNREGISTERED]
    return spans


def _status_of(session: int, ring: int, talk: int, wrap: int) -> AgentStatus:
    """The state while that many spans of each kind are active (priority order)."""
    if talk > 0:
        return AgentStatus.ON_CALL
    if ring > 0:
        return AgentStatus.RINGING
    if session <= 0:
        return AgentStatus.OFFLINE
    return AgentStatus.WRAP_UP if wrap > 0 else AgentStatus.AVAILABLE


def _status(active: dict[str, int]) -> AgentStatus:
    return _status_of(active["session"], active["ring"], active["talk"], active["wrap"])


def timeline(state: AgentState, config: AgentConfig = DEFAULT_CONFIG) -> list[Segment]:
    """The agent's states from its first known event on, adjacent equal states merged."""
    derived = _attached(state, config)
    if derived is not None:
        return list(derived.segments)
    return _timeline_full(state, config)


def _timeline_full(state: AgentState, config: AgentConfig) -> list[Segment]:
    """:func:`timeline` recomputed from every event (the reference the derived data matches)."""
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


def _visible(segments: Iterable[Segment], limit: datetime | None) -> dict[datetime, Segment]:
    return {s.since: s for s in segments if limit is None or s.until is None or s.until > limit}


def state_changes(old: AgentState, new: AgentState,
                  config: AgentConfig = DEFAULT_CONFIG) -> list[AgentStateChange]:
    """Segments that ``new`` adds, changes or retracts compared with ``old`` (from the cutoff).

    When ``new`` came from ``old`` through :func:`apply`, only the segments from the first
    one the event could change are compared: the ones before are the same objects.
    """
    if new is old:
        return []
    limit = cutoff(new, config)
    step = step_between(old, new, config)
    if step is not None:
        before, after = _visible(step.old_tail, limit), _visible(step.new_tail, limit)
    else:
        before = _visible(timeline(old, config), limit)
        after = _visible(timeline(new, config), limit)
    out = [AgentStateChange(new.tenant, new.agent, s.since, s.state, s.until, new.accepted)
           for since, s in sorted(after.items()) if before.get(since) != s]
    out += [AgentStateChange(new.tenant, new.agent, s.since, s.state, s.until, new.accepted,
                             deleted=True)
            for since, s in sorted(before.items()) if since not in after]
    return sorted(out, key=lambda c: c.since)


# --- redelivery: what a repeated event sends again -----------------------------------------


def without_event(state: AgentState, event: Event,
                  config: AgentConfig = DEFAULT_CONFIG) -> AgentState | None:
    """``state`` without ``event`` (None if it does not hold it), with its derived data built.

    After a crash between the changelog write and the output, the redelivered event finds
    itself already folded and the state it was folded into is gone. Taking the event out
    again gives that state exactly when the event was the last one folded and folding it
    pruned nothing (the usual crash window); otherwise it is the state as if the event had
    never come, whose differences with ``state`` are still current truth. O(kept history):
    only repeated events pay it.
    """
    if not state.has(event.event_id):
        return None
    events = tuple(ev for ev in state.events if ev.event_id != event.event_id)
    prior = AgentState(state.tenant, state.agent, events, state.accepted - 1)
    _derived_for(prior, config)
    return prior


def resend_since(state: AgentState, event: Event,
                 config: AgentConfig = DEFAULT_CONFIG) -> datetime:
    """Where the records a repeated ``event`` sends again start: the UTC day (the largest
    statistics interval) holding the earlier of the event's time and the newest time of
    the state's other events, and not before the cutoff.

    The event changes the timeline from its own time on, and the counted-up-to time of the
    rows since the previous newest event (``complete_until``, the open segment): both lie
    in this window. Starting on a day boundary makes every interval the event touches
    start inside it.
    """
    newest_other = next((ev.ts for ev in reversed(state.events)
                         if ev.event_id != event.event_id), event.ts)
    earliest = min(event.ts, newest_other).astimezone(UTC)
    day = earliest.replace(hour=0, minute=0, second=0, microsecond=0)
    limit = cutoff(state, config)
    return max(day, limit) if limit is not None else day


def resent_changes(state: AgentState, event: Event, config: AgentConfig = DEFAULT_CONFIG,
                   prior: AgentState | None = None) -> list[AgentStateChange]:
    """The segments a repeated ``event`` sends again ([] if ``state`` does not hold it).

    Every current segment that reaches into :func:`resend_since`'s window, plus what
    :func:`state_changes` finds from ``prior`` (:func:`without_event`, computed if not
    given): the retractions the first delivery sent, and any change reaching back before
    the window (a BYE that rebuilds a lost answer). All at ``state.accepted``: when the event
    was the last folded, exactly the revisions the first delivery produced, and current
    rows in any case, which the warehouse (ReplacingMergeTree on version) takes again.
    """
    if not state.has(event.event_id):
        return []
    since = resend_since(state, event, config)
    out = {s.since: AgentStateChange(state.tenant, state.agent, s.since, s.state, s.until,
                                     state.accepted)
           for s in timeline(state, config) if s.until is None or s.until > since}
    prior = prior if prior is not None else without_event(state, event, config)
    if prior is not None:
        out.update((c.since, c) for c in state_changes(prior, state, config))
    return sorted(out.values(), key=lambda c: c.since)


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


# --- derived data: what apply() keeps up to date so an event costs what it changes --------


_KIND_INDEX = {"session": 0, "ring": 1, "talk": 2, "wrap": 3}
_REFS = 4
"""Index of a point's count of span ends in its delta vector (marks count only here)."""
_ZERO = (0, 0, 0, 0)


@dataclass(frozen=True)
class Step:
    """What one :func:`apply` changed: ``segments[index:]`` of the old and the new timeline
    (the segments before ``index`` are the same) and the calls that changed (call id, new
    AgentCall). ``rebuilt``: events were pruned and everything was recomputed."""

    parent: weakref.ref[AgentState]
    config: AgentConfig
    index: int
    old_tail: tuple[Segment, ...]
    new_tail: tuple[Segment, ...]
    calls: tuple[tuple[str, AgentCall], ...]
    rebuilt: bool = False
    newest_before: datetime | None = None
    """The old state's newest event time (the new one's is ``derived.newest``): the
    intervals between the two are the ones whose ``complete_until`` moved."""


class _Derived:
    """Calls, sessions, span deltas and the timeline of one state, updated in place.

    It belongs to exactly one :class:`AgentState` (attribute ``_derived``); :func:`apply`
    hands it on to the new state, so an old state that is folded again rebuilds its own
    (correct, only slower). Every field is a function of the state's events, ``config``
    and the newest event time, equal to what the ``*_full`` functions compute from scratch.
    """

    def __init__(self, agent: str, config: AgentConfig) -> None:
        self.agent = agent
        self.config = config
        self.ids: set[str] = set()
        self.newest: datetime | None = None
        self.call_events: dict[str, list[Event]] = {}
        self.calls: dict[str, AgentCall] = {}
        self.regs: list[Event] = []
        self.checkpoints: list[tuple[Cursor, int]] = []
        """After each of ``regs``: the scan cursor and how many sessions were closed."""
        self.closed: list[tuple[datetime, datetime | None]] = []
        self.sessions: list[tuple[datetime, datetime | None]] = []
        self.deltas: dict[datetime, list[int]] = {}
        self.points: list[datetime] = []
        self.prefix: list[tuple[int, int, int, int]] = []
        """Active spans per kind after each point (the sweep's running counters)."""
        self.segments: list[Segment] = []
        self.clean_limit: datetime | None = None
        """The cutoff under which the events are known to be a fixed point of _prune."""
        self.json: list[dict[str, Any]] | None = None

    @classmethod
    def build(cls, state: AgentState, config: AgentConfig) -> _Derived:
        """From scratch, O(events): after a restart, a rebalance or a prune."""
        derived = cls(state.agent, config)
        for ev in state.events:
            derived.ids.add(ev.event_id)
            if ev.type in CALL_TYPES and ev.call_id:
                derived.call_events.setdefault(ev.call_id, []).append(ev)
            if ev.type in _REGISTRATIONS:
                derived.regs.append(ev)
        derived.newest = max((ev.ts for ev in state.events), default=None)
        derived.calls = {cid: _call(state.agent, cid, evs)
                         for cid, evs in derived.call_events.items()}
        derived._rescan(0)
        derived.sessions = derived.closed + _session_end(derived._cursor(), derived.newest)
        spans = [("session", start, end) for start, end in derived.sessions]
        for call in derived.calls.values():
            spans += _call_spans(call, config)
        spans += [("mark", ev.ts, ev.ts) for ev in derived.regs
                  if ev.type is EventType.AGENT_UNREGISTERED]
        derived._change_spans(spans, [])
        derived._resweep(0)
        return derived

    def json_events(self, events: Sequence[Event]) -> list[dict[str, Any]]:
        """The events' JSON dicts, computed once each (the table value's ``events``)."""
        if self.json is None:
            self.json = [_event_json(ev) for ev in events]
        return list(self.json)

    def add(self, event: Event, at: int, parent: AgentState) -> Step:
        """Fold ``event`` (at index ``at`` of the new events) into ``parent``'s data."""
        newest_before = self.newest
        self.ids.add(event.event_id)
        self.newest = event.ts if self.newest is None else max(self.newest, event.ts)
        if self.json is not None:
            self.json.insert(at, _event_json(event))
        added: list[Span] = []
        removed: list[Span] = []
        changed: list[tuple[str, AgentCall]] = []
        if event.type in CALL_TYPES and event.call_id:
            changed += self._add_call_event(event, added, removed)
        closed_before = len(self.closed)
        if event.type in _REGISTRATIONS:
            closed_before = self._add_registration(event)
            if event.type is EventType.AGENT_UNREGISTERED:
                added.append(("mark", event.ts, event.ts))
        sessions = self.closed + _session_end(self._cursor(), self.newest)
        before, after = self.sessions[closed_before:], sessions[closed_before:]
        if before != after:  # usually equal: the open session goes on
            gone, new = Counter(before) - Counter(after), Counter(after) - Counter(before)
            removed += [("session", start, end) for start, end in gone.elements()]
            added += [("session", start, end) for start, end in new.elements()]
        self.sessions = sessions
        return self._step(added, removed, changed, parent, newest_before)

    def _add_call_event(self, event: Event, added: list[Span],
                        removed: list[Span]) -> list[tuple[str, AgentCall]]:
        call_id = event.call_id
        assert call_id
        insort(self.call_events.setdefault(call_id, []), event, key=_order)
        old = self.calls.get(call_id)
        new = _call(self.agent, call_id, self.call_events[call_id])
        self.calls[call_id] = new
        if old == new:
            return []
        before = Counter(_call_spans(old, self.config) if old is not None else [])
        after = Counter(_call_spans(new, self.config))
        removed += (before - after).elements()
        added += (after - before).elements()
        return [(call_id, new)]

    def _add_registration(self, event: Event) -> int:
        """Insert a registration and rescan from it; how many sessions closed before it."""
        at = bisect_left(self.regs, _order(event), key=_order)
        self.regs.insert(at, event)
        del self.checkpoints[at:]
        closed_before = self.checkpoints[at - 1][1] if at else 0
        del self.closed[closed_before:]
        self._rescan(at)
        return closed_before

    def _cursor(self) -> Cursor:
        return self.checkpoints[-1][0] if self.checkpoints else (None, None)

    def _rescan(self, at: int) -> None:
        """Continue the :func:`sessions` scan from registration ``at`` (checkpoints before)."""
        cursor = self.checkpoints[at - 1][0] if at else (None, None)
        for ev in self.regs[at:]:
            cursor = _session_step(cursor, ev, self.closed)
            self.checkpoints.append((cursor, len(self.closed)))

    def _step(self, added: list[Span], removed: list[Span],
              changed: list[tuple[str, AgentCall]], parent: AgentState,
              newest_before: datetime | None) -> Step:
        """Apply the span changes, resweep the timeline from the earliest changed point."""
        last = max(len(self.segments) - 1, 0)  # the open segment grows with ``newest``
        index = last
        old = self.segments
        earliest = self._change_spans(added, removed)
        if earliest is not None:
            index = min(last, max(bisect_left(old, earliest, key=lambda s: s.since) - 1, 0))
            old = list(old)
            self._resweep(bisect_left(self.points, earliest), earliest)
        return Step(weakref.ref(parent), self.config, index, tuple(old[index:]),
                    tuple(self.segments[index:]), tuple(changed), newest_before=newest_before)

    def _change_spans(self, added: list[Span], removed: list[Span]) -> datetime | None:
        """Add/remove span ends to the point deltas; the earliest point touched."""
        earliest: datetime | None = None
        for spans, sign in ((added, 1), (removed, -1)):
            for kind, start, end in spans:
                index = _KIND_INDEX.get(kind)
                self._touch(start, index, sign, sign)
                if end is not None:
                    self._touch(end, index, -sign, sign)
                if earliest is None or start < earliest:
                    earliest = start
                if end is not None and end < earliest:
                    earliest = end
        return earliest

    def _touch(self, at: datetime, index: int | None, delta: int, refs: int) -> None:
        vector = self.deltas.get(at)
        if vector is None:
            vector = self.deltas[at] = [0, 0, 0, 0, 0]
            where = bisect_left(self.points, at)
            self.points.insert(where, at)
            self.prefix.insert(where, _ZERO)
        if index is not None:
            vector[index] += delta
        vector[_REFS] += refs
        if vector[_REFS] == 0:
            del self.deltas[at]
            where = bisect_left(self.points, at)
            del self.points[where]
            del self.prefix[where]

    def _resweep(self, first: int, since: datetime | None = None) -> None:
        """Recompute counters from point ``first`` on and the segments from ``since`` on,
        exactly as :func:`_timeline_full`'s loop would continue from there."""
        keep = 0 if since is None else bisect_left(self.segments, since, key=lambda s: s.since)
        segments = self.segments[:keep]
        if segments:
            segments[-1] = replace(segments[-1], until=None)
        session, ring, talk, wrap = self.prefix[first - 1] if first else _ZERO
        for i in range(first, len(self.points)):
            at = self.points[i]
            d = self.deltas[at]
            session, ring, talk, wrap = session + d[0], ring + d[1], talk + d[2], wrap + d[3]
            self.prefix[i] = (session, ring, talk, wrap)
            status = _status_of(session, ring, talk, wrap)
            if segments and segments[-1].state is status:
                continue
            if segments:
                segments[-1] = replace(segments[-1], until=at)
            segments.append(Segment(status, at, None))
        self.segments = segments


def _attached(state: AgentState, config: AgentConfig | None = None) -> _Derived | None:
    """The state's derived data, if it has some (for ``config``, when given)."""
    derived: _Derived | None = state.__dict__.get("_derived")
    if derived is None or (config is not None and derived.config != config):
        return None
    return derived


def derived_of(state: AgentState, config: AgentConfig) -> _Derived | None:
    """For ``agent_stats``: the state's calls/segments/newest if they are attached."""
    return _attached(state, config)


def _derived_for(state: AgentState, config: AgentConfig) -> _Derived:
    derived = _attached(state, config)
    if derived is None:
        derived = _Derived.build(state, config)
        object.__setattr__(state, "_derived", derived)
    return derived


def step_between(old: AgentState, new: AgentState, config: AgentConfig) -> Step | None:
    """What :func:`apply` changed from ``old`` to ``new``, if ``new`` came from ``old``."""
    step: Step | None = new.__dict__.get("_step")
    if step is None or step.parent() is not old or step.config != config:
        return None
    return step


def _hand_over(old: AgentState, new: AgentState, derived: _Derived, step: Step) -> AgentState:
    """Move the derived data from ``old`` to ``new`` and remember the step between them."""
    object.__setattr__(old, "_derived", None)
    object.__setattr__(old, "_step", None)  # nobody compares with old's parent any more
    object.__setattr__(new, "_derived", derived)
    object.__setattr__(new, "_step", step)
    return new


def _rebuilt(old: AgentState, new: AgentState, derived: _Derived,
             config: AgentConfig) -> AgentState:
    """After a prune dropped events: recompute everything (once a day per agent)."""
    fresh = _Derived.build(new, config)
    step = Step(weakref.ref(old), config, 0, tuple(derived.segments), tuple(fresh.segments),
                tuple(fresh.calls.items()), rebuilt=True, newest_before=derived.newest)
    return _hand_over(old, new, fresh, step)
