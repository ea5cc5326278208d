"""The connectors worker's Prometheus metrics (served by :func:`core.metrics.serve` on
``connectors_metrics_port``): deliveries and failures per CRM and step, retries, the
CRMs' rate-limit answers, screen-pops, and the outbox's depth read at each scrape."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from prometheus_client import REGISTRY, Counter

from core.metrics import CallbackCollector, register_callback

__all__ = ["DELIVERIES", "DELIVERY_FAILURES", "RETRIES", "RATE_LIMITED", "SCREEN_POPS",
           "OUTBOX_DEPTH", "PARKED", "watch_outbox", "unwatch_outbox"]

DELIVERIES = Counter("tawag_crm_deliveries",
                     "Outbox entries delivered to a CRM, by CRM and step (the entry's kind)",
                     ["crm", "step"])
DELIVERY_FAILURES = Counter(
    "tawag_crm_delivery_failures",
    "Failed delivery attempts, by CRM, step and reason: rejected (permanent, journalled "
    "and skipped), rate_limited, unavailable, auth_expired (retried), error (a crash, "
    "retried slowly)", ["crm", "step", "reason"])
RETRIES = Counter("tawag_crm_retries",
                  "Delivery attempts deferred to be tried again (the head waits), by CRM",
                  ["crm"])
RATE_LIMITED = Counter("tawag_crm_rate_limited",
                       "Rate-limit answers from a CRM (HTTP 429; Bitrix24's "
                       "QUERY_LIMIT_EXCEEDED), by CRM and path (delivery, screen_pop)",
                       ["crm", "path"])
SCREEN_POPS = Counter("tawag_crm_screen_pops",
                      "Screen-pops by CRM and outcome (shown, dropped past the deadline, "
                      "failed)", ["crm", "outcome"])


_WATCHED: dict[int, tuple[Any, tuple[str, ...]]] = {}
_WATCHED_LOCK = threading.Lock()


def _outbox_depths() -> dict[str, list[tuple[tuple[str], float]]]:
    depth: dict[str, float] = {}
    with _WATCHED_LOCK:
        watched = list(_WATCHED.values())
    for outbox, crms in watched:
        for crm in crms:
            depth[crm] = depth.get(crm, 0) + len(outbox.pending(crm))
    return {"tawag_crm_outbox_depth": [((crm,), n) for crm, n in sorted(depth.items())]}


def _parked() -> dict[str, list[tuple[tuple[str, str], float]]]:
    count: dict[tuple[str, str], float] = {}
    with _WATCHED_LOCK:
        watched = list(_WATCHED.values())
    for outbox, crms in watched:
        for entry in outbox.rejections():
            if entry.crm in crms:
                key = (entry.crm, entry.code or "unknown")
                count[key] = count.get(key, 0) + 1
    return {"tawag_crm_parked": sorted(count.items())}


PARKED: CallbackCollector = register_callback(
    [("tawag_crm_parked", "Outbox entries parked: permanently refused by a CRM, kept with "
      "the reason (connectors.outbox.list_rejections) while the queue moves on; by CRM and "
      "the CRM's documented error code", "gauge", ["crm", "code"])], _parked, REGISTRY)


OUTBOX_DEPTH: CallbackCollector = register_callback(
    [("tawag_crm_outbox_depth", "Outbox entries waiting for delivery, by CRM", "gauge",
      ["crm"])], _outbox_depths, REGISTRY)


def watch_outbox(outbox: Any, crms: Iterable[str]) -> None:
    """Report ``outbox``'s pending entries per CRM in ``tawag_crm_outbox_depth`` (read at
    each scrape) until :func:`unwatch_outbox`."""
    with _WATCHED_LOCK:
        _WATCHED[id(outbox)] = (outbox, tuple(crms))


def unwatch_outbox(outbox: Any) -> None:
    with _WATCHED_LOCK:
        _WATCHED.pop(id(outbox), None)
