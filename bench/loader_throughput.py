"""The warehouse loader's write path alone: decode, encode and insert into chdb, no Kafka.

    .venv/bin/python bench/loader_throughput.py [--events 20000] [--batch 500] [--profile]

The events are ``replay_throughput.call_events`` folded by ``tawag.replay.fold_records``
(what the Faust worker would publish), then loaded into a fresh migrated chdb store the
way the live loader does (``warehouse.loader.Loader``, in ``--batch``-message batches as
a poll hands them over): the raw events into ``call_events``, the CDRs, agent states and
stats and callbacks into their tables. Prints rows per second of wall clock and per
second of the process's CPU time (chdb's threads included), with the load average; with
``--profile`` the 25 functions with the most cumulative time (cProfile).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from replay_throughput import call_events  # noqa: E402

from core.events import to_json  # noqa: E402
from core.settings import load  # noqa: E402
from tawag import replay  # noqa: E402
from tawag.replay import Record, fold_records  # noqa: E402
from warehouse.client import ChdbClient  # noqa: E402
from warehouse.migrate import migrate  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    records = [Record("tawag.call-events", 0, i, to_json(e))
               for i, e in enumerate(call_events(args.events, 200, 5000))]
    folded = fold_records(records).out
    replay.BATCH = args.batch
    with tempfile.TemporaryDirectory(prefix="tawag-loader-bench-") as tmp:
        settings = load(environ={}, data_dir=Path(tmp))
        client = ChdbClient(Path(tmp) / "chdb")
        migrate(client)
        t0, c0 = time.perf_counter(), time.process_time()
        if args.profile:
            profile = cProfile.Profile()
            rows = profile.runcall(replay.write, client, settings, records, folded)
        else:
            rows = replay.write(client, settings, records, folded)
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
        client.close()
    total = sum(rows.values())
    print(f"{total:,} rows ({', '.join(f'{t} {n:,}' for t, n in sorted(rows.items()))}) "
          f"loaded in {elapsed:.2f} s: {total / elapsed:,.0f} rows/s ({cpu:.2f} s of CPU: "
          f"{total / cpu:,.0f} rows per CPU second; load average {os.getloadavg()[0]:.1f})")
    if args.profile:
        pstats.Stats(profile).sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    main()
