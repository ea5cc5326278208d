"""The evapi -> Kafka bridge: the only I/O of ingest.

A ``call.end`` of a recorded call is also handed to a recorder (``ingest.recording``),
which works on its own thread and gives back a ``call.recording_ready`` payload through
:meth:`Bridge.emit_payload`, so the evapi socket is never left unread meanwhile.

Kamailio's evapi itself does not buffer, so the edge keeps the events of a gap in a
bounded shared-memory buffer (kamailio.cfg route[EVAPI_DRAIN]) and sends them, in order,
once a client is connected again, repeating the last few it sent before (this bridge may
have died holding them); those already published are not spooled again
(``ingest.repeats``).
The bridge still
reconnects at once (within ``RECONNECT_DELAY_S``) whenever the socket closes, so the gap
stays short. Every payload becomes either a
v1 event on ``tawag.call-events`` (acks=all, idempotent producer) or a dead letter on
``tawag.dead-letter`` carrying the reason and the raw bytes: nothing is silently dropped.

Nor may the bridge stop reading evapi while Kafka is away, so it does not talk to Kafka
itself: :class:`SpoolSink` writes each payload to the local spool (``ingest.spool``,
fsynced before the next read) and a :class:`Forwarder` thread produces the spool to
Kafka in order, forgetting a record only once Kafka acknowledged it::

    evapi -> Bridge -> SpoolSink -> spool on disk -> Forwarder -> Kafka
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from core.events import Event, EventType, InvalidEvent, to_json
from ingest import metrics
from ingest.decode import DecodeContext, FramingError, decode_evapi, split_netstrings
from ingest.repeats import RecentEvents
from ingest.spool import Record, Spool

__all__ = ["Bridge", "BridgeStats", "Sink", "SpoolSink", "Forwarder", "Producer",
           "kafka_producer", "dead_letter", "CHANNEL_EVENTS", "CHANNEL_DEAD_LETTERS"]

log = logging.getLogger("tawag.ingest")

RECONNECT_DELAY_S = 0.2
READ_SIZE = 65536
IDLE_WAIT_S = 0.2
"""An idle forwarder looks at the spool this often even without a wake-up (and at stop)."""


class Sink(Protocol):
    """Where decoded events and dead letters go (Kafka in production, a list in tests)."""

    def event(self, ev: Event) -> None: ...

    def dead_letter(self, record: bytes) -> None: ...

    def flush(self) -> None: ...


def dead_letter(error: str, raw: bytes, source: str) -> bytes:
    """The dead-letter record: why it was refused, and the input exactly as received."""
    record = {"source": source, "error": error, "value": raw.decode("utf-8", "replace")}
    return json.dumps(record, ensure_ascii=False).encode()


@dataclass
class BridgeStats:
    frames: int = 0
    events: int = 0
    dead_letters: int = 0
    connects: int = 0
    greetings: int = 0
    recordings: int = 0
    ready: threading.Event = field(default_factory=threading.Event)


CHANNEL_EVENTS = 0
"""Spool channel of v1 events (topic ``tawag.call-events``)."""
CHANNEL_DEAD_LETTERS = 1
"""Spool channel of dead letters (topic ``tawag.dead-letter``)."""


class SpoolSink:
    """The bridge's sink: every event and dead letter is written to the local spool and
    fsynced (``flush``, once per evapi read) before the bridge reads on; a
    :class:`Forwarder` takes it to Kafka from there. It never waits for Kafka, so the
    bridge keeps reading evapi while the broker is down or restarting.

    A record the full spool refuses is lost: it is counted (``Spool.overflowed``) and
    logged with its type, call and ``event_id`` (see ``ingest.spool`` for why).

    With ``recent`` (``ingest.repeats``), an event already spooled or published is not
    taken again: the edge resends its last events to every client that connects. Only
    the spool skips it; whatever wraps this sink (the reconciler's tracking) still sees
    it, as the edge's word that the call got that far.
    """

    def __init__(self, spool: Spool, forwarder: Forwarder | None = None,
                 recent: RecentEvents | None = None) -> None:
        self.spool = spool
        self.forwarder = forwarder
        self.recent = recent
        self.repeats = 0
        """Events not spooled because they were already (``ingest.repeats``)."""
        self._repeats_unlogged = 0

    def event(self, ev: Event) -> None:
        if self.recent is not None and ev.event_id in self.recent:
            self.repeats += 1
            self._repeats_unlogged += 1
            metrics.REPEATS_DROPPED.inc()
            return
        if self.spool.append(CHANNEL_EVENTS, ev.key.encode(), to_json(ev)) is None:
            log.warning("spool full: %s of call %s refused (event_id %s, key %s)",
                        ev.type.value, ev.call_id, ev.event_id, ev.key)
        elif self.recent is not None:
            self.recent.add(ev.event_id)

    def dead_letter(self, record: bytes) -> None:
        if self.spool.append(CHANNEL_DEAD_LETTERS, b"evapi", record) is None:
            log.warning("spool full: dead letter refused: %s", record[:500].decode("utf-8",
                                                                                    "replace"))

    def flush(self) -> None:
        self.spool.sync()
        if self.forwarder is not None:
            self.forwarder.wake()
        if self._repeats_unlogged:
            log.info("dropped %d events the edge sent again that were already published",
                     self._repeats_unlogged)
            self._repeats_unlogged = 0


class Producer(Protocol):
    """The part of kafka-python's ``KafkaProducer`` the forwarder uses (its I/O seam)."""

    def send(self, topic: str, *, key: bytes, value: bytes) -> Any: ...

    def flush(self, timeout: float | None = None) -> None: ...

    def close(self, timeout: float | None = None) -> None: ...


def kafka_producer(bootstrap: str) -> Producer:
    """Idempotent producer, acks=all, that never gives up on a record by itself: while
    the broker is away records wait in it (and in the spool) until it is back."""
    from kafka import KafkaProducer

    return KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        retries=2**31 - 1,
        delivery_timeout_ms=2**31 - 1,
        max_in_flight_requests_per_connection=5,
        max_block_ms=5_000,  # a send waiting for metadata; the stop path waits on it
        bootstrap_timeout_ms=5_000,
        client_id="tawag-ingest",
    )


