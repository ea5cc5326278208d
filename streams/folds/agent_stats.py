"""Per-agent statistics per interval (15 min, hour, day), computed from the agent state fold.

Intervals are aligned on UTC (``[09:15, 09:30)``, ``[09:00, 10:00)``, ``[00:00, 24:00)``)::

    state   |--available--|--ringing--|------on_call------|--available-->
    15 min  |     09:00-09:15     |     09:15-09:30     |   09:30-09:45   |
                                          ^ a state crossing a boundary is split:
                                            each interval gets the part inside it

Definitions (named, see ``reference/peer-survey.md`` §3):

* ``logged_in_ms`` - time in any state but offline; ``available_ms``, ``ringing_ms``,
  ``talk_ms``, ``wrap_up_ms`` - time in that state (split across intervals).
* ``offered`` - calls that rang the agent (``call.ringing`` with callee = agent, or an
  answer by the agent); ``answered`` - of those, answered by the agent; ``missed`` - of
  those, the ring ended and the agent did not answer (Amazon Connect's *agent
  non-response*: a call answered by a colleague still counts as missed for this agent).
  All three count in the interval where the call started to ring the agent.
* ``handled`` - calls the agent talked on (answered, or placed and answered), counted in
  the interval where the talk ended; ``handled_talk_ms`` - their whole talk time.
* ``aht_talk_ms`` - **AHT, talk-only**: handled_talk_ms / handled (no hold, no after-call
  work: Tawag has no hold events yet). None when nothing was handled.
* ``occupancy`` - **Amazon Connect variant**: handle / (handle + idle) with handle =
  talk + wrap-up and idle = available; ringing counts in neither. None when both are 0.

An agent's current state counts up to its newest event: numbers of the current interval
grow as events (registration refreshes included) come in. ``complete_until`` says how far
a row is counted: the newest event time, capped at the interval's end. The cap makes it a
function of the agent's events, not of their arrival order: uncapped, a finished
interval's row kept the newest time of whichever event happened to change it last, which
differs between two deliveries of the same events (the live worker's interleaving of
partitions and a replay's), while every number is the same. A row is sent again when its
numbers or its ``complete_until`` change, so the last revision of every interval has the
final value of both.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta

from ingest.events import Event
from streams.agent_records import AgentStats, AgentStatus, IntervalKind
from streams.folds.agent_state import (
    DEFAULT_CONFIG,
    AgentCall,
    AgentConfig,
    AgentState,
    Segment,
    Step,
    calls,
    cutoff,
    derived_of,
    resend_since,
    step_between,
    timeline,
    without_event,
)

__all__ = ["INTERVALS", "interval_start", "split", "complete_until", "stats", "stats_changes",
           "resent_stats"]

INTERVALS = {
    IntervalKind.QUARTER: timedelta(minutes=15),
    IntervalKind.HOUR: timedelta(hours=1),
    IntervalKind.DAY: timedelta(days=1),
}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_COUNTERS = ("logged_in_ms", "available_ms", "ringing_ms", "talk_ms", "wrap_up_ms",
             "offered", "answered", "missed", "handled", "handled_talk_ms")
_AT = {name: i for i, name in enumerate(_COUNTERS)}
_TOUCHES = len(_COUNTERS)
"""Index, in an interval's counter list, of how many contributions touch it (0 = no row)."""
_STATE_FIELDS = {
    AgentStatus.AVAILABLE: _AT["available_ms"], AgentStatus.RINGING: _AT["ringing_ms"],
    AgentStatus.ON_CALL: _AT["talk_ms"], AgentStatus.WRAP_UP: _AT["wrap_up_ms"],
}
_CONTENT = operator.attrgetter(*(f.name for f in fields(AgentStats) if f.name != "version"))

Key = tuple[IntervalKind, datetime]
Part = tuple[Key, tuple[tuple[int, int], ...]]
"""One contribution to an interval: (interval, ((counter index, amount), ...))."""


