"""The API process (``tawag api``): the REST API on uvicorn, the webhook worker, and the
receiver of Zadarma accounts' notifications (``/zadarma/{tenant}``, :mod:`api.zadarma_source`).

    from api.service import run
    run(core.settings.load(), stop=stop)

The webhook worker consumes Kafka in a thread of its own; until the broker answers it
retries (the API serves meanwhile), a loop that fails is started again with a new consumer,
and its deliveries resume from the outbox journal.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import httpx
import uvicorn

from api.app import create_app
from api.consume import consume, make_consumer
from api.delivery_log import outbox_file
from api.keys import KeyStore, keys_file
from api.originations import Originations, originations_file
from api.seen import SeenJournal
from api.subscriptions import SubscriptionStore, subscriptions_file
from api.webhooks import Webhooks
from api.zadarma_source import ZadarmaSource, seen_file
from connectors.click_to_call import ClickToCallLinks, EdgeOriginator
from connectors.outbox import Outbox
from core.settings import Settings
from ingest.bridge import kafka_producer
from warehouse.client import connect

__all__ = ["run", "outbox_file"]  # outbox_file: re-exported from api.delivery_log

log = logging.getLogger("tawag.api")

KAFKA_RETRY_S = 5.0


def _consume_forever(settings: Settings, hooks: Webhooks, stop: threading.Event,
                     originations: Originations | None = None) -> None:
    while not stop.is_set():
        try:
            consumer = make_consumer(settings)
        except Exception as exc:  # kafka-python: NoBrokersAvailable and friends
            log.warning("webhooks: Kafka at %s not answering (%s); retrying",
                        settings.kafka_bootstrap, exc)
            stop.wait(KAFKA_RETRY_S)
            continue
        try:
            consume(consumer, hooks, settings, stop=stop, originations=originations)
        except Exception:  # the thread must outlive it: expiries and deliveries hang on it
            log.exception("webhooks: the Kafka loop failed; a new consumer in %.0f s "
                          "(the outbox drops what it re-reads)", KAFKA_RETRY_S)
        finally:
            consumer.close()
        stop.wait(KAFKA_RETRY_S)


def build_originations(settings: Settings) -> Originations:
    """``POST /calls`` through the edge's JSON-RPC control (:mod:`edge.control`)."""
    import edge.control as control

    box = Outbox(originations_file(settings))
    return Originations(box, EdgeOriginator(settings, ClickToCallLinks(box), control))


def run(settings: Settings, *, stop: threading.Event | None = None) -> None:
    """Serve ``/api/v1`` on ``api_host:api_port`` and deliver webhooks until ``stop`` is
    set (or SIGTERM/SIGINT in the main thread, which uvicorn handles itself)."""
    stop = stop or threading.Event()
    originations = build_originations(settings)
    http = httpx.Client(timeout=settings.webhook_timeout_s)
    hooks = Webhooks(Outbox(outbox_file(settings)),
                     SubscriptionStore(subscriptions_file(settings)), http=http,
                     max_age_s=settings.webhook_max_age_s)
    zadarma = ZadarmaSource(settings, SeenJournal(seen_file(settings)),
                            lambda: kafka_producer(settings.kafka_bootstrap))
    app: Any = create_app(settings, client=connect(settings),
                          keys=KeyStore(keys_file(settings)), webhooks=hooks, http=http,
                          zadarma=zadarma, originations=originations)
    server = uvicorn.Server(uvicorn.Config(app, host=settings.api_host, port=settings.api_port,
                                           log_level="warning", access_log=False))
    threading.Thread(target=lambda: (stop.wait(), setattr(server, "should_exit", True)),
                     name="api-stop", daemon=True).start()
    kafka = threading.Thread(target=_consume_forever,
                             args=(settings, hooks, stop, originations),
                             name="webhooks-kafka", daemon=True)
    hooks.start()
    kafka.start()
    log.info("api on http://%s:%d/api/v1", settings.api_host, settings.api_port)
    try:
        server.run()
    finally:
        stop.set()
        kafka.join(timeout=10)
        hooks.stop()
        hooks.outbox.close()
        zadarma.close()
        originations.outbox.close()
        http.close()
