"""Agent state: fold an agent's registrations and calls into a bounded row.

One row per agent (an extension), keyed ``tenant:agent``: the value of the agents table.
It holds what is not final yet and summaries of what is, never the agent's history, so
its size does not grow with the agent's calls (a busy agent's row is tens of KB)::

    state = AgentState("acme", "101")
    for event in events:                       # call.* and agent.* events of extension 101
        new = apply(state, event)              # a new row; ``state`` is left as it was
        state_changes(state, new)              # AgentStateChange revisions to publish
        state = new                            # (agent_stats.stats_changes: interval rows)

The rules that turn events into calls, sessions and a timeline of states are in
:mod:`streams.folds.agent_timeline`; which extensions an event concerns in :func:`agent_keys`.

What the row holds (:class:`AgentState`):

- the *frontier*: a point ``horizon`` (5 minutes by default) of event time behind the
  agent's newest event, floored to the minute, held back (at most ``late_window``) to the
  first event of an open call not yet answered, whose BYE may still rebuild a lost answer
  back to there. What lies before it is final;
- the timeline from the frontier on (``segments``; the first may have begun before it)
  and the registration scan's position at the frontier (``cursor``);
- open items: registrations at or after the frontier, calls not finished (a call is
  finished once settled and all its events are before the frontier), the spans of
  finished calls still running at the frontier (a wrap-up), and for ``late_window``
  (1 hour) the ids of finished calls, to recognise their late or repeated events;
- the counters of every interval that can still change (``counts``: the statistics
  rows, see ``agent_stats``), the ``accepted`` count (the records' version) and
  counters of late, dropped and trimmed events.

What is guaranteed for late events (an event is late by how far its time lies behind
the agent's newest event when it arrives):

- **Within the horizon** (at or after the frontier): exact. Any arrival order of the same
  events gives the same rows and the same published records, equal to those of folding
  every event kept for ever (``tests/streams/test_agent_folds.py`` holds it to the
  records the unbounded fold published). A repeated event is recognised.
- **Beyond the horizon, within ``late_window``** (a call event only): the call is counted
  where it belongs - offered/answered/missed in the interval where it rang, handled where
  its talk ended, those rows are published again - but the state timeline before the
  frontier is final: the call's time shows from the frontier on only (a call entirely
  before it adds no state time). A manager's call counts stay right; a timeline already
  shown is not rewritten. Counted in ``late``.
- **Older**, a late registration, or a new event of a call already finished: dropped,
  counted in ``dropped`` (the agent logs each one). Their intervals' final rows stand.

A hard guard (:func:`guard`) keeps a row that would still grow past ``max_row_bytes``
(e.g. hundreds of calls ringing at once) from reaching Kafka's message limit: it is
trimmed deterministically, each step output-neutral (no published record changes), and
counted in ``trimmed``. No wall-clock time is read anywhere: a replay gives the same rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from core import timezones
from core.agent_records import AgentStateChange, AgentStatus, IntervalKind
from core.events import CALL_TYPES, Event, EventType, from_dict
from core.phone import is_extension
from streams.folds.agent_intervals import (
    Counts,
    Key,
    add_parts,
    call_parts,
    interval_end,
    segment_parts,
)
from streams.folds.agent_timeline import (
    REGISTRATIONS,
    AgentCall,
    Cursor,
    Fact,
    Segment,
    Span,
    call_of,
    call_spans,
    day_of,
    fact_of,
    order,
    scan_sessions,
    session_end,
    sweep,
    unsettled_dialogs,
)

__all__ = [
    "STATE_FORMAT",
    "Admission",
    "AgentConfig",
    "AgentState",
    "AgentCall",
    "Segment",
    "agent_keys",
    "admit",
    "apply",
    "fold",
    "compact",
    "guard",
    "row_size",
    "calls",
    "timeline",
    "state_changes",
    "without_event",
    "resend_since",
    "resent_changes",
    "touched_since",
    "rebased",
]

STATE_FORMAT = 2
"""Format 1 rows (every event of two days) are upgraded on read by folding their events."""
FRONTIER_STEP = timedelta(minutes=1)
"""The frontier moves in whole minutes: finished items are let go at most once a minute."""
_ANSWER_OR_SETTLED = frozenset({EventType.CALL_ANSWERED, EventType.CALL_ENDED,
                                EventType.CALL_FAILED, EventType.CALL_CANCELLED})
"""A call with one of these is answered or settled (a failure after an answer is not
settled, but its answer is known: no BYE can move it back)."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_FOLDED = frozenset({*REGISTRATIONS, EventType.CALL_OFFERED, EventType.CALL_RINGING,
                     EventType.CALL_ANSWERED, EventType.CALL_FAILED,
                     EventType.CALL_CANCELLED, EventType.CALL_ENDED})