def interval_start(ts: datetime, kind: IntervalKind) -> datetime:
    """Start of the ``kind`` interval holding ``ts`` (UTC-aligned)."""
    size = INTERVALS[kind]
    return _EPOCH + ((ts - _EPOCH) // size) * size


def split(start: datetime, end: datetime, kind: IntervalKind) -> Iterator[tuple[datetime, int]]:
    """``(interval start, whole ms inside it)`` for each interval ``[start, end)`` touches."""
    at = start
    while at < end:
        bucket = interval_start(at, kind)
        stop = min(end, bucket + INTERVALS[kind])
        yield bucket, (stop - at) // _MS
        at = stop


def _segment_parts(seg: Segment, newest: datetime | None) -> list[Part]:
    """A segment's time per interval; the current segment counts up to ``newest``."""
    end = seg.until if seg.until is not None else newest
    if seg.state is AgentStatus.OFFLINE or end is None:
        return []
    index = _STATE_FIELDS[seg.state]
    return [((kind, bucket), ((0, ms), (index, ms)))
            for kind in INTERVALS for bucket, ms in split(seg.since, end, kind)]


def _call_parts(call: AgentCall) -> list[Part]:
    """offered/answered/missed where the call rang the agent, handled where its talk ended."""
    parts: list[Part] = []
    rang_at = call.ring_start or (call.talk_start if call.answered_by_agent else None)
    for kind in INTERVALS:
        if rang_at is not None:
            ring_over = call.ring_end is not None or call.settled
            parts.append(((kind, interval_start(rang_at, kind)), (
                (_AT["offered"], 1), (_AT["answered"], int(call.answered_by_agent)),
                (_AT["missed"], int(ring_over and not call.answered_by_agent)))))
        if call.talk_start is not None and call.talk_end is not None:
            talk = max(0, (call.talk_end - call.talk_start) // _MS)
            parts.append(((kind, interval_start(call.talk_end, kind)),
                          ((_AT["handled"], 1), (_AT["handled_talk_ms"], talk))))
    return parts


Counts = dict[Key, list[int]]


def _add(counts: Counts, parts: Iterable[Part], sign: int,
         seen: dict[Key, tuple[int, ...] | None] | None = None) -> None:
    """Add (sign 1) or take back (-1) contributions; ``seen`` gets each interval's counters
    as they were before its first change. An interval no contribution touches is dropped."""
    for key, amounts in parts:
        row = counts.get(key)
        if seen is not None and key not in seen:
            seen[key] = tuple(row) if row is not None else None
        if row is None:
            row = counts[key] = [0] * (_TOUCHES + 1)
        for index, amount in amounts:
            row[index] += sign * amount
        row[_TOUCHES] += sign
        if row[_TOUCHES] == 0:
            del counts[key]


def complete_until(key: Key, newest: datetime) -> datetime:
    """How far interval ``key``'s row is counted once the newest event is at ``newest``:
    up to ``newest``, and never past the interval's end (then the row is complete)."""
    kind, start = key
    return min(newest, start + INTERVALS[kind])


def _complete_until(key: Key, newest: datetime | None) -> datetime | None:
    return None if newest is None else complete_until(key, newest)


def _record(state: AgentState, key: Key, values: list[int] | tuple[int, ...]) -> AgentStats:
    handle = values[_AT["talk_ms"]] + values[_AT["wrap_up_ms"]]
    busy_or_idle = handle + values[_AT["available_ms"]]
    handled = values[_AT["handled"]]
    newest = state.newest
    assert newest is not None
    return AgentStats(
        tenant=state.tenant, agent=state.agent, interval_kind=key[0], interval_start=key[1],
        version=state.accepted, **{name: values[i] for i, name in enumerate(_COUNTERS)},
        aht_talk_ms=values[_AT["handled_talk_ms"]] / handled if handled else None,
        occupancy=handle / busy_or_idle if busy_or_idle else None,
        complete_until=complete_until(key, newest),
    )


def _full_counts(state: AgentState, config: AgentConfig) -> Counts:
    """Every interval's counters recomputed from the state's events."""
    counts: Counts = {}
    newest = state.newest
    for seg in timeline(state, config):
        _add(counts, _segment_parts(seg, newest), 1)
    for call in calls(state):
        _add(counts, _call_parts(call), 1)
    return counts


@dataclass
class _Tally:
    """Interval counters of one state, with each segment's and call's contribution so a
    step (:func:`streams.folds.agent_state.step_between`) updates only what it changed.

    Attached to the state it describes (attribute ``_tally``); :func:`stats_changes` moves
    it on to the new state."""

    config: AgentConfig
    counts: Counts = field(default_factory=dict)
    segments: list[list[Part]] = field(default_factory=list)
    """Contributions of the timeline's segments, in order."""
    calls: dict[str, list[Part]] = field(default_factory=dict)

    @classmethod
    def build(cls, state: AgentState, config: AgentConfig) -> _Tally | None:
        """From the state's derived data (None if it has none): O(segments + calls)."""
        derived = derived_of(state, config)
        if derived is None:
            return None
        tally = cls(config)
        for seg in derived.segments:
            tally.segments.append(_segment_parts(seg, derived.newest))
            _add(tally.counts, tally.segments[-1], 1)
        for call_id, call in derived.calls.items():
            tally.calls[call_id] = _call_parts(call)
            _add(tally.counts, tally.calls[call_id], 1)
        return tally


def _tally(state: AgentState, config: AgentConfig) -> _Tally | None:
    tally: _Tally | None = state.__dict__.get("_tally")
    if tally is not None and tally.config == config:
        return tally
    if not state.events:
        return _Tally(config)
    tally = _Tally.build(state, config)
    if tally is not None:
        object.__setattr__(state, "_tally", tally)
    return tally


def stats(state: AgentState, config: AgentConfig = DEFAULT_CONFIG,
          since: datetime | None = None) -> dict[Key, AgentStats]:
    """Every interval with activity, from ``since`` (default: the state's cutoff) on."""
    if not state.events:
        return {}
    limit = since if since is not None else cutoff(state, config)
    tally = _tally(state, config)
    counts = tally.counts if tally is not None else _full_counts(state, config)
    return {key: _record(state, key, values) for key, values in sorted(counts.items())
            if limit is None or key[1] >= limit}


def _content(row: AgentStats) -> tuple:
    """Every field but the version (no deep copy: all are scalars)."""
    return _CONTENT(row)


def stats_changes(old: AgentState, new: AgentState,
                  config: AgentConfig = DEFAULT_CONFIG) -> list[AgentStats]:
    """Interval rows whose numbers or ``complete_until`` differ between ``old`` and ``new``
    (from the cutoff on).

    An interval that had numbers before and has none now is sent with zeros. When ``new``
    came from ``old`` through ``apply``, only the intervals the step touched, and those
    between the two newest event times, are compared.
    """
    if new is old or not new.events:
        return []
    step = step_between(old, new, config)
    tally = old.__dict__.get("_tally") if old.events else _Tally(config)
    if step is None or tally is None or tally.config != config:
        return _stats_changes_full(old, new, config)
    seen: dict[Key, tuple[int, ...] | None] = {}
    if step.rebuilt:
        fresh = _Tally.build(new, config)
        assert fresh is not None
        seen = {key: tuple(row) for key, row in tally.counts.items()}
        seen.update({key: None for key in fresh.counts if key not in seen})
        tally = fresh
    else:
        _advance(tally, step, new, seen)
    _note_moved(tally.counts, step.newest_before, new.newest, config, seen)
    object.__setattr__(old, "_tally", None)
    object.__setattr__(new, "_tally", tally)
    return _changed_rows(new, config, seen, tally.counts, step.newest_before)


def _note_moved(counts: Counts, before: datetime | None, after: datetime | None,
                config: AgentConfig, seen: dict[Key, tuple[int, ...] | None]) -> None:
    """Add to ``seen`` the intervals with a row whose ``complete_until`` moves when the
    newest event time goes from ``before`` to ``after``: those ending after ``before``.
    No row starts later than ``after`` plus a wrap-up, so the walk is short."""
    if before is None or after is None or after <= before:
        return
    last = after + config.wrap_up_ms * _MS
    for kind, size in INTERVALS.items():
        at = interval_start(before, kind)
        while at <= last:
            key = (kind, at)
            row = counts.get(key)
            if row is not None and key not in seen:
                seen[key] = tuple(row)
            at += size


def _advance(tally: _Tally, step: Step, new: AgentState,
             seen: dict[Key, tuple[int, ...] | None]) -> None:
    """Move ``tally`` from the step's old state to ``new``, noting the intervals touched."""
    for call_id, call in step.calls:
        _add(tally.counts, tally.calls.pop(call_id, []), -1, seen)
        tally.calls[call_id] = _call_parts(call)
        _add(tally.counts, tally.calls[call_id], 1, seen)
    for parts in tally.segments[step.index:]:
        _add(tally.counts, parts, -1, seen)
    del tally.segments[step.index:]
    newest = new.newest
    for seg in step.new_tail:
        tally.segments.append(_segment_parts(seg, newest))
        _add(tally.counts, tally.segments[-1], 1, seen)


def _changed_rows(new: AgentState, config: AgentConfig,
                  seen: dict[Key, tuple[int, ...] | None], counts: Counts,
                  newest_before: datetime | None) -> list[AgentStats]:
    """Rows of the touched intervals whose counters or ``complete_until`` changed, zeros
    for vanished ones."""
    limit = cutoff(new, config)
    newest = new.newest
    out: list[AgentStats] = []
    for key, before in seen.items():
        if limit is not None and key[1] < limit:
            continue
        after = counts.get(key)
        moved = _complete_until(key, newest_before) != _complete_until(key, newest)
        if after is not None and (before is None or moved
                                  or before[:_TOUCHES] != tuple(after[:_TOUCHES])):
            out.append(_record(new, key, after))
        elif after is None and before is not None:
            out.append(_record(new, key, [0] * _TOUCHES))
    return sorted(out, key=lambda r: (r.interval_kind, r.interval_start))


def _stats_changes_full(old: AgentState, new: AgentState,
                        config: AgentConfig) -> list[AgentStats]:
    """:func:`stats_changes` by comparing every interval (the straightforward way)."""
    out = _compare_all(old, new, config)
    tally = _Tally.build(new, config)  # the next step can be incremental again
    if tally is not None:
        object.__setattr__(new, "_tally", tally)
    return out


def _compare_all(old: AgentState, new: AgentState, config: AgentConfig) -> list[AgentStats]:
    """Rows of every interval (from the cutoff) that differ, zeros for vanished ones."""
    limit = cutoff(new, config)
    before, after = stats(old, config, limit), stats(new, config, limit)
    out = [row for key, row in after.items()
           if key not in before or _content(before[key]) != _content(row)]
    out += [_record(new, key, [0] * _TOUCHES) for key in before if key not in after]
    return sorted(out, key=lambda r: (r.interval_kind, r.interval_start))


# --- redelivery: what a repeated event sends again -----------------------------------------


def resent_stats(state: AgentState, event: Event, config: AgentConfig = DEFAULT_CONFIG,
                 prior: AgentState | None = None) -> list[AgentStats]:
    """The interval rows a repeated ``event`` sends again ([] if ``state`` does not hold it).

    A repeat finds the state unchanged, yet the first delivery's rows may have been lost
    (the worker killed after the changelog write, before the send). So: every current row
    from :func:`~streams.folds.agent_state.resend_since` on (the day of the event, or of
    the previous newest event if earlier: every interval whose numbers or
    ``complete_until`` the event moved), not the whole history; plus what comparing with
    ``prior`` (``agent_state.without_event``, computed if not given) finds - intervals
    sent back with zeros, changes reaching before that day. All at ``state.accepted``:
    the first delivery's rows when the event was the last one folded, current rows always.
    """
    if not state.has(event.event_id):
        return []
    out = stats(state, config, resend_since(state, event, config))
    prior = prior if prior is not None else without_event(state, event, config)
    if prior is not None:
        out.update(((r.interval_kind, r.interval_start), r)
                   for r in _compare_all(prior, state, config))
    return sorted(out.values(), key=lambda r: (r.interval_kind, r.interval_start))