class Forwarder:
    """Produces the spool's records to Kafka in spool order, acknowledging each in the
    spool once Kafka has it.

    One batch (up to ``batch_size`` records, oldest first) is in flight at a time. If
    Kafka cannot be reached the batch stays in the producer, which retries without end
    (the records stay in the spool too); if the producer fails a record, the records
    Kafka did acknowledge are acknowledged in the spool, the producer is closed, and a
    new one starts again from the oldest unacknowledged record. Logs one line when the
    spool starts filling (Kafka has not acknowledged for ``slow_s``) and one when it has
    drained.

    Usage::

        forwarder = Forwarder(spool, lambda: kafka_producer(bootstrap),
                              {CHANNEL_EVENTS: "tawag.call-events",
                               CHANNEL_DEAD_LETTERS: "tawag.dead-letter"})
        threading.Thread(target=forwarder.run, args=(stop,)).start()
    """

    def __init__(self, spool: Spool, connect: Callable[[], Producer],
                 topics: dict[int, str], *, batch_size: int = 500, slow_s: float = 2.0,
                 retry_s: float = 1.0) -> None:
        self.spool = spool
        self.connect = connect
        self.topics = topics
        self.batch_size = batch_size
        self.slow_s = slow_s
        self.retry_s = retry_s
        self.delivered_total = 0
        """Records Kafka acknowledged through this forwarder."""
        self.failures = 0
        """Batches that failed (producer not created, record refused by Kafka)."""
        self.filling_since: float | None = None
        """Monotonic time the spool started filling; ``None`` while Kafka keeps up."""
        self._producer: Producer | None = None
        self._wake = threading.Event()

    def wake(self) -> None:
        """New records are synced in the spool."""
        self._wake.set()

    def metrics(self) -> dict[str, int]:
        """The spool's figures and the forwarder's, named for a metrics endpoint."""
        return {**self.spool.metrics(), "forwarded_total": self.delivered_total,
                "forward_failures_total": self.failures,
                "spool_filling": int(self.filling_since is not None)}

    def run(self, stop: threading.Event) -> None:
        """Forward until ``stop``; what is not acknowledged by then stays in the spool."""
        try:
            while not stop.is_set():
                self._wake.clear()
                batch = self.spool.pending(self.batch_size)
                if not batch:
                    self._drained()
                    self._wake.wait(IDLE_WAIT_S)
                elif not self._deliver(batch, stop) and not stop.is_set():
                    stop.wait(self.retry_s)
        finally:
            self._close_producer()

    def _deliver(self, batch: list[Record], stop: threading.Event) -> bool:
        """Send one batch and wait for its outcome; False if it did not all go."""
        started = time.monotonic()
        try:
            producer = self._producer = self._producer or self.connect()
        except Exception as exc:  # kafka-python raises its own tree; all mean "not now"
            self._failed(f"cannot connect to Kafka: {exc}")
            return False
        futures: list[tuple[int, Any]] = []
        error = None
        try:
            for rec in batch:
                futures.append((rec.seq, producer.send(self.topics[rec.channel],
                                                       key=rec.key, value=rec.value)))
        except Exception as exc:
            error = f"send refused: {exc!r}"
        while not all(f.is_done for _, f in futures) and not stop.is_set():
            if time.monotonic() - started > self.slow_s:
                self._filling(f"Kafka has not acknowledged for {self.slow_s:.0f} s")
            try:
                producer.flush(timeout=0.5)
            except Exception:  # KafkaTimeoutError: not yet; stop is checked again
                continue
        acked = [seq for seq, f in futures if f.succeeded()]
        self.spool.ack(acked)
        self.delivered_total += len(acked)
        done = set(acked)
        metrics.EVENTS_PRODUCED.inc(sum(1 for rec in batch
                                        if rec.seq in done and rec.channel == CHANNEL_EVENTS))
        failed = next((f.exception for _, f in futures if f.failed()), None)
        if failed is not None or error is not None:
            self._failed(error or f"Kafka refused a record: {failed!r}")
            self._close_producer()
            return False
        return len(acked) == len(batch)

    def _failed(self, why: str) -> None:
        self.failures += 1
        self._filling(why)
        log.warning("forwarding to Kafka failed (%s); %d events wait in the spool",
                    why, self.spool.depth)

    def _filling(self, why: str) -> None:
        if self.filling_since is None:
            self.filling_since = time.monotonic()
            log.warning("spool filling: %s; events are kept in %s until Kafka takes them "
                        "(%d waiting)", why, self.spool.directory, self.spool.depth)

    def _drained(self) -> None:
        if self.filling_since is not None:
            log.info("spool drained: Kafka took every spooled event after %.1f s "
                     "(%d spooled, %d refused as overflow since start)",
                     time.monotonic() - self.filling_since, self.spool.spooled_total,
                     self.spool.overflowed)
            self.filling_since = None

    def _close_producer(self) -> None:
        if self._producer is not None:
            try:
                self._producer.close(timeout=0)
            except Exception as exc:  # closing a producer that lost its broker
                log.debug("closing the Kafka producer: %r", exc)
            self._producer = None


