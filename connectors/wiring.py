"""Wiring of the connectors worker from :class:`~core.settings.Settings`: clients,
outbox, worker, the Kafka consumer and producer, the HTTP server. Nothing here decides
or loops (like wazo's ``controller.py``): :mod:`connectors.consume` runs the loop,
:mod:`connectors.sync` and :mod:`connectors.delivery` do the work.

Every value comes from the ``crm_*``, ``recordings_*`` and stack fields of Settings and
from each tenant's ``[tenant.<name>.crm]`` table (:mod:`connectors.tenants`): one
worker, outbox and token files per tenant connection. The default tenant's
``TAWAG_CRM_*`` connection keeps its state in ``settings.connectors_dir`` (outbox
journal, rejection log, token files, link key), every other tenant's in
``connectors_dir/tenants/<name>``.

    wired = wire(with_link_defaults(settings), edge=edge.control)
    try:
        consume(wired.consumer, wired.worker, settings, stop=stop)
    finally:
        wired.close()
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from connectors.contacts import ContactPublisher
from connectors.outbox import Outbox
from connectors.recording_links import rotate_link_key, with_link_defaults
from connectors.sync import SyncWorker
from connectors.targets import Target
from connectors.tenants import TenantWorkers, connections
from connectors.web import ConnectorsHttp
from core.kafka_group import group_consumer
from core.settings import Settings

__all__ = ["Wired", "build_targets", "build_workers", "rotate_link_key", "wire",
           "with_link_defaults"]

log = logging.getLogger("tawag.connectors")

CONSUMER_GROUP = "tawag-connectors"


def build_targets(settings: Settings, state_dir: Path | None = None) -> list[Target]:
    """Clients for the enabled CRMs, tokens in ``state_dir`` (default: connectors_dir)."""
    from connectors.amocrm.client import build_client as amo
    from connectors.bitrix24.client import build_client as b24
    from connectors.onec.client import build_client as onec
    from connectors.tokens import FileTokenStore

    s, state = settings, state_dir or settings.connectors_dir
    targets = []
    if "amocrm" in s.crm_enabled:
        store = FileTokenStore(state / "amocrm-token.json")
        targets.append(Target(amo(s, store), s.crm_amocrm_users,
                              s.crm_amocrm_default_user or None))
    if "bitrix24" in s.crm_enabled:
        store = (FileTokenStore(state / "bitrix24-token.json")
                 if s.crm_bitrix24_client_id else None)
        targets.append(Target(b24(s, store, state_dir=state), s.crm_bitrix24_users,
                              s.crm_bitrix24_default_user or None))
    if "onec" in s.crm_enabled:
        targets.append(Target(_checked_onec(onec(s), s.crm_onec_users), s.crm_onec_users, None))
    return targets


def _checked_onec(client: Any, users: dict[str, str]) -> Any:
    """Refuse to start with 1C settings the base cannot serve (a clear message now, not a
    400 on every lookup later); if 1C is down, the client checks on first use."""
    from connectors.base import Misconfigured, Unavailable
    from connectors.onec.mapping import is_guid

    bad = sorted(ext for ext, ref in users.items() if not is_guid(ref))
    if bad:
        raise Misconfigured("TAWAG_CRM_ONEC_USERS: extensions " + ", ".join(bad) + " are not "
                            "mapped to a Catalog_Пользователи Ref_Key (a GUID)", crm="onec")
    try:
        client.check_schema()
    except Unavailable as exc:
        log.warning("1C not reachable at start (%s): $metadata is checked on first use", exc)
    return client


def build_workers(settings: Settings, *, on_contact: Callable[[str], Any] | None = None,
                  **worker_options: Any) -> tuple[TenantWorkers, dict[str, Outbox]]:
    """A worker, outbox and clients per tenant connection (:mod:`connectors.tenants`), not
    started; ``on_contact(tenant)`` gives the tenant's tawag.crm-contacts publisher."""
    outboxes, workers = {}, {}
    for conn in connections(settings):
        outbox = outboxes[conn.tenant] = Outbox(conn.state_dir / "outbox.jsonl")
        outbox.compact()
        workers[conn.tenant] = SyncWorker(
            build_targets(conn.settings, conn.state_dir), outbox, settings=conn.settings,
            on_contact=on_contact(conn.tenant) if on_contact else None, **worker_options)
        log.info("tenant %s: %s", conn.tenant, ", ".join(conn.settings.crm_enabled))
    return TenantWorkers(workers, default_tenant=settings.tenant), outboxes


@dataclass
class Wired:
    """The running pieces of one connectors worker; :meth:`close` stops them all."""

    worker: TenantWorkers
    outboxes: dict[str, Outbox]
    """Each tenant's own delivery journal."""
    consumer: Any
    producer: Any
    http: ConnectorsHttp | None

    def ready(self) -> None:
        """The consumer holds its partitions: ``/health`` may say so."""
        if self.http is not None:
            self.http.ready.set()

    def close(self) -> None:
        self.worker.stop()
        self.consumer.close()
        self.producer.flush(5)
        self.producer.close(5)
        for outbox in self.outboxes.values():
            outbox.close()
        if self.http is not None:
            self.http.stop()


def wire(settings: Settings, *, serve_http: bool = True,
         originate: Callable[..., None] | None = None, edge: Any = None) -> Wired:
    """Build and start everything of ``tawag connectors`` but the consume loop.

    ``settings`` should have its link defaults filled (:func:`with_link_defaults`).
    With Bitrix24 enabled and the edge's control API given (``edge``, :mod:`edge.control`),
    its click-to-call events are placed through the edge
    (:class:`connectors.click_to_call.EdgeOriginator`) unless ``originate`` is given.
    """
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks=1, linger_ms=5)
    worker, outboxes = build_workers(settings, on_contact=lambda tenant: ContactPublisher(
        producer, tenant=tenant, topic=settings.crm_topic_contacts))
    http = _start_http(settings, worker, originate, edge) if serve_http else None
    worker.start()
    consumer = group_consumer(settings, CONSUMER_GROUP, settings.connectors_instance_id,
                              [settings.topic_call_events, settings.topic_cdrs],
                              fetch_max_wait_ms=20)
    return Wired(worker, outboxes, consumer, producer, http)


def _start_http(settings: Settings, worker: TenantWorkers,
                originate: Callable[..., None] | None, edge: Any) -> ConnectorsHttp:
    """Signed recording downloads and Bitrix24 events (click-to-call: the default
    tenant's ``TAWAG_CRM_BITRIX24_*`` application)."""
    if (originate is None and edge is not None and "bitrix24" in settings.crm_enabled
            and worker.links is not None):
        from connectors.click_to_call import EdgeOriginator

        originate = EdgeOriginator(settings, worker.links, edge)
    return ConnectorsHttp(host=settings.recordings_http_host,
                          port=settings.recordings_http_port,
                          wav_dir=settings.recordings_wav_dir,
                          secret=settings.recordings_link_secret.encode(),
                          bitrix24_token=settings.crm_bitrix24_application_token,
                          bitrix24_users=dict(settings.crm_bitrix24_users),
                          originate=originate,
                          not_placed=lambda click: worker.click_not_placed(
                              click.crm, click.crm_call_id, click.crm_user)).start()