@dataclass(frozen=True)
class AgentConfig:
    """Rules that are a matter of policy, not of the events.

        AgentConfig(wrap_up_ms=15_000)   # 15 s of after-call work after every call
    """

    wrap_up_ms: int = 0
    """After-call work counted after each call the agent talked on; 0 = no wrap-up state."""
    horizon: timedelta = timedelta(minutes=5)
    """Lateness horizon: events up to this far (event time) behind the agent's newest one
    are folded exactly, in any order; before it the row keeps summaries only."""
    late_window: timedelta = timedelta(hours=1)
    """Beyond the horizon, a late call is still counted into its intervals this long."""
    max_row_bytes: int = 256_000
    """The guard trims a row whose JSON would exceed this (Kafka refuses 1 MB messages)."""
    time_zones: tuple[tuple[str, str], ...] = ()
    """Tenant -> IANA zone pairs from provisioning: intervals are local to the tenant."""
    default_time_zone: str = "UTC"
    """Zone of a tenant not in ``time_zones``."""

    def zone(self, tenant: str) -> ZoneInfo:
        """The tenant's zone, in which its 15-minute, hour and day intervals are cut."""
        return timezones.zone(dict(self.time_zones).get(tenant, self.default_time_zone))


DEFAULT_CONFIG = AgentConfig()


class Admission(StrEnum):
    """What :func:`apply` does with an event (the agent logs the late ones)."""

    UNRELATED = "unrelated"
    REPEAT = "repeat"
    ON_TIME = "on_time"
    LATE = "late"
    """Beyond the horizon, within the late window: counted, timeline from the frontier."""
    FINISHED = "finished"
    """A new event of a call the row has finished: dropped."""
    TOO_LATE = "too_late"
    """Older than the late window, or a registration beyond the horizon: dropped."""


def agent_keys(event: Event) -> list[str]:
    """The ``tenant:agent`` keys of every extension the event concerns (sorted, distinct).

    From the event alone (the edge attributes it, ``ingest.events``): the agent it names
    (the leg's target: who rings, answered, lost the race), the extension that placed the
    call and the extension dialled - but never the group the call rings through (a group
    may have a number like an extension's). The callee of an inbound call is a DID: there
    ``agent`` alone names who rang and talked."""
    if event.type in REGISTRATIONS:
        return [f"{event.tenant}:{event.agent}"]
    if event.type not in _FOLDED:
        return []
    callee = event.callee if event.callee != event.extra.get("group") else None
    parties = {p for p in (event.caller, callee, event.agent) if p and is_extension(p)}
    return sorted(f"{event.tenant}:{p}" for p in parties)


