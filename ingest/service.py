"""The ingest process: one evapi bridge producing to Kafka (and the recorder that turns
recorded calls into WAVs and call.recording_ready events), until SIGTERM."""

from __future__ import annotations

import logging
import signal
import threading

from ingest.bridge import Bridge, KafkaSink
from ingest.decode import DecodeContext
from ingest.recording import Recorder, recording_closed
from tawag.settings import Settings

__all__ = ["run", "ready_file"]

log = logging.getLogger("tawag.ingest")


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


def run(settings: Settings, stop: threading.Event | None = None) -> None:
    stop = stop or threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    ctx = DecodeContext(
        source=f"kamailio@{settings.sip_host}:{settings.sip_port}",
        country=settings.default_country,
        tenant_for_domain=settings.tenant_for_domain,
    )
    sink = KafkaSink(settings.kafka_bootstrap, settings.topic_call_events,
                     settings.topic_dead_letter)
    bridge = Bridge((settings.sip_host, settings.evapi_port), ctx, sink)
    recorder = Recorder(settings.recordings_dir, settings.recordings_wav_dir,
                        closed=lambda call_id: recording_closed(settings, call_id),
                        emit=bridge.emit_payload)
    bridge.recorder = recorder
    recorder.start()
    watcher = threading.Thread(target=_watch_ready, args=(bridge, settings, stop), daemon=True)
    watcher.start()
    try:
        bridge.run(stop)
    finally:
        recorder.stop()
        sink.flush()
        sink.close()
        ready_file(settings).unlink(missing_ok=True)
        s = bridge.stats
        log.info("ingest stopped: %d frames, %d events, %d dead letters, %d connects",
                 s.frames, s.events, s.dead_letters, s.connects)
