"""A real single-node Kafka (KRaft) broker, run through tawag.kafka, against both clients.

The stack depends on two Python Kafka clients talking to the pinned Apache Kafka:
kafka-python (ingest bridge, loader, tools) and aiokafka under faust-streaming (streams).
Kafka 4.0 removed old protocol versions, so these tests are the compatibility check of
the pinned version: produce/consume with idempotence, a Faust worker's round trip (with
a table, so its changelog topic and consumer group work too), and a broker restart that
keeps the data. Ports 29092/29093 and a temporary data folder keep it apart from a
running stack.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType

from core.settings import Settings, load
from tawag import kafka as tk

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent
BOOTSTRAP = "127.0.0.1:29092"
CONTROLLER_PORT = 29093
READY_TIMEOUT = 90.0


class Broker:
    """One broker JVM started from tawag.kafka's command, stopped by PID."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = settings.log_dir / "kafka.log"
        self.ready_seconds: list[float] = []

    def start(self) -> None:
        tk.prepare_storage(self.settings)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                tk.kafka_command(self.settings), stdout=log, stderr=subprocess.STDOUT
            )
        started = time.monotonic()
        deadline = started + READY_TIMEOUT
        while not tk.kafka_ready(self.settings, timeout=1.0):
            if self.proc.poll() is not None:
                pytest.fail(f"broker exited with {self.proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"broker not ready after {READY_TIMEOUT}s:\n{self.log_tail()}")
            time.sleep(0.1)
        self.ready_seconds.append(time.monotonic() - started)

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM to the PID (a clean shutdown), SIGKILL only if it hangs."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
            pytest.fail(f"broker ignored SIGTERM for {timeout}s:\n{self.log_tail()}")
        finally:
            self.proc = None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    s = load(
        data_dir=tmp_path_factory.mktemp("kafka-stack"),
        kafka_bootstrap=BOOTSTRAP,
        kafka_controller_port=CONTROLLER_PORT,
    )
    if tk.missing_jars(s):
        pytest.skip(f"Kafka jars not installed in {s.kafka_libs}: run {tk.INSTALLER}")
    for port in (29092, CONTROLLER_PORT):
        if not _port_free(port):
            pytest.fail(f"port {port} is busy: a broker from an earlier run is still up?")
    return s


@pytest.fixture(scope="module")
def broker(settings: Settings) -> Iterator[Broker]:
    b = Broker(settings)
    try:
        b.start()
        yield b
    finally:
        b.stop()


def test_ensure_topics_creates_then_is_idempotent(broker: Broker) -> None:
    s = broker.settings
    wanted = {spec.name for spec in tk.topic_specs(s)}
    created = tk.ensure_topics(s)
    assert set(created) <= wanted  # all of them when this test runs first on the new broker
    assert tk.ensure_topics(s) == []

    admin = tk.admin_client(s, 10.0)
    try:
        topics = {t["name"]: t for t in admin.describe_topics(sorted(wanted))}
        resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in sorted(wanted)]
        configs = admin.describe_configs(resources)["topic"]
    finally:
        admin.close()
    assert len(topics[s.topic_call_events]["partitions"]) == s.topic_partitions
    assert len(topics[s.topic_cdrs]["partitions"]) == s.topic_partitions
    assert len(topics[s.topic_dead_letter]["partitions"]) == 1
    for spec in tk.topic_specs(s):
        actual = {key: entry["value"] for key, entry in configs[spec.name].items()}
        assert {k: actual.get(k) for k in spec.configs} == dict(spec.configs), spec.name
    assert configs[s.topic_cdrs]["cleanup.policy"]["value"] == "compact"