@dataclass(frozen=True)
class AgentState:
    """One agent's row: open items and summaries (module docstring). Never mutated.

        state = AgentState.from_dict(row) if row is not None else AgentState("acme", "101")
    """

    tenant: str
    agent: str
    accepted: int = 0
    """Distinct events folded in: the version of what is emitted."""
    newest: datetime | None = None
    """The agent's newest event time: what is known so far, in event time."""
    previous_newest: datetime | None = None
    """``newest`` before it last moved (where a repeat of the newest event resends from)."""
    frontier: datetime | None = None
    counts_from: datetime | None = None
    """Intervals ending by here were let go (their final rows were published)."""
    cursor: Cursor = (None, None)
    registrations: tuple[Fact, ...] = ()
    calls: Mapping[str, tuple[Fact, ...]] = field(default_factory=dict)
    carry: tuple[Span, ...] = ()
    finished: Mapping[str, datetime] = field(default_factory=dict)
    """Finished calls (id -> last event time) for ``late_window`` behind the frontier."""
    segments: tuple[Segment, ...] = ()
    counts: Mapping[Key, tuple[int, ...]] = field(default_factory=dict)
    late: int = 0
    dropped: int = 0
    trimmed: int = 0

    @property
    def key(self) -> str:
        return f"{self.tenant}:{self.agent}"

    def has(self, event_id: str, call_id: str | None = None) -> bool:
        """Whether the row holds the event (an open item's); ``call_id`` narrows the search."""
        groups: Iterable[tuple[Fact, ...]] = (
            [self.calls.get(call_id, ())] if call_id is not None
            else [self.registrations, *self.calls.values()])
        return any(f.event_id == event_id for facts in groups for f in facts)

    def to_dict(self, prior: tuple[AgentState, dict[str, Any]] | None = None
                ) -> dict[str, Any]:
        """The table value: JSON types only, times as epoch milliseconds.

        ``prior`` (a state and the value it was written as or read from) lends the
        encodings of the calls whose facts are the very same tuples: one event changes
        one call of a busy agent's row, and encoding every call's facts again was a
        quarter of the agent stage's time (cProfile, an agent taking 5 calls/s); so do the
        segments and the finished calls, re-encoded on every event of a busy agent."""
        if prior is not None and prior[1].get("format") != STATE_FORMAT:
            prior = None  # an older format's value encodes nothing of this one
        return {
            "format": STATE_FORMAT, "tenant": self.tenant, "agent": self.agent,
            "accepted": self.accepted, "newest": _ms(self.newest),
            "previous_newest": _ms(self.previous_newest), "frontier": _ms(self.frontier),
            "counts_from": _ms(self.counts_from), "cursor": [_ms(t) for t in self.cursor],
            "registrations": [_fact_out(f) for f in self.registrations],
            "calls": _calls_out(self.calls, prior),
            "carry": [[kind, _ms(start), _ms(end)] for kind, start, end in self.carry],
            "finished": _finished_out(self.finished, prior),
            "segments": _segments_out(self.segments, prior),
            "counts": [[kind.value, _ms(start), list(values)]
                       for (kind, start), values in self.counts.items()],
            "late": self.late, "dropped": self.dropped, "trimmed": self.trimmed,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], config: AgentConfig = DEFAULT_CONFIG
                  ) -> AgentState:
        if data.get("format") == 1:
            return _upgrade(data, config)
        if data.get("format") != STATE_FORMAT:
            raise ValueError(f"agent state: unknown format {data.get('format')!r}")
        return cls(
            data["tenant"], data["agent"], int(data["accepted"]), _ts(data["newest"]),
            _ts(data["previous_newest"]), _ts(data["frontier"]), _ts(data["counts_from"]),
            (_ts(data["cursor"][0]), _ts(data["cursor"][1])),
            tuple(_fact_in(f, None) for f in data["registrations"]),
            {cid: tuple(_fact_in(f, cid) for f in facts)
             for cid, facts in data["calls"].items()},
            tuple((kind, _ts(start), _ts(end)) for kind, start, end in data["carry"]),
            {cid: _ts(ms) for cid, ms in data["finished"].items()},
            tuple(Segment(AgentStatus(state), _ts(since), _ts(until))
                  for state, since, until in data["segments"]),
            {(IntervalKind(kind), _ts(start)): tuple(values)
             for kind, start, values in data["counts"]},
            int(data["late"]), int(data["dropped"]), int(data["trimmed"]),
        )


_FIELDS = frozenset(f.name for f in fields(AgentState))


def _with(state: AgentState, **changes: Any) -> AgentState:
    """``dataclasses.replace`` for the row, without its per-call field scan and frozen
    ``__init__`` (a sixth of the fold's time): the row has no ``__post_init__``."""
    if not changes.keys() <= _FIELDS:
        raise TypeError(f"AgentState has no field {sorted(changes.keys() - _FIELDS)}")
    new = object.__new__(AgentState)
    new.__dict__.update(state.__dict__)
    new.__dict__.update(changes)
    return new


def _ms(ts: datetime | None) -> int | None:
    return None if ts is None else (ts - _EPOCH) // _MS


def _ts(ms: int | None) -> Any:
    return None if ms is None else _EPOCH + ms * _MS


def _fact_out(f: Fact) -> list[Any]:
    """A fact as a short list (the call id is the key it is stored under); trailing
    Nones are left out."""
    out = [f.event_id, f.type.value, _ms(f.ts), f.caller, f.callee, f.agent, f.duration_ms,
           f.expires, f.dialog]
    while out[-1] is None:
        out.pop()
    return out


def _calls_out(calls: Mapping[str, tuple[Fact, ...]],
               prior: tuple[AgentState, dict[str, Any]] | None) -> dict[str, list[Any]]:
    """Each call's facts encoded; a call whose facts are the very tuple ``prior`` held
    (a fold replaces only the tuples it changes) takes the encoding ``prior`` had."""
    before, value = prior if prior is not None else (None, None)
    out: dict[str, list[Any]] = {}
    for cid, facts in calls.items():
        if before is not None and before.calls.get(cid) is facts:
            out[cid] = value["calls"][cid]
        else:
            out[cid] = [_fact_out(f) for f in facts]
    return out


def _segments_out(segments: tuple[Segment, ...],
                  prior: tuple[AgentState, dict[str, Any]] | None) -> list[list[Any]]:
    """The segments encoded; one that is the very object ``prior`` held takes its encoding
    (an event re-sweeps the timeline from its own time only, :func:`_resweep`)."""
    start = kept = 0
    if prior is not None and len(prior[0].segments) == len(prior[1]["segments"]):
        start, kept = _shared_run(prior[0].segments, segments)
    head = prior[1]["segments"][start:start + kept] if kept else []
    return head + [[s.state.value, _ms(s.since), _ms(s.until)] for s in segments[kept:]]


