"""The evapi -> Kafka bridge: the only I/O of ingest.

A ``call.end`` of a recorded call is also handed to a recorder (``ingest.recording``),
which works on its own thread and gives back a ``call.recording_ready`` payload through
:meth:`Bridge.emit_payload`, so the evapi socket is never left unread meanwhile.

Kamailio's evapi does not buffer: events emitted while no client is connected are lost.
So the bridge reconnects at once (within ``RECONNECT_DELAY_S``) whenever the socket
closes, and the supervisor starts it before any traffic. Every payload becomes either a
v1 event on ``tawag.call-events`` (acks=all, idempotent producer) or a dead letter on
``tawag.dead-letter`` carrying the reason and the raw bytes: nothing is silently dropped.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

from ingest.decode import DecodeContext, FramingError, decode_evapi, split_netstrings
from ingest.events import Event, EventType, InvalidEvent, to_json

__all__ = ["Bridge", "BridgeStats", "Sink", "KafkaSink", "dead_letter"]

log = logging.getLogger("tawag.ingest")

RECONNECT_DELAY_S = 0.2
READ_SIZE = 65536


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


class KafkaSink:
    """Idempotent kafka-python producer: acks=all, so an event is on the log or retried."""

    def __init__(self, bootstrap: str, events_topic: str, dead_letter_topic: str) -> None:
        from kafka import KafkaProducer

        self._producer = KafkaProducer(
            bootstrap_servers=bootstrap,
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            retries=2**31 - 1,
            max_in_flight_requests_per_connection=5,
            client_id="tawag-ingest",
        )
        self._events_topic = events_topic
        self._dead_letter_topic = dead_letter_topic

    def event(self, ev: Event) -> None:
        self._producer.send(self._events_topic, key=ev.key.encode(), value=to_json(ev))

    def dead_letter(self, record: bytes) -> None:
        self._producer.send(self._dead_letter_topic, key=b"evapi", value=record)

    def flush(self) -> None:
        self._producer.flush()

    def close(self) -> None:
        self._producer.close()


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
            with self._sink_lock:
                self.sink.dead_letter(dead_letter(str(exc), frame, self.ctx.source))
            return
        if ev is None:
            self.stats.greetings += 1
            self.stats.ready.set()
            return
        self.stats.events += 1
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
            with self._sink_lock:
                self.sink.dead_letter(dead_letter(str(exc), frame, self.ctx.source))
                self.sink.flush()
            return
        if ev is None:
            return
        with self._sink_lock:
            self.stats.recordings += 1
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
                self.sink.dead_letter(dead_letter(str(exc), buffer + chunk, self.ctx.source))
                self.sink.flush()
                return

    def run(self, stop: threading.Event) -> None:
        """Connect, read until the socket closes, reconnect at once; until ``stop``."""
        while not stop.is_set():
            try:
                with socket.create_connection(self.address, timeout=2) as sock:
                    self.stats.connects += 1
                    log.info("connected to evapi at %s:%s", *self.address)
                    self._session(sock, stop)
                log.warning("evapi closed the connection; reconnecting")
            except OSError as exc:
                log.debug("evapi not reachable (%s); retrying", exc)
            self.stats.ready.clear()
            stop.wait(RECONNECT_DELAY_S)
