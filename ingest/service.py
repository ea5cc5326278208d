"""The ingest process: one evapi bridge spooling to disk, a forwarder producing the spool
to Kafka (``ingest.bridge``, ``ingest.spool``), the recorder that turns recorded calls
into WAVs and call.recording_ready events, and the reconciler that closes calls whose end
was lost (``ingest.reconcile``), until SIGTERM."""

from __future__ import annotations

import logging
import signal
import threading
import time
from datetime import timedelta
from pathlib import Path

from core.metrics import serve as serve_metrics
from core.settings import Settings
from edge.control import kamailio_rpc
from ingest.bridge import (
    CHANNEL_DEAD_LETTERS,
    CHANNEL_EVENTS,
    Bridge,
    Forwarder,
    SpoolSink,
    kafka_producer,
)
from ingest.decode import DecodeContext
from ingest.metrics import watch_spool
from ingest.reconcile import Reconciler, TrackingSink
from ingest.recording import Recorder, recording_closed
from ingest.repeats import RecentEvents, event_id_of_record, published_ids
from ingest.spool import Spool

__all__ = ["run", "ready_file", "open_calls_file", "reconciler_for", "known_events"]

log = logging.getLogger("tawag.ingest")

DRAIN_ON_STOP_S = 3.0
"""How long a stopping bridge waits for Kafka to take the spool (below the supervisor's
grace before SIGKILL)."""


def ready_file(settings: Settings):
    """Exists while the bridge holds a live evapi connection (the supervisor waits on it)."""
    return settings.run_dir / "ingest.ready"


def _watch_ready(bridge: Bridge, settings: Settings, stop: threading.Event) -> None:
    marker = ready_file(settings)
    while not stop.is_set():
        if bridge.stats.ready.wait(0.2):
            marker.touch()
            while bridge.stats.ready.is_set() and not stop.is_set():
                stop.wait(0.2)
        marker.unlink(missing_ok=True)


DLG_LIST_TIMEOUT_S = 2.0


def open_calls_file(settings: Settings) -> Path:
    """The calls ingest saw open, kept next to the spool across restarts."""
    return settings.data_dir / "ingest-open-calls.json"


def reconciler_for(settings: Settings, bridge: Bridge) -> Reconciler:
    """The reconciler of ``bridge``: it follows the bridge's events (its sink is wrapped)
    and sends its interruptions through it."""
    reconciler = Reconciler(
        open_calls_file(settings),
        list_dialogs=lambda: kamailio_rpc(settings, "dlg.list", timeout=DLG_LIST_TIMEOUT_S),
        emit=bridge.emit_events, connected=bridge.stats.ready.is_set,
        source=bridge.ctx.source, interval_s=settings.reconcile_interval_s,
        grace_s=settings.lost_end_grace_s,
        max_age=timedelta(seconds=settings.max_call_duration_s + settings.no_answer_timeout
                          + settings.lost_end_grace_s))
    bridge.sink = TrackingSink(bridge.sink, reconciler)
    return reconciler


def known_events(settings: Settings, spool: Spool) -> RecentEvents:
    """The events already published or spooled (``ingest.repeats``), read before the
    forwarder starts. A spooled event already in Kafka (acknowledged in the instant before
    a crash, its ack record lost) is acknowledged now instead of being sent twice."""
    pending = [r for r in spool.pending(spool.depth) if r.channel == CHANNEL_EVENTS]
    spooled = [(r.seq, event_id_of_record(r.value)) for r in pending]
    published: list[str] = []
    if settings.evapi_resend > 0:
        try:
            published = published_ids(settings.kafka_bootstrap, settings.topic_call_events,
                                      settings.evapi_resend)
        except Exception as exc:  # kafka-python raises its own tree; all mean "not now"
            log.warning("could not read the last events of %s (%s): events the edge sends "
                        "again are published again (downstream recognises them)",
                        settings.topic_call_events, exc)
    in_kafka = set(published)
    already = [seq for seq, event_id in spooled if event_id in in_kafka]
    if already:
        spool.ack(already)
        log.info("%d spooled events were already in Kafka; not sent again", len(already))
    ids = [*published, *(event_id for _, event_id in spooled if event_id is not None)]
    return RecentEvents(len(ids) + 2 * settings.evapi_resend, ids)


def run(settings: Settings, stop: threading.Event | None = None) -> None:
    stop = stop or threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    metrics_server = serve_metrics(settings.metrics_host, settings.ingest_metrics_port, "ingest")
    ctx = DecodeContext(
        source=f"kamailio@{settings.sip_host}:{settings.sip_port}",
        country=settings.default_country,
        tenant_for_domain=settings.tenant_for_domain,
    )
    spool = Spool(settings.spool_dir, max_bytes=settings.ingest_spool_max_bytes)
    forwarder = Forwarder(spool, lambda: kafka_producer(settings.kafka_bootstrap),
                          {CHANNEL_EVENTS: settings.topic_call_events,
                           CHANNEL_DEAD_LETTERS: settings.topic_dead_letter})
    watch_spool(forwarder.metrics)  # spool depth, overflow, forwarded (ingest.metrics)
    sink = SpoolSink(spool, forwarder, recent=known_events(settings, spool))
    bridge = Bridge((settings.sip_host, settings.evapi_port), ctx, sink)
    recorder = Recorder(settings.recordings_dir, settings.recordings_wav_dir,
                        closed=lambda call_id: recording_closed(settings, call_id),
                        emit=bridge.emit_payload)
    bridge.recorder = recorder
    reconciler = reconciler_for(settings, bridge)
    reconciling = threading.Thread(target=reconciler.run, args=(stop,), name="reconciler",
                                   daemon=True)
    reconciling.start()
    recorder.start()
    watcher = threading.Thread(target=_watch_ready, args=(bridge, settings, stop), daemon=True)
    watcher.start()
    forwarding = threading.Event()
    sending = threading.Thread(target=forwarder.run, args=(forwarding,), name="forwarder")
    sending.start()
    try:
        bridge.run(stop)
    finally:
        recorder.stop()
        reconciling.join(settings.reconcile_interval_s + DLG_LIST_TIMEOUT_S)
        bridge.sink.flush()
        _drain(spool, DRAIN_ON_STOP_S)
        forwarding.set()
        sending.join()
        left = spool.depth
        spool.close()
        ready_file(settings).unlink(missing_ok=True)
        if metrics_server is not None:
            metrics_server.stop()
        s = bridge.stats
        log.info("ingest stopped: %d frames, %d events, %d dead letters, %d connects; "
                 "%d events left in the spool for the next start",
                 s.frames, s.events, s.dead_letters, s.connects, left)


def _drain(spool: Spool, timeout: float) -> None:
    """On a clean stop, give Kafka a moment to take what is spooled (the rest waits on
    disk for the next start either way)."""
    deadline = time.monotonic() + timeout
    while spool.depth and time.monotonic() < deadline:
        time.sleep(0.05)