def _shared_run(old: tuple[Segment, ...], new: tuple[Segment, ...]) -> tuple[int, int]:
    """``(start, n)``: ``new[:n]`` are the very objects ``old[start:start + n]`` (the
    frontier lets go of a prefix, :func:`_resweep` keeps a run, the rest is new)."""
    if not new or not old:
        return 0, 0
    first = new[0]
    start = next((i for i, seg in enumerate(old) if seg is first), None)
    if start is None:
        return 0, 0
    n, limit = 1, min(len(new), len(old) - start)
    while n < limit and new[n] is old[start + n]:
        n += 1
    return start, n


def _finished_out(finished: Mapping[str, datetime],
                  prior: tuple[AgentState, dict[str, Any]] | None) -> dict[str, int | None]:
    """The finished calls encoded; the very mapping ``prior`` held takes its encoding (it
    changes only when the frontier moves)."""
    if prior is not None and prior[0].finished is finished:
        return prior[1]["finished"]
    return {cid: _ms(ts) for cid, ts in finished.items()}


def _fact_in(raw: list[Any], call_id: str | None) -> Fact:
    values = [*raw, *[None] * (9 - len(raw))]
    return Fact(values[0], EventType(values[1]), _ts(values[2]), call_id, *values[3:])


def _upgrade(data: dict[str, Any], config: AgentConfig) -> AgentState:
    """A format 1 row (every kept event) folded into a bounded one, its version kept."""
    events = sorted((from_dict(ev) for ev in data["events"]), key=lambda e: e.ts)
    state = fold(data["tenant"], data["agent"], events, config)
    return replace(state, accepted=int(data["accepted"]))


# --- folding ------------------------------------------------------------------------------


