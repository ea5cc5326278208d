"""The single-node Apache Kafka broker of a Tawag stack: config, storage, command, topics.

No Kafka broker is packaged for Debian 12 or PyPI, so the stack runs Apache Kafka's own
jars from Maven Central (fetched by ``deploy/install-debian.sh`` into
``settings.kafka_libs``) on OpenJDK 17, in KRaft mode: one JVM that is both broker and
controller, listening on loopback only. This module holds everything the process
supervisor needs to run it; the supervisor owns the process itself:

1. :func:`missing_jars` - has the installer fetched the jars? (else tell the operator)
2. :func:`prepare_storage` - write ``server.properties`` and format the log dir once
3. :func:`kafka_command` - the ``java ... kafka.Kafka`` argv to spawn
4. :func:`kafka_ready` - poll until a metadata round trip succeeds
5. :func:`ensure_topics` - create Tawag's topics (idempotent)

All paths come from :class:`core.settings.Settings`, so a test can run a second broker on
other ports in a temporary data folder.
"""

from __future__ import annotations

import base64
import logging
import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from core.settings import REPO_ROOT, Settings

if TYPE_CHECKING:
    from kafka import KafkaAdminClient

__all__ = [
    "INSTALLER",
    "LOG4J2_CONFIG",
    "STAMP_FILE",
    "KafkaNotInstalledError",
    "TopicSpec",
    "admin_client",
    "bootstrap_address",
    "cluster_id",
    "ensure_topics",
    "is_formatted",
    "java_binary",
    "kafka_command",
    "kafka_ready",
    "log_dirs",
    "missing_jars",
    "prepare_storage",
    "properties_path",
    "server_properties",
    "topic_specs",
]

log = logging.getLogger(__name__)

INSTALLER = REPO_ROOT / "deploy" / "install-debian.sh"
"""Script that fetches the jars (and the Debian packages); named in error messages."""

LOG4J2_CONFIG = REPO_ROOT / "deploy" / "kafka" / "log4j2.properties"
"""Broker logging: INFO to stdout, chatty loggers at WARN (the supervisor keeps stdout)."""

STAMP_FILE = ".tawag-complete"
"""Written into ``kafka_libs`` by the installer after a complete download; a directory
without it may hold half a class path (an interrupted download), which fails late and
confusingly inside the JVM, so it counts as missing."""

NODE_ID = 1
"""The only node of the KRaft quorum (broker and controller in one process)."""


class KafkaNotInstalledError(RuntimeError):
    """The Kafka jars are not in ``settings.kafka_libs``: the installer has not run."""


# --- addresses and paths ---------------------------------------------------------------


def bootstrap_address(settings: Settings) -> tuple[str, int]:
    """``(host, port)`` of ``settings.kafka_bootstrap`` (the first entry if several)."""
    first = settings.kafka_bootstrap.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"kafka_bootstrap must be host:port, got {settings.kafka_bootstrap!r}")
    return host.strip("[]"), int(port)


def log_dirs(settings: Settings) -> Path:
    """Kafka's ``log.dirs`` (also the KRaft metadata log dir).

    A sub-folder of ``kafka_data`` so that the cluster id file kept next to it is not
    inside a directory the broker scans for partitions.
    """
    return settings.kafka_data / "log"


def properties_path(settings: Settings) -> Path:
    """Where :func:`prepare_storage` writes ``server.properties`` (regenerated each start)."""
    return settings.run_dir / "kafka-server.properties"


def _cluster_id_path(settings: Settings) -> Path:
    return settings.kafka_data / "cluster.id"


