"""The folds alone: ``tawag.replay.fold_records`` over synthetic events, no Kafka.

    .venv/bin/python bench/fold_throughput.py [--events 20000] [--agents 200] [--profile]
    .venv/bin/python bench/fold_throughput.py --rate 20 --events 48000 --agents 50

The events are ``replay_throughput.call_events`` (a day of calls to ``--agents`` agents,
default 200, from 5,000 clients) as wire bytes; ``--agents 1`` is one busy line (a call
every 17 s at 20,000 events, each up to 5 minutes long, so its row holds many calls).
Prints events/s (wall clock, and per second of the process's CPU time, which a loaded
machine disturbs less) with the load average, and with ``--profile`` the 25
functions with the most cumulative time (cProfile). What the Faust worker spends per
event in the project's own code.

``--rate R`` folds the shape of ``bench/edge_load.py --pipeline --inbound`` instead: R
calls a second spread over ``--agents`` in turn, each rung, answered after 100 ms and
ended 500 ms later, in event-time order - a busy line per agent (at 20 calls/s to 50
agents, a call every 2.5 s: 120 calls inside the 5-minute horizon). It prints events per
CPU second for each tenth of the run and the agents' largest row, so a cost that grows
with the calls a row holds shows as a falling rate.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import NamedTuple

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from replay_throughput import T0, _event, call_events  # noqa: E402

from core.events import Direction, Event, EventType, to_json  # noqa: E402
from tawag.replay import Replayer, fold_records  # noqa: E402


class Record(NamedTuple):
    topic: str
    partition: int
    offset: int
    value: bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--rate", type=float, help="calls per second, busy lines (docstring)")
    args = parser.parse_args()
    if args.rate:
        by_tenth(busy_lines(args.events // 4, args.rate, args.agents))
        return
    records = [Record("tawag.call-events", 0, i, to_json(e))
               for i, e in enumerate(call_events(args.events, args.agents, 5000))]
    t0, c0 = time.perf_counter(), time.process_time()
    fold_records(records)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"{len(records)} events folded in {elapsed:.2f} s: {len(records) / elapsed:,.0f} "
          f"events/s ({cpu:.2f} s of CPU: {len(records) / cpu:,.0f} events per CPU second; "
          f"load average {os.getloadavg()[0]:.1f})")
    if args.profile:
        profile = cProfile.Profile()
        profile.runcall(fold_records, records)
        pstats.Stats(profile).sort_stats("cumulative").print_stats(25)


def busy_lines(calls: int, rate: float, agents: int) -> list[Event]:
    """``calls`` calls at ``rate`` a second to ``agents`` agents in turn (``--rate``)."""
    out: list[Event] = []
    for n in range(calls):
        call, agent = f"bench-{n}@127.0.0.1", str(100 + n % agents)
        start = T0 + timedelta(seconds=n / rate)
        parties = {"caller": f"+7495{n % 5000:07d}", "callee": agent,
                   "direction": Direction.INBOUND, "did": "+74957654321"}
        out += [_event(call, start, parties, EventType.CALL_OFFERED, 0),
                _event(call, start, parties, EventType.CALL_RINGING, 0.05),
                _event(call, start, parties, EventType.CALL_ANSWERED, 0.1, agent=agent),
                _event(call, start, parties, EventType.CALL_ENDED, 0.6, duration_ms=500,
                       hangup_by=agent)]
    return sorted(out, key=lambda e: e.ts)


def by_tenth(events: list[Event]) -> None:
    """Fold ``events`` live-like (one Replayer), timing each tenth of them."""
    raw, replayer = [to_json(e) for e in events], Replayer()
    tenth = len(raw) // 10
    for n in range(10):
        c0 = time.process_time()
        for value in raw[n * tenth:(n + 1) * tenth]:
            replayer.event(value)
        cpu = time.process_time() - c0
        biggest = max(len(orjson.dumps(row)) for row in replayer.tables["agents"].values())
        print(f"tenth {n + 1}: {tenth / cpu:,.0f} events per CPU second, largest agent row "
              f"{biggest:,} bytes")
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
