"""Interval arithmetic of the agent statistics: which interval gets which part of what.

Intervals are aligned on the tenant's local clock (``[09:15, 09:30)``, ``[09:00, 10:00)``,
``[00:00, 24:00)`` in its IANA zone, :mod:`core.timezones`; a local day is 23 or 25 h long
across DST) and keyed by their start as a UTC instant::

    state   |--available--|--ringing--|------on_call------|--available-->
    15 min  |     09:00-09:15     |     09:15-09:30     |   09:30-09:45   |
                                          ^ a state crossing a boundary is split:
                                            each interval gets the part inside it

A *part* is one contribution to one interval (a segment's time, a call's counts); an
interval's counters are the sum of its parts, plus how many parts touch it (an interval no
part touches has no row). Pure functions over :mod:`streams.folds.agent_timeline` types.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from core import timezones
from core.agent_records import AgentStatus, IntervalKind
from streams.folds.agent_timeline import AgentCall, Segment

__all__ = ["INTERVALS", "COUNTERS", "TOUCHES", "Key", "Part", "Counts", "interval_start",
           "interval_end", "split", "segment_parts", "call_parts", "add_parts",
           "complete_until"]

INTERVALS = {
    IntervalKind.QUARTER: timedelta(minutes=15),
    IntervalKind.HOUR: timedelta(hours=1),
    IntervalKind.DAY: timedelta(days=1),
}
COUNTERS = ("logged_in_ms", "available_ms", "ringing_ms", "talk_ms", "wrap_up_ms",
            "offered", "answered", "missed", "handled", "handled_talk_ms")
AT = {name: i for i, name in enumerate(COUNTERS)}
TOUCHES = len(COUNTERS)
"""Index, in an interval's counter list, of how many parts touch it (0 = no row)."""
BUCKET_OF = {IntervalKind.QUARTER: "15 minute", IntervalKind.HOUR: "1 hour",
             IntervalKind.DAY: "1 day"}
"""Interval kind -> the bucket name of :mod:`core.timezones` (shared with the warehouse)."""
UTC_TZ = timezones.zone(timezones.UTC_ZONE)
_MS = timedelta(milliseconds=1)
_STATE_FIELDS = {
    AgentStatus.AVAILABLE: AT["available_ms"], AgentStatus.RINGING: AT["ringing_ms"],
    AgentStatus.ON_CALL: AT["talk_ms"], AgentStatus.WRAP_UP: AT["wrap_up_ms"],
}

Key = tuple[IntervalKind, datetime]
Part = tuple[Key, tuple[tuple[int, int], ...]]
"""One contribution to an interval: (interval, ((counter index, amount), ...))."""
Counts = dict[Key, list[int]]


def interval_start(ts: datetime, kind: IntervalKind, tz: ZoneInfo = UTC_TZ) -> datetime:
    """Start (UTC instant) of the local ``kind`` interval holding ``ts``."""
    return timezones.floor(ts, BUCKET_OF[kind], tz)


def interval_end(key: Key, tz: ZoneInfo = UTC_TZ) -> datetime:
    return timezones.next_bound(key[1], BUCKET_OF[key[0]], tz)


def split(start: datetime, end: datetime, kind: IntervalKind,
          tz: ZoneInfo = UTC_TZ) -> Iterator[tuple[datetime, int]]:
    """``(interval start, whole ms inside it)`` for each interval ``[start, end)`` touches."""
    for bucket, part_start, part_end in timezones.split(start, end, BUCKET_OF[kind], tz):
        yield bucket, (part_end - part_start) // _MS


def segment_parts(seg: Segment, newest: datetime | None, tz: ZoneInfo = UTC_TZ) -> list[Part]:
    """A segment's time per interval; the current segment counts up to ``newest``."""
    end = seg.until if seg.until is not None else newest
    if seg.state is AgentStatus.OFFLINE or end is None:
        return []
    index = _STATE_FIELDS[seg.state]
    return [((kind, bucket), ((0, ms), (index, ms)))
            for kind in INTERVALS for bucket, ms in split(seg.since, end, kind, tz)]


def call_parts(call: AgentCall, tz: ZoneInfo = UTC_TZ) -> list[Part]:
    """offered/answered/missed where the call rang the agent, handled where its talk ended."""
    parts: list[Part] = []
    rang_at = call.ring_start or (call.talk_start if call.answered_by_agent else None)
    for kind in INTERVALS:
        if rang_at is not None:
            ring_over = call.ring_end is not None or call.settled
            parts.append(((kind, interval_start(rang_at, kind, tz)), (
                (AT["offered"], 1), (AT["answered"], int(call.answered_by_agent)),
                (AT["missed"], int(ring_over and not call.answered_by_agent)))))
        if call.talk_start is not None and call.talk_end is not None:
            talk = max(0, (call.talk_end - call.talk_start) // _MS)
            parts.append(((kind, interval_start(call.talk_end, kind, tz)),
                          ((AT["handled"], 1), (AT["handled_talk_ms"], talk))))
    return parts


def add_parts(counts: Counts, parts: Iterable[Part], sign: int,
              gone_before: datetime | None = None, tz: ZoneInfo = UTC_TZ) -> None:
    """Add (sign 1) or take back (-1) contributions. An interval no part touches any more
    is dropped; one that ends by ``gone_before`` and is not held (its row was let go) is
    left alone: its final row was published, and a part alone would make a wrong one."""
    for key, amounts in parts:
        row = counts.get(key)
        if row is None:
            if gone_before is not None and interval_end(key, tz) <= gone_before:
                continue
            row = counts[key] = [0] * (TOUCHES + 1)
        for index, amount in amounts:
            row[index] += sign * amount
        row[TOUCHES] += sign
        if row[TOUCHES] == 0:
            del counts[key]


def complete_until(key: Key, newest: datetime, tz: ZoneInfo = UTC_TZ) -> datetime:
    """How far interval ``key``'s row is counted once the newest event is at ``newest``:
    up to ``newest``, and never past the interval's end (then the row is complete)."""
    return min(newest, interval_end(key, tz))