def _floor(at: datetime) -> datetime:
    return _EPOCH + ((at - _EPOCH) // FRONTIER_STEP) * FRONTIER_STEP


def _unanswered_since(state: AgentState) -> datetime | None:
    """The first event of the oldest open call with no answer yet. Its BYE may still
    rebuild a lost answer (``duration_ms``) back to there: a talk the timeline shows as
    ringing until then."""
    return min((ts for ts in map(_unanswered_from, state.calls.values()) if ts is not None),
               default=None)


def _unanswered_from(facts: tuple[Fact, ...]) -> datetime | None:
    """The call's first event time while none of its facts answers or settles it;
    remembered per facts tuple (asked of every open call three times per event)."""
    hit = _UNANSWERED.get(id(facts))
    if hit is not None and hit[0] is facts:
        return hit[1]
    ts = None if any(f.type in _ANSWER_OR_SETTLED for f in facts) else facts[0].ts
    if len(_UNANSWERED) >= _MEMO_MAX:
        _UNANSWERED.clear()
    _UNANSWERED[id(facts)] = (facts, ts)
    return ts


_UNANSWERED: dict[int, tuple[tuple[Fact, ...], datetime | None]] = {}
"""id(facts) -> (the facts tuple, :func:`_unanswered_from`); the entry holds the tuple,
so its id is not reused while remembered (as ``agent_timeline.call_of`` does)."""
_MEMO_MAX = 65_536


def _frontier_for(state: AgentState, config: AgentConfig) -> datetime | None:
    """Where the frontier stands once the row is compacted for its newest event:
    ``horizon`` behind it, held back (at most ``late_window``) to an unanswered call."""
    if state.newest is None:
        return state.frontier
    at = _floor(state.newest - config.horizon)
    held = _unanswered_since(state)
    if held is not None and held < at:
        at = max(_floor(held), _floor(state.newest - config.late_window))
    return at if state.frontier is None else max(at, state.frontier)


def _counts_from_for(state: AgentState, frontier: datetime, config: AgentConfig) -> datetime:
    limit = frontier - config.late_window
    return limit if state.counts_from is None else max(limit, state.counts_from)


def admit(state: AgentState, event: Event, config: AgentConfig = DEFAULT_CONFIG) -> Admission:
    """How :func:`apply` takes ``event`` (see the module docstring on late events)."""
    if event.tenant != state.tenant or state.key not in agent_keys(event):
        return Admission.UNRELATED
    is_call = event.type in CALL_TYPES
    if state.has(event.event_id, event.call_id if is_call else None):
        return Admission.REPEAT
    if is_call and event.call_id in state.finished:
        return Admission.FINISHED
    frontier = _frontier_for(state, config)
    if frontier is None or event.ts >= frontier:
        return Admission.ON_TIME
    if not is_call or event.ts < _counts_from_for(state, frontier, config):
        return Admission.TOO_LATE
    return Admission.LATE


def apply(state: AgentState, event: Event, config: AgentConfig = DEFAULT_CONFIG) -> AgentState:
    """Fold one event in; an unrelated or repeated event returns ``state`` itself, a
    dropped one ``state`` with its ``dropped`` count up. Work and row size are bounded by
    the open items, not by the history."""
    return apply_admitted(state, event, admit(state, event, config), config)


def apply_admitted(state: AgentState, event: Event, admission: Admission,
                   config: AgentConfig = DEFAULT_CONFIG) -> AgentState:
    """:func:`apply` for a caller that already has ``admit(state, event, config)``."""
    if admission in (Admission.UNRELATED, Admission.REPEAT):
        return state
    if admission in (Admission.FINISHED, Admission.TOO_LATE):
        return _with(state, dropped=state.dropped + 1)
    new = _with_fact(compact(state, config), fact_of(event), config)
    if admission is Admission.LATE:
        new = _with(new, late=new.late + 1)
    return guard(new, config)


def fold(tenant: str, agent: str, events: Iterable[Event],
         config: AgentConfig = DEFAULT_CONFIG) -> AgentState:
    """Fold a whole sequence, as a replay does."""
    state = AgentState(tenant, agent)
    for event in events:
        state = apply(state, event, config)
    return state


def _insort(facts: tuple[Fact, ...], fact: Fact) -> tuple[Fact, ...]:
    return tuple(sorted((*facts, fact), key=order))


def _with_fact(state: AgentState, fact: Fact, config: AgentConfig) -> AgentState:
    regs, calls_ = state.registrations, dict(state.calls)
    changed = None
    if fact.type in REGISTRATIONS:
        regs = _insort(regs, fact)
    else:
        assert fact.call_id is not None
        changed = fact.call_id
        calls_[changed] = _insort(calls_.get(changed, ()), fact)
    newest = fact.ts if state.newest is None else max(state.newest, fact.ts)
    previous = state.newest if newest != state.newest else state.previous_newest
    return _revised(state, regs, calls_, newest, [changed] if changed else [], config,
                    accepted=state.accepted + 1, previous_newest=previous)


def _spans(state: AgentState, regs: tuple[Fact, ...], calls_: Mapping[str, tuple[Fact, ...]],
           newest: datetime | None, config: AgentConfig) -> list[Span]:
    cursor, closed = scan_sessions(state.cursor, regs)
    spans: list[Span] = [("session", start, end)
                         for start, end in closed + session_end(cursor, newest)]
    for cid, facts in calls_.items():
        spans += call_spans(call_of(state.agent, cid, facts), config.wrap_up_ms)
    spans += state.carry
    # an unregister with no known registration still says "offline from here"
    spans += [("mark", f.ts, f.ts) for f in regs if f.type is EventType.AGENT_UNREGISTERED]
    return spans


def _base(state: AgentState) -> Segment | None:
    """The segment in force just before the frontier (final), if the timeline began."""
    first = state.segments[0] if state.segments else None
    if first is None or state.frontier is None or first.since >= state.frontier:
        return None
    return first


def _resweep(state: AgentState, regs: tuple[Fact, ...], calls_: Mapping[str, tuple[Fact, ...]],
             newest: datetime | None, changed: list[str], config: AgentConfig,
             ) -> tuple[tuple[Segment, ...], int]:
    """The timeline of the new open items, and how many of its first segments are
    ``state``'s own (the very objects).

    Sweeping every span from the frontier on each event made a busy agent's event cost
    grow with its calls inside the horizon (a call every 2.5 s: 930 events per CPU second
    at first, 111 once the horizon was full; ``bench/fold_throughput.py --rate``). When
    only the ``changed`` calls' spans differ from those ``state.segments`` were swept
    from, the counters before the earliest end
    ``x`` that differs are the same: the timeline is kept up to the segment in force at
    ``x`` and swept from there (:func:`sweep` with ``x`` as frontier, that segment as
    base), which gives the segments a sweep from the frontier gives. The whole sweep stays
    for what this cannot see: a session that changed, a change at or before the frontier
    (a late event) or before the timeline's first segment.
    """
    spans = _spans(state, regs, calls_, newest, config)
    segs = state.segments
    x = _earliest_change(state, regs, calls_, newest, changed, config)
    if x is _UNCHANGED:
        return segs, len(segs)
    if isinstance(x, datetime) and state.frontier is not None and x > state.frontier and (
            segs and segs[0].since < x):
        k = len(segs) - 1
        while segs[k].since >= x:
            k -= 1
        return (*segs[:k], *sweep(spans, x, segs[k])), k
    return tuple(sweep(spans, state.frontier, _base(state))), 0


_UNCHANGED = object()
""":func:`_earliest_change`: the new spans are the old ones."""


def _earliest_change(state: AgentState, regs: tuple[Fact, ...],
                     calls_: Mapping[str, tuple[Fact, ...]], newest: datetime | None,
                     changed: list[str], config: AgentConfig) -> object:
    """The earliest span end that differs between ``state``'s spans and the new ones when
    only the ``changed`` calls' spans can (:data:`_UNCHANGED` if none does); None when
    registrations or the open session differ."""
    if regs is not state.registrations:
        return None
    cursor, _ = scan_sessions(state.cursor, regs)
    if session_end(cursor, newest) != session_end(cursor, state.newest):
        return None
    differ: set[Span] = set()
    for cid in changed:
        old, new = state.calls.get(cid), calls_.get(cid)
        before = call_spans(call_of(state.agent, cid, old), config.wrap_up_ms) if old else []
        after = call_spans(call_of(state.agent, cid, new), config.wrap_up_ms) if new else []
        differ |= set(before) ^ set(after)
    points = [t for _, start, end in differ for t in (start, end) if t is not None]
    return min(points) if points else _UNCHANGED


def _revised(state: AgentState, regs: tuple[Fact, ...], calls_: dict[str, tuple[Fact, ...]],
             newest: datetime | None, changed: Iterable[str], config: AgentConfig,
             **fields: Any) -> AgentState:
    """``state`` with new open items: its timeline swept again (from where the ``changed``
    calls can have changed it, :func:`_resweep`), its counters moved by what the timeline
    and the ``changed`` calls now contribute."""
    changed = list(changed)
    segments, same = _resweep(state, regs, calls_, newest, changed, config)
    counts: Counts = {key: list(values) for key, values in state.counts.items()}
    while same < min(len(segments), len(state.segments)) and (
            segments[same] == state.segments[same]):
        same += 1
    if newest != state.newest and state.segments:
        same = min(same, len(state.segments) - 1)  # the open segment counts up to newest
    gone = state.counts_from
    tz = config.zone(state.tenant)
    for seg in state.segments[same:]:
        add_parts(counts, segment_parts(seg, state.newest, tz), -1, gone, tz)
    for seg in segments[same:]:
        add_parts(counts, segment_parts(seg, newest, tz), 1, gone, tz)
    for cid in changed:
        if cid in state.calls:
            add_parts(counts, call_parts(call_of(state.agent, cid, state.calls[cid]), tz), -1,
                      gone, tz)
        if cid in calls_:
            add_parts(counts, call_parts(call_of(state.agent, cid, calls_[cid]), tz), 1,
                      gone, tz)
    return _with(state, registrations=regs, calls=calls_, newest=newest, segments=segments,
                   counts={key: tuple(values) for key, values in counts.items()}, **fields)


# --- letting go of what is final -----------------------------------------------------------


def _reaches(span: Span, frontier: datetime) -> bool:
    """Whether a span still has an end at or after the frontier (else it nets to zero)."""
    _, start, end = span
    return end is None or max(start, end) >= frontier


def _live_keys(state: AgentState, calls_: Mapping[str, tuple[Fact, ...]],
               tz: ZoneInfo) -> set[Key]:
    """Intervals the open calls still count in (a call ringing since long ago)."""
    return {key for cid, facts in calls_.items()
            for key, _ in call_parts(call_of(state.agent, cid, facts), tz)}


def compact(state: AgentState, config: AgentConfig = DEFAULT_CONFIG,
            to: datetime | None = None) -> AgentState:
    """Move the frontier to ``to`` (default: ``horizon`` behind the newest event) and let
    go of what is final before it. Publishes nothing: the timeline and the counters of
    every interval still held are unchanged."""
    target = to if to is not None else _frontier_for(state, config)
    if target is None or (state.frontier is not None and target <= state.frontier):
        return state
    cursor, _ = scan_sessions(state.cursor, [f for f in state.registrations if f.ts < target])
    kept: dict[str, tuple[Fact, ...]] = {}
    carry = [span for span in state.carry if _reaches(span, target)]
    finished = dict(state.finished)
    for cid, facts in state.calls.items():
        call = call_of(state.agent, cid, facts)
        if call.settled and call.last_ts < target:
            finished[cid] = call.last_ts
            carry += [span for span in call_spans(call, config.wrap_up_ms)
                      if _reaches(span, target)]
        else:
            kept[cid] = facts
    counts_from = _counts_from_for(state, target, config)
    return _let_go(_with(
        state, frontier=target, cursor=cursor, calls=kept, carry=tuple(carry),
        registrations=tuple(f for f in state.registrations if f.ts >= target),
        finished={cid: ts for cid, ts in finished.items() if ts >= counts_from},
        segments=tuple(s for s in state.segments if s.until is None or s.until > target),
    ), counts_from, config.zone(state.tenant))


def _let_go(state: AgentState, counts_from: datetime, tz: ZoneInfo) -> AgentState:
    """Drop the counters of intervals ending by ``counts_from`` no open call counts in."""
    live = _live_keys(state, state.calls, tz)
    counts = {key: values for key, values in state.counts.items()
              if interval_end(key, tz) > counts_from or key in live}
    return _with(state, counts=counts, counts_from=counts_from)


# --- the guard -----------------------------------------------------------------------------


def row_size(state: AgentState) -> int:
    """Bytes of the row's JSON (as the table's changelog writes it, near enough)."""
    return len(json.dumps(state.to_dict(), separators=(",", ":")))


def _estimate(state: AgentState) -> int:
    """A cheap upper-bound guess of :func:`row_size` (so most rows are not encoded twice)."""
    facts = len(state.registrations) + sum(len(f) for f in state.calls.values())
    return (400 + 250 * facts + 80 * len(state.segments) + 120 * len(state.counts)
            + 80 * len(state.finished) + 80 * len(state.carry))


def _stop_late_counting(state: AgentState, config: AgentConfig) -> AgentState:
    """Late events beyond the horizon are dropped from now on: no ids kept for them."""
    assert state.frontier is not None
    return _with(_let_go(state, state.frontier, config.zone(state.tenant)), finished={})


def _close_horizon(state: AgentState, config: AgentConfig) -> AgentState:
    """The frontier to the newest minute: finished calls and registrations let go."""
    assert state.newest is not None
    return _stop_late_counting(compact(state, config, to=_floor(state.newest)), config)


def _settle_open_calls(state: AgentState, config: AgentConfig) -> AgentState:
    """A circuit breaker for a storm of open calls: each is ended (answered) or failed
    (not) at the newest event, as a synthetic event would, and finished. The timeline and
    counts change accordingly (published as any change); the calls' further events are
    dropped and counted, not folded as new calls."""
    assert state.newest is not None
    settled: dict[str, tuple[Fact, ...]] = {}
    for cid, facts in state.calls.items():
        for dialog, talked in unsettled_dialogs(state.agent, facts) or [(None, False)]:
            kind = EventType.CALL_ENDED if talked else EventType.CALL_FAILED
            guard_id = f"guard:{cid}" if dialog is None else f"guard:{cid}:{dialog}"
            facts = _insort(facts, Fact(guard_id, kind, state.newest, cid, dialog=dialog))
        settled[cid] = facts
    state = _revised(state, state.registrations, settled, state.newest, list(settled), config)
    carry = list(state.carry)
    finished = dict(state.finished)
    for cid, facts in state.calls.items():
        carry += [span for span in call_spans(call_of(state.agent, cid, facts),
                                              config.wrap_up_ms)
                  if state.frontier is None or _reaches(span, state.frontier)]
        finished[cid] = facts[-1].ts
    return _with(state, calls={}, carry=tuple(carry), finished=finished)


_TRIMS = (_stop_late_counting, _close_horizon, _settle_open_calls)


def guard(state: AgentState, config: AgentConfig = DEFAULT_CONFIG) -> AgentState:
    """``state``, trimmed if its JSON exceeds ``config.max_row_bytes``: the steps of
    ``_TRIMS`` in order until it fits, each deterministic; ``trimmed`` counts the rows
    trimmed. The first two are output-neutral (late events beyond the horizon are dropped
    instead of counted from then on; the horizon closes early). The last, for a storm of
    open calls, ends them at the newest event: that change is published like any other,
    and their later events are dropped (``dropped``). Always kept: every event is folded
    or counted as dropped, the row's records stay consistent with what was published."""
    if state.frontier is None or (_estimate(state) <= config.max_row_bytes
                                  or row_size(state) <= config.max_row_bytes):
        return state
    for trim in _TRIMS:
        state = trim(state, config)
        if row_size(state) <= config.max_row_bytes:
            break
    return _with(state, trimmed=state.trimmed + 1)


# --- reading the row ----------------------------------------------------------------------


def calls(state: AgentState) -> list[AgentCall]:
    """The agent's open calls, in order of their first event."""
    return sorted((call_of(state.agent, cid, facts) for cid, facts in state.calls.items()),
                  key=lambda c: (state.calls[c.call_id][0].ts, c.call_id))


def timeline(state: AgentState, config: AgentConfig = DEFAULT_CONFIG) -> list[Segment]:
    """The agent's states from the frontier on (the first may have begun before it);
    earlier segments are final and were published."""
    return list(state.segments)


def _visible(segments: Iterable[Segment], limit: datetime | None) -> dict[datetime, Segment]:
    return {s.since: s for s in segments if limit is None or s.until is None or s.until > limit}


def state_changes(old: AgentState, new: AgentState,
                  config: AgentConfig = DEFAULT_CONFIG) -> list[AgentStateChange]:
    """Segments that ``new`` adds, changes or retracts compared with ``old`` (those
    reaching past ``new``'s frontier: the ones before were let go unchanged)."""
    if new is old:
        return []
    # a segment object both timelines hold is unchanged (:func:`_resweep` keeps them)
    start, n = _shared_run(old.segments, new.segments)
    before = _visible((*old.segments[:start], *old.segments[start + n:]), new.frontier)
    after = _visible(new.segments[n:], new.frontier)
    out = [AgentStateChange(new.tenant, new.agent, s.since, s.state, s.until, new.accepted)
           for since, s in sorted(after.items()) if before.get(since) != s]
    out += [AgentStateChange(new.tenant, new.agent, s.since, s.state, s.until, new.accepted,
                             deleted=True)
            for since, s in sorted(before.items()) if since not in after]
    return sorted(out, key=lambda c: c.since)


# --- redelivery: what a repeated event sends again -----------------------------------------


def without_event(state: AgentState, event: Event,
                  config: AgentConfig = DEFAULT_CONFIG) -> AgentState | None:
    """``state`` without ``event`` (None if the row does not hold it).

    After a crash between the changelog write and the output, the redelivered event finds
    itself already folded. Taking it out again gives the state it was folded into when it
    was the last one folded (the usual crash window); otherwise the state as if it had
    never come, whose differences with ``state`` are still current truth.
    """
    is_call = event.type in CALL_TYPES
    if not state.has(event.event_id, event.call_id if is_call else None):
        return None
    regs, calls_ = state.registrations, dict(state.calls)
    if is_call:
        assert event.call_id is not None
        rest = tuple(f for f in calls_[event.call_id] if f.event_id != event.event_id)
        if rest:
            calls_[event.call_id] = rest
        else:
            del calls_[event.call_id]
    else:
        regs = tuple(f for f in regs if f.event_id != event.event_id)
    return _revised(state, regs, calls_, _newest_other(state, event),
                    [event.call_id] if event.call_id else [], config, accepted=state.accepted - 1)


def _newest_other(state: AgentState, event: Event) -> datetime | None:
    """The newest event time but for ``event``'s (as well as the row knows it)."""
    if state.newest is None or fact_of(event).ts < state.newest:
        return state.newest
    others = [f.ts for facts in (state.registrations, *state.calls.values()) for f in facts
              if f.event_id != event.event_id]
    candidates = [*others, *([state.previous_newest] if state.previous_newest else [])]
    return max(candidates, default=state.newest)


def touched_since(state: AgentState, event: Event) -> datetime:
    """The earliest time ``event`` can have changed: the earlier of its own time (it
    changes the timeline from there on) and the newest time of the row's other events
    (when it was the newest, it moved the frontier, and the counted-up-to time, from
    there)."""
    return min(fact_of(event).ts, _newest_other(state, event) or event.ts)


def resend_since(state: AgentState, event: Event,
                 config: AgentConfig = DEFAULT_CONFIG) -> datetime:
    """Where the interval rows a repeated ``event`` sends again start: the tenant's local
    day (the largest statistics interval) holding :func:`touched_since`."""
    earliest = touched_since(state, event)
    return min(day_of(earliest),
               timezones.floor(earliest, "1 day", config.zone(state.tenant)))


def resent_changes(state: AgentState, event: Event, config: AgentConfig = DEFAULT_CONFIG,
                   prior: AgentState | None = None) -> list[AgentStateChange]:
    """The segments a repeated ``event`` sends again ([] if the row does not hold it).

    Every held segment reaching past :func:`touched_since`, plus what
    :func:`state_changes` finds from ``prior`` (:func:`without_event`): the retractions
    the first delivery sent. All at ``state.accepted``: when the event was the last
    folded, exactly the revisions the first delivery produced.

    Not the whole day: after a crash Faust redelivers every event since the last commit,
    and a busy line holds a thousand segments a day - resending them for each repeat
    turned 200 repeats into 200,000 records, a backlog the stage took minutes to drain
    (the CI run of stop 23, test_crash_replay).
    """
    prior = prior if prior is not None else without_event(state, event, config)
    if prior is None:
        return []
    since = touched_since(state, event)
    out = {s.since: AgentStateChange(state.tenant, state.agent, s.since, s.state, s.until,
                                     state.accepted)
           for s in state.segments if s.until is None or s.until > since}
    out.update((c.since, c) for c in state_changes(prior, state, config))
    return sorted(out.values(), key=lambda c: c.since)


# --- take-over: a worker that reads the row from the changelog -----------------------------


def rebased(state: AgentState, floor: int) -> AgentState:
    """``state`` with its version (``accepted``) raised to at least ``floor``.

    A worker that takes a row over from the changelog (after a crash or a rebalance) may
    find it older than the records its previous owner sent: that owner's records travel
    apart from its changelog writes, and a ``kill -9`` can land the first without the
    second. The new owner folds those events again, perhaps in another order, and with the
    row's own count its revisions would carry the same versions as the orphans, leaving
    the warehouse to keep either. Numbered from a floor above anything sent before (the
    stage takes it from the clock), its revisions supersede them.
    """
    return state if state.accepted >= floor else replace(state, accepted=floor)

