"""Replay throughput: ``tawag replay``'s read + fold (+ write) against a plain consumer.

    .venv/bin/python bench/replay_throughput.py [--events 200000] [--agents 200]

Starts its own single-node Kafka (KRaft) on 127.0.0.1:28292/28293 in a temporary data
folder, produces ``--events`` synthetic call events (calls of 4 events: offered, ringing,
answered, ended; inbound from ``--clients`` numbers to ``--agents`` extensions, spread
over a day) to a 4-partition topic keyed by call id, then times, on the same topic:

1. plain: a kafka-python consumer (no group) reading every message to the end;
2. replay (no warehouse): tawag.replay.read_topic + merge + the agents' folds;
3. replay (with warehouse): the same plus writing through the loader into a fresh chdb.

Prints events/s for each and the ratio plain / replay. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.events import Direction, Event, EventType, to_json  # noqa: E402
from core.settings import load  # noqa: E402
from tawag import kafka  # noqa: E402
from tawag.replay import fold_records, merge_by_time, read_topic, write  # noqa: E402
from warehouse.client import ChdbClient  # noqa: E402
from warehouse.migrate import migrate  # noqa: E402

T0 = datetime(2026, 11, 26, 0, 0, tzinfo=UTC)


def _event(call: str, start: datetime, parties: dict[str, object], kind: EventType, s: float,
           **fields: object) -> Event:
    return Event(event_id=f"{call}/{kind.value}", type=kind, tenant="acme",
                 ts=start + timedelta(seconds=s), source="bench", call_id=call, leg_id=call,
                 **(parties | fields))  # type: ignore[arg-type]


def call_events(n_events: int, agents: int, clients: int, seed: int = 7) -> list[Event]:
    rnd = random.Random(seed)
    out: list[Event] = []
    for n in range(n_events // 4):
        call = f"bench-{n}@127.0.0.1"
        start = T0 + timedelta(seconds=n * 86_400 / (n_events // 4))
        agent = str(100 + rnd.randrange(agents))
        parties = {"caller": f"+7495{rnd.randrange(clients):07d}", "callee": agent,
                   "direction": Direction.INBOUND, "did": "+74957654321"}

        def ev(kind: EventType, s: float, **fields: object) -> Event:
            return _event(call, start, parties, kind, s, **fields)  # noqa: B023

        ring_s, talk_s = rnd.uniform(1, 20), rnd.uniform(5, 300)
        out += [ev(EventType.CALL_OFFERED, 0), ev(EventType.CALL_RINGING, 0.1),
                ev(EventType.CALL_ANSWERED, ring_s, agent=agent),
                ev(EventType.CALL_ENDED, ring_s + talk_s, duration_ms=round(talk_s * 1000),
                   hangup_by=agent)]
    return out


def produce(bootstrap: str, topic: str, events: list[Event]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20,
                             batch_size=1 << 20, compression_type=None)
    for e in events:
        producer.send(topic, key=(e.call_id or "").encode(), value=to_json(e))
    producer.flush()
    producer.close()


def plain_consume(bootstrap: str, topic: str) -> int:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             max_partition_fetch_bytes=8 << 20, fetch_max_bytes=64 << 20)
    parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    ends = consumer.end_offsets(parts)
    total, target = 0, sum(ends.values())
    while total < target:
        for messages in consumer.poll(timeout_ms=500, max_records=5_000).values():
            total += len(messages)
    consumer.close(autocommit=False)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--clients", type=int, default=20_000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="tawag-replay-bench-") as tmp:
        settings = load(environ={}, data_dir=Path(tmp), kafka_bootstrap="127.0.0.1:28292",
                        kafka_controller_port=28293)
        kafka.prepare_storage(settings)
        log = open(Path(tmp) / "kafka.log", "wb")  # noqa: SIM115
        broker = subprocess.Popen(kafka.kafka_command(settings), stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + 90
            while not kafka.kafka_ready(settings):
                if time.monotonic() > deadline or broker.poll() is not None:
                    raise SystemExit("kafka did not start; see kafka.log")
                time.sleep(0.5)
            kafka.ensure_topics(settings)
            topic = settings.topic_call_events
            events = call_events(args.events, args.agents, args.clients)
            t = time.perf_counter()
            produce(settings.kafka_bootstrap, topic, events)
            print(f"produced {len(events)} events in {time.perf_counter() - t:.1f}s")

            t = time.perf_counter()
            n_plain = plain_consume(settings.kafka_bootstrap, topic)
            plain_s = time.perf_counter() - t

            t = time.perf_counter()
            records = merge_by_time(read_topic(settings.kafka_bootstrap, topic))
            read_s = time.perf_counter() - t
            replayer = fold_records(records, settings.default_country)
            fold_s = time.perf_counter() - t - read_s

            client = ChdbClient(Path(tmp) / "replay-chdb")
            migrate(client)
            t = time.perf_counter()
            write(client, replace(settings), records, replayer.out)
            write_s = time.perf_counter() - t
            client.close()
        finally:
            broker.terminate()
            broker.wait(60)
            log.close()

    n = len(records)
    assert n == n_plain == len(events), (n, n_plain, len(events))
    rates = {"plain kafka-python consumer": n / plain_s,
             "replay read only": n / read_s,
             "replay read + fold (no warehouse)": n / (read_s + fold_s),
             "replay read + fold + write (chdb)": n / (read_s + fold_s + write_s)}
    print(f"{n} events, {len(replayer.out.cdrs)} CDR revisions, "
          f"{len(replayer.out.agent_stats)} agent-stats rows, "
          f"{len(replayer.out.callbacks)} callback rows")
    print(f"times: plain {plain_s:.2f}s, read {read_s:.2f}s, fold {fold_s:.2f}s, "
          f"write {write_s:.2f}s")
    for name, rate in rates.items():
        print(f"{name:40s} {rate:12,.0f} events/s")
    for name in list(rates)[2:]:
        print(f"ratio plain / {name}: {rates['plain kafka-python consumer'] / rates[name]:.1f}x")


if __name__ == "__main__":
    main()