def test_idempotent_producer_and_group_consumer_exactly_once_in_key_order(
    broker: Broker,
) -> None:
    s = broker.settings
    tk.ensure_topics(s)
    keys = [f"call-{i}" for i in range(12)]
    per_key = 25
    producer = KafkaProducer(
        bootstrap_servers=s.kafka_bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
    )
    try:
        futures = [
            producer.send(
                s.topic_call_events,
                key=key.encode(),
                value=json.dumps({"key": key, "seq": seq}).encode(),
            )
            for seq in range(per_key)
            for key in keys
        ]
        producer.flush(30)
        partition_of = defaultdict(set)
        for future in futures:
            meta = future.get(timeout=30)
            partition_of[meta.topic].add(meta.partition)
    finally:
        producer.close(10)
    expected = len(keys) * per_key
    assert len(partition_of[s.topic_call_events]) > 1, "keys should spread over partitions"

    group = f"test-{uuid.uuid4().hex[:8]}"
    seen: dict[str, list[int]] = defaultdict(list)
    partitions: dict[str, set[int]] = defaultdict(set)
    consumer = KafkaConsumer(
        s.topic_call_events,
        bootstrap_servers=s.kafka_bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    try:
        deadline = time.monotonic() + 60
        total = 0
        while total < expected and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    key = record.key.decode()
                    seen[key].append(json.loads(record.value)["seq"])
                    partitions[key].add(record.partition)
                    total += 1
        consumer.commit()
    finally:
        consumer.close()

    assert total == expected
    for key in keys:
        assert seen[key] == list(range(per_key)), f"{key}: out of order or duplicated"
        assert len(partitions[key]) == 1, f"{key} spread over partitions {partitions[key]}"

    # The group committed its offsets: a new member of the same group gets nothing again.
    again = KafkaConsumer(
        s.topic_call_events,
        bootstrap_servers=s.kafka_bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    try:
        leftovers = 0
        deadline = time.monotonic() + 30
        while not again.assignment() and time.monotonic() < deadline:
            leftovers += sum(len(r) for r in again.poll(timeout_ms=200).values())
        assert again.assignment(), "second group member never got partitions"
        settle = time.monotonic() + 2  # fetches from the committed offsets come back at once
        while time.monotonic() < settle:
            leftovers += sum(len(r) for r in again.poll(timeout_ms=200).values())
        assert leftovers == 0
    finally:
        again.close()


def test_faust_worker_round_trip(broker: Broker, tmp_path: Path) -> None:
    """faust-streaming (aiokafka) consumes, keeps a table and produces on this Kafka."""
    s = broker.settings
    suffix = uuid.uuid4().hex[:8]
    app_id = f"tawag-echo-{suffix}"
    topic_in, topic_out = f"echo-in-{suffix}", f"echo-out-{suffix}"
    env = {
        **os.environ,
        "ECHO_BROKER": s.kafka_bootstrap,
        "ECHO_IN": topic_in,
        "ECHO_OUT": topic_out,
        "ECHO_APP_ID": app_id,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    log_path = tmp_path / "faust.log"
    with log_path.open("wb") as log:
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "faust",
                "-A",
                "faust_echo",
                "--datadir",
                str(tmp_path / "faust"),
                "worker",
                "-l",
                "info",
            ],
            cwd=HERE,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def faust_log() -> str:
        return log_path.read_text(errors="replace")[-4000:]

    try:
        producer = KafkaProducer(
            bootstrap_servers=s.kafka_bootstrap, acks="all", enable_idempotence=True
        )
        try:
            for i in range(6):
                producer.send(
                    topic_in, key=f"k{i % 2}".encode(), value=json.dumps({"i": i}).encode()
                )
            producer.flush(30)
        finally:
            producer.close(10)

        consumer = KafkaConsumer(
            topic_out,
            bootstrap_servers=s.kafka_bootstrap,
            auto_offset_reset="earliest",
            group_id=None,
            metadata_max_age_ms=1000,  # pick up the topic as soon as the worker creates it
        )
        got: list[tuple[bytes, dict]] = []
        try:
            deadline = time.monotonic() + 90
            while len(got) < 6 and time.monotonic() < deadline:
                if worker.poll() is not None:
                    pytest.fail(f"faust worker exited {worker.returncode}:\n{faust_log()}")
                for records in consumer.poll(timeout_ms=500).values():
                    got.extend((r.key, json.loads(r.value)) for r in records)
        finally:
            consumer.close()
        assert len(got) == 6, f"faust echoed {len(got)}/6:\n{faust_log()}"
        by_key: dict[bytes, list[tuple[int, int]]] = defaultdict(list)
        for key, value in got:
            by_key[key].append((value["echo"]["i"], value["count"]))
        assert by_key[b"k0"] == [(0, 1), (2, 2), (4, 3)]
        assert by_key[b"k1"] == [(1, 1), (3, 2), (5, 3)]

        admin = tk.admin_client(s, 10.0)
        try:
            assert f"{app_id}-echo-counts-changelog" in admin.list_topics()
        finally:
            admin.close()
    finally:
        if worker.poll() is None:
            os.kill(worker.pid, signal.SIGTERM)
            try:
                worker.wait(60)
            except subprocess.TimeoutExpired:
                os.kill(worker.pid, signal.SIGKILL)
                worker.wait(10)
    assert worker.returncode == 0, faust_log()
    assert "Traceback" not in log_path.read_text(errors="replace"), faust_log()


def test_restart_keeps_data_and_cluster(broker: Broker) -> None:
    s = broker.settings
    topic = f"restart-{uuid.uuid4().hex[:8]}"

    def produce(values: range) -> None:
        producer = KafkaProducer(
            bootstrap_servers=s.kafka_bootstrap, acks="all", enable_idempotence=True
        )
        try:
            for v in values:
                producer.send(topic, key=b"same-key", value=str(v).encode())
            producer.flush(30)
        finally:
            producer.close(10)

    def read_all() -> list[int]:
        """Everything in the topic, from offset 0 up to the end offsets read first."""
        consumer = KafkaConsumer(bootstrap_servers=s.kafka_bootstrap, group_id=None)
        try:
            parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
            consumer.assign(parts)
            consumer.seek_to_beginning(*parts)
            end = consumer.end_offsets(parts)
            values: list[int] = []
            deadline = time.monotonic() + 30
            while any(consumer.position(tp) < end[tp] for tp in parts):
                assert time.monotonic() < deadline, f"stuck below end offsets {end}"
                for records in consumer.poll(timeout_ms=500).values():
                    values.extend(int(r.value) for r in records)
            return values
        finally:
            consumer.close()

    produce(range(0, 20))
    assert read_all() == list(range(20))
    meta = tk.log_dirs(s) / "meta.properties"
    meta_before = meta.read_text()
    cluster_before = tk.cluster_id(s)

    assert broker.stop() == 128 + signal.SIGTERM  # the JVM's exit status after SIGTERM
    assert not tk.kafka_ready(s, timeout=0.5)
    broker.start()  # prepare_storage must not format again

    assert meta.read_text() == meta_before
    assert tk.cluster_id(s) == cluster_before
    assert f"cluster.id={cluster_before}" in meta_before
    assert read_all() == list(range(20))
    produce(range(20, 30))
    assert read_all() == list(range(30))
    assert tk.ensure_topics(s) == []  # Tawag's topics survived the restart too
    print(f"broker start-to-ready: {[round(t, 2) for t in broker.ready_seconds]} s")
