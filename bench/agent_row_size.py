"""Agent row size and fold throughput: one very busy agent for a week.

    .venv/bin/python bench/agent_row_size.py [--days 7] [--calls-per-day 10000]

Synthetic events of extension 101 of tenant acme: ``--calls-per-day`` calls a day
(inbound from clients through a DID, and internal from colleagues), ringing 2-15 s and
talking 5-300 s (so calls overlap: a queue's extension), 70% answered, 15% cancelled,
10% busy, 5% with a lost answer (rebuilt from the BYE's duration); the REGISTER refreshed
every 30 minutes. Each event is delivered up to a minute late (inside the lateness
horizon), in that order, as JSON on the wire, through the agent's ``fold_into`` over a
dict - the worker's path: decode the row, fold, encode the row, the records to publish.

Prints the row's JSON size (as the changelog would carry it) at the end of each day and
its maximum and final value, and the fold's throughput in events/s. A benchmark: it
prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.events import Direction, Event, EventType, from_json, to_json  # noqa: E402
from streams.agents.agent_stats import fold_into  # noqa: E402

T0 = datetime(2026, 11, 23, tzinfo=UTC)
KEY = "acme:101"


def _call(rnd: random.Random, n: int, start: datetime) -> list[Event]:
    inbound = rnd.random() < 0.7
    parties: dict[str, Any] = (
        {"caller": f"+7495{rnd.randrange(10**7):07d}", "callee": "101", "did": "+74957654321",
         "direction": Direction.INBOUND} if inbound else
        {"caller": str(102 + rnd.randrange(90)), "callee": "101",
         "direction": Direction.INTERNAL})
    cid = f"w{n}@edge-1"

    def ev(kind: EventType, at: datetime, **more: Any) -> Event:
        return Event(event_id=f"{cid}/{kind.value}", type=kind, tenant="acme", ts=at,
                     source="bench", call_id=cid, leg_id=cid, **(parties | more))

    ring = timedelta(milliseconds=rnd.randrange(2_000, 15_000))
    talk = timedelta(milliseconds=rnd.randrange(5_000, 300_000))
    out = [ev(EventType.CALL_OFFERED, start),
           ev(EventType.CALL_RINGING, start + timedelta(milliseconds=30))]
    outcome = rnd.random()
    if outcome < 0.15:
        return [*out, ev(EventType.CALL_CANCELLED, start + ring, sip_code=487)]
    if outcome < 0.25:
        return [*out, ev(EventType.CALL_FAILED, start + ring, sip_code=486)]
    end = ev(EventType.CALL_ENDED, start + ring + talk, agent="101",
             duration_ms=talk // timedelta(milliseconds=1))
    if outcome < 0.30:
        return [*out, end]
    return [*out, ev(EventType.CALL_ANSWERED, start + ring, agent="101"), end]


def week(days: int, calls_per_day: int, seed: int = 11) -> list[Event]:
    """The agent's events over ``days``, each up to a minute late, in arrival order."""
    rnd = random.Random(seed)
    events = [Event(event_id=f"reg/{m}", type=EventType.AGENT_REGISTERED, tenant="acme",
                    ts=T0 + timedelta(minutes=m), source="bench", agent="101",
                    extra={"expires": 3600})
              for m in range(0, days * 1440, 30)]
    for n in range(days * calls_per_day):
        start = T0 + timedelta(seconds=n * 86_400 / calls_per_day + rnd.uniform(0, 5))
        events += _call(rnd, n, start)
    late = [(e.ts + timedelta(milliseconds=rnd.randrange(60_000)), i, e)
            for i, e in enumerate(events)]
    return [e for _, _, e in sorted(late, key=lambda x: (x[0], x[1]))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--calls-per-day", type=int, default=10_000)
    args = parser.parse_args()
    started = time.perf_counter()
    wire = [to_json(e) for e in week(args.days, args.calls_per_day)]
    print(f"{len(wire):,} events of {args.days * args.calls_per_day:,} calls generated in "
          f"{time.perf_counter() - started:.1f}s")
    table: dict[str, Any] = {}
    biggest, published, day_ends = 0, 0, {}
    fold_s = 0.0
    for i, raw in enumerate(wire):
        event = from_json(raw)
        t = time.perf_counter()
        changes, stats = fold_into(table, KEY, event)
        fold_s += time.perf_counter() - t
        published += len(changes) + len(stats)
        if i % 50 == 0 or i == len(wire) - 1:
            size = len(json.dumps(table[KEY], separators=(",", ":")))
            biggest = max(biggest, size)
            day_ends[(event.ts - T0).days] = size
    for day, size in sorted(day_ends.items()):
        print(f"  day {day + 1}: row {size:,} bytes at the day's last sample")
    final = len(json.dumps(table[KEY], separators=(",", ":")))
    print(f"row size: max {biggest:,} bytes (sampled every 50 events), final {final:,} bytes")
    print(f"fold (fold_into: decode row, fold, encode row): {len(wire) / fold_s:,.0f} events/s "
          f"({fold_s:.1f}s, {published:,} records to publish)")
    row = table[KEY]
    print(f"final row: {len(row['calls'])} open calls, {len(row['segments'])} segments, "
          f"{len(row['counts'])} intervals, {len(row['finished'])} finished call ids, "
          f"accepted {row['accepted']:,}, late {row['late']}, dropped {row['dropped']}, "
          f"trimmed {row['trimmed']}")


if __name__ == "__main__":
    main()
