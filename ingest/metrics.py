"""The ingest bridge's Prometheus metrics (served by :func:`core.metrics.serve`).

The bridge counts as it goes; the on-disk spool (when the bridge has one) is exported
through :func:`watch_spool`, one line where the spool is built::

    watch_spool(spool.metrics)      # a callable returning {"spool_depth": 3, ...}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

from core.metrics import CallbackCollector, register_callback

__all__ = ["EVENTS_IN", "EVENTS_PRODUCED", "DEAD_LETTERS", "REPEATS_DROPPED",
           "EVAPI_CONNECTS", "EVAPI_RECONNECTS", "EVAPI_CONNECTED", "RECORDINGS",
           "CALLS_WITHOUT_MEDIA", "CALLS_INTERRUPTED", "CALL_ENDS_RECOVERED",
           "dead_letter_reason", "watch_spool"]

EVENTS_IN = Counter("tawag_ingest_events", "Events decoded from Kamailio's evapi, by type",
                    ["type"])
EVENTS_PRODUCED = Counter("tawag_ingest_events_produced",
                          "Events acknowledged by Kafka on the call-events topic (forwarded "
                          "from the spool)")
DEAD_LETTERS = Counter("tawag_ingest_dead_letters",
                       "evapi payloads refused and sent to the dead-letter topic, by reason",
                       ["reason"])
REPEATS_DROPPED = Counter(
    "tawag_ingest_repeats_dropped",
    "Events the edge sent again on connecting that were already published (dropped)")
EVAPI_CONNECTS = Counter("tawag_ingest_evapi_connects",
                         "Connections opened to Kamailio's evapi (the first one included)")
EVAPI_RECONNECTS = Counter("tawag_ingest_evapi_reconnects",
                           "evapi connections lost (events sent meanwhile are lost by evapi)")
EVAPI_CONNECTED = Gauge("tawag_ingest_evapi_connected",
                        "1 while the bridge holds a live evapi connection")
CALLS_WITHOUT_MEDIA = Counter(
    "tawag_ingest_calls_without_media",
    "call.ended events without media figures, by why: unknown_call (rtpengine no longer "
    "knew the call, e.g. it ended on the edge's timers), no_rtp_stats, absent (no media "
    "report at all)", ["why"])
CALLS_INTERRUPTED = Counter(
    "tawag_ingest_calls_interrupted",
    "Calls whose end was lost, closed by the reconciler (call.ended reason interrupted), "
    "by why: edge_lost (gone from the edge's dialogs) or max_age", ["why"])
CALL_ENDS_RECOVERED = Counter(
    "tawag_ingest_call_ends_recovered",
    "Answered calls whose call.ended never arrived although the edge listed the dialog as "
    "ended: closed by the reconciler at the edge's end time (reason recovered)")
RECORDINGS = Counter("tawag_ingest_recordings",
                     "call.recording_ready events made from recorded calls")

_REASONS = (
    ("is not JSON", "not_json"),
    ("not JSON", "not_json"),
    ("not a JSON object", "not_object"),
    ("expected a JSON object", "not_object"),
    ("unknown evapi event", "unknown_event"),
    ("unknown event type", "unknown_event"),
    ("missing", "missing_field"),
    ("netstring", "framing"),
)


def dead_letter_reason(error: str) -> str:
    """A small, fixed set of label values for a dead letter's free-text error."""
    for needle, reason in _REASONS:
        if needle in error:
            return reason
    return "invalid_field"


SPOOL_FAMILIES = {
    "spool_depth": ("gauge", "Events in the on-disk spool not yet acknowledged by Kafka"),
    "spool_bytes": ("gauge", "Bytes of the spool's segment files"),
    "spool_max_bytes": ("gauge", "The spool's size limit; past it new events overflow"),
    "spool_segments": ("gauge", "Segment files of the spool"),
    "spooled_total": ("counter", "Events written to the spool"),
    "spool_acked_total": ("counter", "Spooled events acknowledged by Kafka"),
    "spool_overflow_total": ("counter", "Events refused because the spool was full (lost)"),
    "spool_recovered": ("gauge", "Events found in the spool at start (left by the last run)"),
    "spool_torn_bytes": ("gauge", "Bytes of a torn tail dropped at start"),
    "forwarded_total": ("counter", "Spooled records (events and dead letters) Kafka took"),
    "forward_failures_total": ("counter", "Forwarding batches that failed (Kafka away or "
                               "refusing a record); the records stay in the spool"),
    "spool_filling": ("gauge", "1 while Kafka is not keeping up and the spool fills"),
}


def watch_spool(metrics: Callable[[], Mapping[str, float]],
                registry: CollectorRegistry = REGISTRY) -> CallbackCollector:
    """Export a spool's ``metrics()`` dict as ``tawag_ingest_<key>`` at every scrape.

    Known keys get their type and help from :data:`SPOOL_FAMILIES`; others are gauges
    (or counters when they end in ``_total``), so a new spool counter shows up as is.
    """
    known = dict(SPOOL_FAMILIES)
    try:
        keys = list(metrics())
    except Exception:  # an unopened spool: export the known families only
        keys = []
    for key in keys:
        known.setdefault(key, ("counter" if key.endswith("_total") else "gauge",
                               f"spool: {key}"))
    families = [(f"tawag_ingest_{key}", doc, kind, ()) for key, (kind, doc) in known.items()]

    def samples() -> dict[str, list[tuple[tuple[str, ...], float]]]:
        return {f"tawag_ingest_{k}": [((), v)] for k, v in metrics().items() if k in known}

    return register_callback(families, samples, registry)
