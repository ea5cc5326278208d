"""The connectors process (``tawag connectors``): wire from Settings, consume until stopped.

    from connectors.service import run
    run(core.settings.load(), stop=stop, edge=edge.control)
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from connectors import redact
from connectors.consume import consume
from connectors.wiring import wire, with_link_defaults
from core.metrics import serve as serve_metrics
from core.settings import Settings

__all__ = ["run"]

log = logging.getLogger("tawag.connectors")


def run(settings: Settings, *, stop: threading.Event | None = None,
        ready: threading.Event | None = None, serve_http: bool = True,
        originate: Callable[..., None] | None = None, edge: Any = None) -> None:
    """Consume tawag.call-events and tawag.cdrs until ``stop`` is set.

    With ``serve_http`` the worker also serves signed recording links and Bitrix24
    events (:mod:`connectors.web`); its ``/health`` (and ``ready``) turn on once the
    consumer holds its partitions. Each contact lookup is published to the compacted
    ``tawag.crm-contacts`` for routing. ``originate`` and ``edge``: see
    :func:`connectors.wiring.wire`.
    """
    redact.install()
    settings = with_link_defaults(settings)
    metrics_server = serve_metrics(settings.metrics_host, settings.connectors_metrics_port,
                                   "connectors")
    try:
        wired = wire(settings, serve_http=serve_http, originate=originate, edge=edge)
    except BaseException:
        if metrics_server is not None:
            metrics_server.stop()
        raise
    stop = stop or threading.Event()

    def assigned() -> None:
        wired.ready()
        if ready is not None:
            ready.set()

    log.info("connectors up: %s", ", ".join(settings.crm_enabled) or "no CRM enabled")
    try:
        consume(wired.consumer, wired.worker, settings, stop=stop, on_assigned=assigned)
    finally:
        wired.close()
        if metrics_server is not None:
            metrics_server.stop()