class Recorder(Protocol):
    def submit(self, end: dict[str, Any]) -> None: ...


class Bridge:
    """Reads evapi netstrings from Kamailio and hands each payload to a :class:`Sink`.

    Usage::

        bridge = Bridge(("127.0.0.1", 8448), ctx, KafkaSink(...))
        bridge.run(stop)        # until stop.set()
    """

    def __init__(self, address: tuple[str, int], ctx: DecodeContext, sink: Sink,
                 recorder: Recorder | None = None) -> None:
        self.address = address
        self.ctx = ctx
        self.sink = sink
        self.recorder = recorder
        self.stats = BridgeStats()
        self._sink_lock = threading.Lock()
        """The recorder's thread produces too."""

    def handle_frame(self, frame: bytes) -> None:
        """Decode one payload and route it to the log or the dead-letter topic."""
        self.stats.frames += 1
        try:
            ev = decode_evapi(frame, self.ctx)
        except InvalidEvent as exc:
            log.warning("dead letter: %s", exc)
            self.stats.dead_letters += 1
            metrics.DEAD_LETTERS.labels(metrics.dead_letter_reason(str(exc))).inc()
            with self._sink_lock:
                self.sink.dead_letter(dead_letter(str(exc), frame, self.ctx.source))
            return
        if ev is None:
            self.stats.greetings += 1
            self.stats.ready.set()
            return
        self.stats.events += 1
        metrics.EVENTS_IN.labels(ev.type.value).inc()
        if ev.type is EventType.CALL_ENDED and not ev.media:
            metrics.CALLS_WITHOUT_MEDIA.labels(ev.extra.get("media_missing", "absent")).inc()
        with self._sink_lock:
            self.sink.event(ev)
        if (self.recorder is not None and ev.type is EventType.CALL_ENDED
                and ev.extra.get("recorded") is True):
            self.recorder.submit(json.loads(frame))

    def emit_payload(self, payload: dict[str, Any]) -> None:
        """Produce an evapi-shaped payload made outside Kamailio (call.recording_ready)."""
        frame = json.dumps(payload, separators=(",", ":")).encode()
        try:
            ev = decode_evapi(frame, self.ctx)
        except InvalidEvent as exc:
            metrics.DEAD_LETTERS.labels(metrics.dead_letter_reason(str(exc))).inc()
            with self._sink_lock:
                self.sink.dead_letter(dead_letter(str(exc), frame, self.ctx.source))
                self.sink.flush()
            return
        if ev is None:
            return
        metrics.EVENTS_IN.labels(ev.type.value).inc()
        metrics.RECORDINGS.inc()
        with self._sink_lock:
            self.stats.recordings += 1
            self.sink.event(ev)
            self.sink.flush()

    def emit_events(self, events: list[Event]) -> None:
        """Produce events made in ingest itself (the reconciler's interruptions), synced
        in the spool before this returns."""
        with self._sink_lock:
            for ev in events:
                metrics.EVENTS_IN.labels(ev.type.value).inc()
                self.sink.event(ev)
            self.sink.flush()

    def handle_bytes(self, buffer: bytes) -> bytes:
        """Consume every complete frame of ``buffer``; return the incomplete rest."""
        frames, rest = split_netstrings(buffer)
        for frame in frames:
            self.handle_frame(frame)
        if frames:
            with self._sink_lock:
                self.sink.flush()
        return rest

    def _session(self, sock: socket.socket, stop: threading.Event) -> None:
        buffer = b""
        sock.settimeout(0.5)
        while not stop.is_set():
            try:
                chunk = sock.recv(READ_SIZE)
            except TimeoutError:
                continue
            if not chunk:
                return
            try:
                buffer = self.handle_bytes(buffer + chunk)
            except FramingError as exc:
                # The stream lost its framing: keep the bytes, then re-open to resync.
                self.stats.dead_letters += 1
                metrics.DEAD_LETTERS.labels("framing").inc()
                self.sink.dead_letter(dead_letter(str(exc), buffer + chunk, self.ctx.source))
                self.sink.flush()
                return

    def run(self, stop: threading.Event) -> None:
        """Connect, read until the socket closes, reconnect at once; until ``stop``."""
        while not stop.is_set():
            try:
                with socket.create_connection(self.address, timeout=2) as sock:
                    self.stats.connects += 1
                    metrics.EVAPI_CONNECTS.inc()
                    metrics.EVAPI_CONNECTED.set(1)
                    log.info("connected to evapi at %s:%s", *self.address)
                    try:
                        self._session(sock, stop)
                    finally:
                        metrics.EVAPI_CONNECTED.set(0)
                    if not stop.is_set():
                        metrics.EVAPI_RECONNECTS.inc()
                log.warning("evapi closed the connection; reconnecting")
            except OSError as exc:
                log.debug("evapi not reachable (%s); retrying", exc)
            self.stats.ready.clear()
            stop.wait(RECONNECT_DELAY_S)
