"""The folds alone: ``tawag.replay.fold_records`` over synthetic events, no Kafka.

    .venv/bin/python bench/fold_throughput.py [--events 20000] [--agents 200] [--profile]

The events are ``replay_throughput.call_events`` (a day of calls to ``--agents`` agents,
default 200, from 5,000 clients) as wire bytes; ``--agents 1`` is one busy line (a call
every 17 s at 20,000 events, each up to 5 minutes long, so its row holds many calls).
Prints events/s (wall clock, and per second of the process's CPU time, which a loaded
machine disturbs less) with the load average, and with ``--profile`` the 25
functions with the most cumulative time (cProfile). What the Faust worker spends per
event in the project's own code.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from replay_throughput import call_events  # noqa: E402

from core.events import to_json  # noqa: E402
from tawag.replay import fold_records  # noqa: E402


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
    args = parser.parse_args()
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


if __name__ == "__main__":
    main()
