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

An agent's current state counts up to its newest event (``complete_until``): numbers of
the current interval grow as events (registration refreshes included) come in.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import astuple, replace
from datetime import UTC, datetime, timedelta

from streams.agent_records import AgentStats, AgentStatus, IntervalKind
from streams.folds.agent_state import (
    DEFAULT_CONFIG,
    AgentConfig,
    AgentState,
    calls,
    cutoff,
    timeline,
)

__all__ = ["INTERVALS", "interval_start", "split", "stats", "stats_changes"]

INTERVALS = {
    IntervalKind.QUARTER: timedelta(minutes=15),
    IntervalKind.HOUR: timedelta(hours=1),
    IntervalKind.DAY: timedelta(days=1),
}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_STATE_FIELDS = {
    AgentStatus.AVAILABLE: "available_ms", AgentStatus.RINGING: "ringing_ms",
    AgentStatus.ON_CALL: "talk_ms", AgentStatus.WRAP_UP: "wrap_up_ms",
}
_COUNTERS = ("logged_in_ms", "available_ms", "ringing_ms", "talk_ms", "wrap_up_ms",
             "offered", "answered", "missed", "handled", "handled_talk_ms")

Key = tuple[IntervalKind, datetime]


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


def _add_states(acc: dict[Key, dict[str, int]], state: AgentState,
                config: AgentConfig) -> None:
    newest = state.newest
    for seg in timeline(state, config):
        end = seg.until if seg.until is not None else newest
        if seg.state is AgentStatus.OFFLINE or end is None:
            continue
        for kind in INTERVALS:
            for bucket, ms in split(seg.since, end, kind):
                acc[(kind, bucket)]["logged_in_ms"] += ms
                acc[(kind, bucket)][_STATE_FIELDS[seg.state]] += ms


def _add_calls(acc: dict[Key, dict[str, int]], state: AgentState) -> None:
    for call in calls(state):
        rang_at = call.ring_start or (call.talk_start if call.answered_by_agent else None)
        for kind in INTERVALS:
            if rang_at is not None:
                row = acc[(kind, interval_start(rang_at, kind))]
                row["offered"] += 1
                row["answered"] += call.answered_by_agent
                ring_over = call.ring_end is not None or call.settled
                row["missed"] += ring_over and not call.answered_by_agent
            if call.talk_start is not None and call.talk_end is not None:
                row = acc[(kind, interval_start(call.talk_end, kind))]
                row["handled"] += 1
                row["handled_talk_ms"] += max(0, (call.talk_end - call.talk_start) // _MS)


def _record(state: AgentState, key: Key, values: dict[str, int]) -> AgentStats:
    handle = values["talk_ms"] + values["wrap_up_ms"]
    busy_or_idle = handle + values["available_ms"]
    newest = state.newest
    assert newest is not None
    return AgentStats(
        tenant=state.tenant, agent=state.agent, interval_kind=key[0], interval_start=key[1],
        version=state.accepted, **{name: values.get(name, 0) for name in _COUNTERS},
        aht_talk_ms=values["handled_talk_ms"] / values["handled"] if values["handled"] else None,
        occupancy=handle / busy_or_idle if busy_or_idle else None,
        complete_until=newest,
    )


def stats(state: AgentState, config: AgentConfig = DEFAULT_CONFIG,
          since: datetime | None = None) -> dict[Key, AgentStats]:
    """Every interval with activity, from ``since`` (default: the state's cutoff) on."""
    if not state.events:
        return {}
    limit = since if since is not None else cutoff(state, config)
    acc: dict[Key, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    _add_states(acc, state, config)
    _add_calls(acc, state)
    return {key: _record(state, key, values) for key, values in sorted(acc.items())
            if limit is None or key[1] >= limit}


def _numbers(row: AgentStats) -> tuple:
    return astuple(replace(row, version=0, complete_until=_EPOCH))


def stats_changes(old: AgentState, new: AgentState,
                  config: AgentConfig = DEFAULT_CONFIG) -> list[AgentStats]:
    """Interval rows whose numbers differ between ``old`` and ``new`` (from the cutoff on).

    An interval that had numbers before and has none now is sent with zeros.
    """
    if new is old or not new.events:
        return []
    limit = cutoff(new, config)
    before, after = stats(old, config, limit), stats(new, config, limit)
    out = [row for key, row in after.items()
           if key not in before or _numbers(before[key]) != _numbers(row)]
    out += [_record(new, key, defaultdict(int)) for key in before if key not in after]
    return sorted(out, key=lambda r: (r.interval_kind, r.interval_start))