def java_binary() -> str:
    """``$JAVA_HOME/bin/java`` if set, else ``java`` from ``PATH``."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    return shutil.which("java") or "java"


def missing_jars(settings: Settings) -> bool:
    """True when the installer has not (completely) fetched the Kafka jars.

    The supervisor should then refuse to start Kafka and tell the operator to run
    :data:`INSTALLER` instead of spawning a JVM that dies with ClassNotFoundException.
    """
    libs = settings.kafka_libs
    if not (libs / STAMP_FILE).is_file():
        return True
    return not any(libs.glob("kafka_2.13-*.jar"))


def _require_jars(settings: Settings) -> None:
    if missing_jars(settings):
        raise KafkaNotInstalledError(
            f"Kafka {settings.kafka_version} jars missing in {settings.kafka_libs}: "
            f"run {INSTALLER} (or: mvn -f {REPO_ROOT / 'deploy/kafka/pom.xml'} "
            f"dependency:copy-dependencies -DincludeScope=runtime "
            f"-DoutputDirectory={settings.kafka_libs})"
        )


# --- configuration ---------------------------------------------------------------------


def _properties(settings: Settings) -> dict[str, str]:
    host, port = bootstrap_address(settings)
    controller = f"{host}:{settings.kafka_controller_port}"
    return {
        # One JVM is broker and controller; static voters work in Kafka 3.9 and 4.x alike
        # and need no --standalone at format time.
        "process.roles": "broker,controller",
        "node.id": str(NODE_ID),
        "controller.quorum.voters": f"{NODE_ID}@{controller}",
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{controller}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port}",
        "inter.broker.listener.name": "PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(log_dirs(settings)),
        # Topics that clients auto-create get the same partition count as ours.
        "num.partitions": str(settings.topic_partitions),
        "auto.create.topics.enable": "true",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        # Internal topics: one replica (one node) and one partition each, instead of 50
        # partitions that take seconds to create and hold file handles for nothing.
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "share.coordinator.state.topic.num.partitions": "1",
        # No 3 s wait for more members: a lone Faust worker starts consuming at once.
        "group.initial.rebalance.delay.ms": "0",
        "group.min.session.timeout.ms": "1000",
        # Two cores: fewer threads than the defaults (3 network, 8 I/O, 10 background).
        "num.network.threads": "2",
        "num.io.threads": "4",
        "background.threads": "4",
        "num.recovery.threads.per.data.dir": "1",
        # The compaction map is allocated on the heap at start (128 MiB by default); 8 MiB
        # still dedupes ~350k keys per pass, plenty for one CDR per call.
        "log.cleaner.dedupe.buffer.size": str(8 * 1024 * 1024),
        "log.cleaner.threads": "1",
        "socket.request.max.bytes": str(100 * 1024 * 1024),
    }


def server_properties(settings: Settings) -> str:
    """``server.properties`` text of the single-node broker+controller on loopback."""
    header = (
        "# Generated by tawag.kafka.server_properties() - edit Settings, not this file.\n"
        f"# Kafka {settings.kafka_version}, KRaft single node, data in {settings.kafka_data}\n"
    )
    body = "".join(f"{key}={value}\n" for key, value in _properties(settings).items())
    return header + body


# --- storage ---------------------------------------------------------------------------


def _new_cluster_id() -> str:
    """A Kafka ``Uuid`` string, as ``kafka-storage.sh random-uuid`` prints it.

    Kafka's ids are 16 random bytes in URL-safe base64 without padding; Kafka rejects
    ids starting with ``-`` (they read as command-line options). Generating it here saves
    a JVM start (about a second on two cores).
    """
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        if not text.startswith("-"):
            return text


def cluster_id(settings: Settings) -> str:
    """The stack's cluster id, created once and kept in ``kafka_data/cluster.id``.

    Kept in the data folder (not derived, not regenerated) so that a restart, or a
    re-format after the log dir was lost, names the same cluster; wiping the data folder
    gives a new one.
    """
    path = _cluster_id_path(settings)
    if path.is_file():
        existing = path.read_text(encoding="ascii").strip()
        if existing:
            return existing
    path.parent.mkdir(parents=True, exist_ok=True)
    new = _new_cluster_id()
    path.write_text(new + "\n", encoding="ascii")
    return new


def is_formatted(settings: Settings) -> bool:
    """True once ``StorageTool format`` has written ``meta.properties`` into the log dir."""
    return (log_dirs(settings) / "meta.properties").is_file()


def _java(settings: Settings, *jvm_options: str) -> list[str]:
    """``java <options> -cp <libs>/*`` with the project's Log4j 2 configuration."""
    return [
        java_binary(),
        *jvm_options,
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={LOG4J2_CONFIG}",
        "-cp",
        f"{settings.kafka_libs}/*",
    ]


def prepare_storage(settings: Settings, timeout: float = 120.0) -> Path:
    """Write ``server.properties`` and format the log dir if needed; return the file path.

    The properties are rewritten every time so that changed ports or paths in
    :class:`Settings` take effect on the next start. Formatting happens only while the log
    dir holds no ``meta.properties``: formatting a used log dir would fail (and must never
    wipe data), and skipping it saves a JVM start on every restart.

    Raises :class:`KafkaNotInstalledError` if the jars are missing and
    :class:`RuntimeError` (with the tool's output) if formatting fails.
    """
    _require_jars(settings)
    for directory in (settings.run_dir, settings.log_dir, log_dirs(settings)):
        directory.mkdir(parents=True, exist_ok=True)
    props = properties_path(settings)
    props.write_text(server_properties(settings), encoding="utf-8")
    if is_formatted(settings):
        return props
    argv = [
        *_java(settings, "-Xmx256m"),
        "kafka.tools.StorageTool",
        "format",
        "--ignore-formatted",
        "-t",
        cluster_id(settings),
        "-c",
        str(props),
    ]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"kafka StorageTool format timed out after {timeout:.0f}s") from exc
    if done.returncode != 0 or not is_formatted(settings):
        output = (done.stdout + done.stderr).strip()[-2000:]
        raise RuntimeError(f"kafka StorageTool format failed ({done.returncode}): {output}")
    return props


# --- process ---------------------------------------------------------------------------


def _heap_mb(heap: str) -> int:
    """Megabytes of a JVM size such as ``512m`` or ``1g`` (unknown units count as MB)."""
    text = heap.strip().lower()
    unit = text[-1:] if text[-1:].isalpha() else "m"
    number = int(text.rstrip("kmgb") or "0")
    return {"k": number // 1024, "m": number, "g": number * 1024}.get(unit, number)


def kafka_command(settings: Settings) -> list[str]:
    """argv of the broker JVM, to spawn after :func:`prepare_storage`.

    The process runs in the foreground, logs to stdout (the supervisor redirects it into
    ``settings.log_dir``) and shuts down cleanly on SIGTERM. The initial heap is capped at
    256 MB so a small machine is not charged the whole ``kafka_heap`` up front; G1 flags
    are those of Kafka's own ``kafka-server-start.sh``; an OutOfMemoryError ends the JVM
    so the supervisor sees the failure instead of a zombie broker.
    """
    _require_jars(settings)
    initial = f"{min(256, _heap_mb(settings.kafka_heap))}m"
    return [
        *_java(
            settings,
            f"-Xms{initial}",
            f"-Xmx{settings.kafka_heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:InitiatingHeapOccupancyPercent=35",
            "-XX:+ExplicitGCInvokesConcurrent",
            "-XX:+ExitOnOutOfMemoryError",
        ),
        "kafka.Kafka",
        str(properties_path(settings)),
    ]


def _port_open(host: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def admin_client(settings: Settings, timeout: float = 10.0) -> KafkaAdminClient:
    """A kafka-python admin client for the stack's broker; the caller must ``close()`` it.

    ``timeout`` bounds both the bootstrap and each request, so a dead broker costs
    seconds, not kafka-python's default 30 s per call.
    """
    # Imported here: kafka-python 3 parses its protocol schemas at import time, and the
    # supervisor imports this module only to build a command line.
    from kafka import KafkaAdminClient

    ms = max(100, int(timeout * 1000))
    return KafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap,
        client_id="tawag-admin",
        request_timeout_ms=ms,
        bootstrap_timeout_ms=ms,
        reconnect_backoff_max_ms=1000,
    )


def kafka_ready(settings: Settings, timeout: float = 2.0) -> bool:
    """True when the broker answers a metadata request and lists itself as a live broker.

    An open port is not enough: the KRaft broker accepts connections before it has caught
    up with the metadata log and been unfenced. A cheap TCP probe comes first so that
    polling a broker that is still starting does not fill the log with kafka-python's
    connection errors. Never raises: any failure means "not ready yet".
    """
    host, port = bootstrap_address(settings)
    if not _port_open(host, port, timeout):
        return False
    admin = None
    try:
        admin = admin_client(settings, timeout)
        cluster = admin.describe_cluster()
        brokers = cluster.get("brokers") or []
        live = [b for b in brokers if not b.get("is_fenced", False)]
        return bool(live) and cluster.get("controller_id", -1) >= 0
    except Exception as exc:  # readiness probe: any failure = not ready
        log.debug("kafka not ready: %r", exc)
        return False
    finally:
        if admin is not None:
            try:
                admin.close()
            except Exception:  # closing is best effort
                log.debug("closing admin client failed", exc_info=True)


# --- topics ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TopicSpec:
    """How one of Tawag's topics is created."""

    name: str
    partitions: int
    configs: Mapping[str, str] = field(default_factory=dict)
    why: str = ""


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Tawag's own topics with their partitioning and retention, and the reasons.

    - ``call-events`` is the log of record: replaying it from offset 0 must rebuild the
      same CDRs, so nothing is deleted by age or size (``retention.ms=-1``). Several
      partitions so that Faust workers can scale out; the key (call id) keeps one call's
      events in order on one partition.
    - ``cdrs`` carries CDR revisions keyed by call id, each superseding the last. Pure
      ``compact`` (not ``compact,delete``) keeps exactly the latest revision of every call
      forever: the topic stays a complete, bounded (one record per call) table from which
      the warehouse can be reloaded without replaying events; ``delete`` would silently
      drop old calls from that table. ``segment.ms`` of a day lets the cleaner compact
      closed segments daily (the active segment is never compacted).
    - ``dead-letter`` holds rejected input with its reason for a human to inspect: kept
      for 30 days, one partition so it reads in arrival order.
    - ``provisioning`` holds the last applied provisioning state per tenant (key =
      tenant, HA1 hashes, never passwords), from which a restarted Kamailio is restored:
      pure ``compact`` keeps the latest state of every tenant forever; one partition, as
      it is tiny and read whole.
    - ``crm-contacts`` holds, per client number and CRM (key ``tenant:phone:crm``), the
      responsible manager the connectors last found and the extension mapped to them,
      for routing to send the client to their manager: pure ``compact`` keeps the latest
      lookup of every number; one partition, as routing reads it whole into a table.
    - ``routing`` holds the routing facts the streams derive for the edge (key = the fact:
      an agent's state, a client's manager, the heartbeat): pure ``compact`` keeps the
      current picture, which a restarted edge applier reads whole; one partition.
    """
    day_ms = 24 * 3600 * 1000
    return [
        TopicSpec(
            settings.topic_call_events,
            settings.topic_partitions,
            {"cleanup.policy": "delete", "retention.ms": "-1", "retention.bytes": "-1"},
            "raw call events, key=call_id, kept for replay",
        ),
        TopicSpec(
            settings.topic_cdrs,
            settings.topic_partitions,
            {
                "cleanup.policy": "compact",
                "segment.ms": str(day_ms),
                "min.cleanable.dirty.ratio": "0.5",
                "delete.retention.ms": str(day_ms),
            },
            "CDR revisions, key=call_id, latest revision per call kept",
        ),
        TopicSpec(
            settings.topic_dead_letter,
            1,
            {"cleanup.policy": "delete", "retention.ms": str(30 * day_ms)},
            "rejected input with reason",
        ),
        TopicSpec(
            settings.topic_provisioning,
            1,
            {
                "cleanup.policy": "compact",
                "segment.ms": str(day_ms),
                "min.cleanable.dirty.ratio": "0.5",
                "delete.retention.ms": str(day_ms),
            },
            "applied provisioning, key=tenant, latest state per tenant kept",
        ),
        TopicSpec(
            settings.crm_topic_contacts,
            1,
            {
                "cleanup.policy": "compact",
                "segment.ms": str(day_ms),
                "min.cleanable.dirty.ratio": "0.5",
                "delete.retention.ms": str(day_ms),
            },
            "CRM contact owners, key=tenant:phone:crm, latest lookup per number kept",
        ),
        TopicSpec(
            settings.topic_routing,
            1,
            {
                "cleanup.policy": "compact",
                "segment.ms": str(day_ms),
                "min.cleanable.dirty.ratio": "0.5",
                "delete.retention.ms": str(day_ms),
            },
            "routing facts for the edge, key=fact, latest per fact kept",
        ),
        *_derived_topics(settings, day_ms),
    ]


def _derived_topics(settings: Settings, day_ms: int) -> list[TopicSpec]:
    """What the stream processors derive, and their internal repartition topics.

    Created up front: Faust subscribes before it creates topics of its own, and a
    consumer that subscribed to a missing topic waits for its next metadata refresh.
    Derived topics can be rebuilt by replaying ``call-events``, so they expire (30 days;
    repartition topics are only a hop between two agents: a day). Not compacted: one
    key (an agent) carries many rows, one per state segment or interval.
    """
    from streams.topics import (
        AGENT_EVENTS_REPARTITION,
        CALLBACK_CDRS_REPARTITION,
        CONTACT_LOOKUPS_REPARTITION,
    )

    derived = {"cleanup.policy": "delete", "retention.ms": str(30 * day_ms)}
    hop = {"cleanup.policy": "delete", "retention.ms": str(day_ms)}
    return [
        TopicSpec(settings.topic_agent_states, settings.topic_partitions, derived,
                  "agent state segments, key=tenant:agent"),
        TopicSpec(settings.topic_agent_stats, settings.topic_partitions, derived,
                  "per-agent interval statistics, key=tenant:agent"),
        TopicSpec(settings.topic_callbacks, settings.topic_partitions, derived,
                  "missed-call callback items, key=tenant:client"),
        TopicSpec(AGENT_EVENTS_REPARTITION, settings.topic_partitions, hop,
                  "internal: events re-keyed by tenant:agent"),
        TopicSpec(CALLBACK_CDRS_REPARTITION, settings.topic_partitions, hop,
                  "internal: CDR revisions re-keyed by tenant:client"),
        TopicSpec(CONTACT_LOOKUPS_REPARTITION, settings.topic_partitions, hop,
                  "internal: CRM contact lookups re-keyed by tenant:phone"),
    ]


def ensure_topics(settings: Settings, timeout: float = 30.0) -> list[str]:
    """Create Tawag's topics that do not exist yet; return the names created.

    Idempotent: an existing topic is left as it is, even if its partition count differs
    (raising it would move keys to other partitions and break per-call ordering and
    Faust's co-partitioned tables, so that is an operator's decision; a warning is
    logged). Waits until every partition has a leader, so producers can start at once.
    """
    import kafka.errors as errors

    specs = topic_specs(settings)
    admin = admin_client(settings, timeout)
    try:
        existing = {t["name"]: t for t in admin.describe_topics([s.name for s in specs])}
        missing = [
            s for s in specs if s.name not in existing or existing[s.name].get("error_code", 0)
        ]
        for spec in specs:
            have = len(existing.get(spec.name, {}).get("partitions") or [])
            if spec not in missing and have != spec.partitions:
                log.warning(
                    "topic %s has %d partitions, settings ask for %d; left unchanged",
                    spec.name,
                    have,
                    spec.partitions,
                )
        created: list[str] = []
        if missing:
            request = {
                s.name: {
                    "num_partitions": s.partitions,
                    "replication_factor": 1,
                    "configs": dict(s.configs),
                }
                for s in missing
            }
            result = admin.create_topics(
                request, timeout_ms=int(timeout * 1000), raise_errors=False
            )
            for topic in result["topics"]:
                error = errors.for_code(topic["error_code"])
                if error is errors.NoError:
                    created.append(topic["name"])
                elif error is not errors.TopicAlreadyExistsError:  # lost a race: fine
                    raise error(f"creating topic {topic['name']}: {topic.get('error_message')}")
        admin.wait_for_topics([s.name for s in specs], timeout_ms=int(timeout * 1000))
        return created
    finally:
        admin.close()
