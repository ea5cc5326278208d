"""How fast the ingest bridge's spool takes events (with fsync) and drains them to Kafka.

1. Append: ``--events`` v1 events (about 450 bytes of JSON each) appended to a fresh
   spool, ``Spool.sync()`` (one fsync) after every ``--batch`` of them — 1 is the worst
   case (one event per evapi read), the bridge syncs once per read.
2. Drain without Kafka: ``pending`` + ``ack`` in batches of 500, the spool's own cost.
3. Drain to Kafka (with ``--kafka``): a single-node broker started from tawag.kafka on
   ports 25192/25193 in a temporary folder; the spool, filled while nothing reads it, is
   emptied by the bridge's ``Forwarder`` into ``tawag.call-events``; time until the spool
   is empty (every event acknowledged by the broker).

Prints events/s; never fails on a time (a benchmark, not a test).

    .venv/bin/python bench/spool_throughput.py --events 20000 --batch 1
    TAWAG_LIBS_DIR=... .venv/bin/python bench/spool_throughput.py --events 50000 --kafka
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.events import Direction, Event, EventType, to_json  # noqa: E402
from ingest.bridge import (  # noqa: E402
    CHANNEL_DEAD_LETTERS,
    CHANNEL_EVENTS,
    Forwarder,
    kafka_producer,
)
from ingest.spool import Spool  # noqa: E402


def sample_events(n: int) -> list[tuple[bytes, bytes]]:
    t0 = datetime(2026, 12, 1, tzinfo=UTC)
    out = []
    for i in range(n):
        ev = Event(event_id=f"{i:032x}", type=EventType.CALL_RINGING, tenant="acme",
                   ts=t0 + timedelta(milliseconds=i), source="kamailio@127.0.0.1:5060",
                   call_id=f"{i // 4}-1234567890@127.0.0.1",
                   leg_id=f"{i // 4}-1234567890@127.0.0.1#1",
                   direction=Direction.INBOUND, caller="+74951234567", callee="101",
                   did="+74957654321", agent="101", sip_code=180, reason="Ringing")
        out.append((ev.key.encode(), to_json(ev)))
    return out


def fill(spool: Spool, events: list[tuple[bytes, bytes]], batch: int) -> float:
    started = time.perf_counter()
    for i, (key, value) in enumerate(events, 1):
        spool.append(CHANNEL_EVENTS, key, value)
        if i % batch == 0:
            spool.sync()
    spool.sync()
    return time.perf_counter() - started


def drain_locally(spool: Spool) -> float:
    started = time.perf_counter()
    while batch := spool.pending(500):
        spool.ack([r.seq for r in batch])
    return time.perf_counter() - started


def drain_to_kafka(spool: Spool, data: Path) -> float:
    from core.settings import load
    from tawag import kafka as tk

    s = load(data_dir=data, kafka_bootstrap="127.0.0.1:25192", kafka_controller_port=25193)
    tk.prepare_storage(s)
    with (data / "kafka.log").open("ab") as log:
        broker = subprocess.Popen(tk.kafka_command(s), stdout=log, stderr=subprocess.STDOUT)
    try:
        while not tk.kafka_ready(s, timeout=1.0):
            time.sleep(0.2)
        tk.ensure_topics(s)
        forwarder = Forwarder(spool, lambda: kafka_producer(s.kafka_bootstrap),
                              {CHANNEL_EVENTS: s.topic_call_events,
                               CHANNEL_DEAD_LETTERS: s.topic_dead_letter})
        stop = threading.Event()
        started = time.perf_counter()
        thread = threading.Thread(target=forwarder.run, args=(stop,))
        thread.start()
        while spool.depth:
            time.sleep(0.01)
        elapsed = time.perf_counter() - started
        stop.set()
        thread.join()
        return elapsed
    finally:
        broker.terminate()
        broker.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=1, help="events per fsync")
    parser.add_argument("--kafka", action="store_true", help="also drain into a real broker")
    args = parser.parse_args()
    events = sample_events(args.events)
    size = sum(len(k) + len(v) for k, v in events) / len(events)
    with tempfile.TemporaryDirectory(prefix="spool-bench-") as tmp:
        spool = Spool(Path(tmp) / "spool", max_bytes=2**31)
        took = fill(spool, events, args.batch)
        print(f"append+fsync: {args.events} events of ~{size:.0f} B, fsync every "
              f"{args.batch}: {took:.2f} s, {args.events / took:,.0f} events/s, "
              f"{spool.bytes / 2**20:.1f} MiB on disk")
        if args.kafka:
            took = drain_to_kafka(spool, Path(tmp))
            print(f"drain to Kafka: {args.events} events in {took:.2f} s, "
                  f"{args.events / took:,.0f} events/s")
        else:
            took = drain_locally(spool)
            print(f"drain (pending+ack, no Kafka): {took:.2f} s, "
                  f"{args.events / took:,.0f} events/s")
        spool.close()


if __name__ == "__main__":
    main()
