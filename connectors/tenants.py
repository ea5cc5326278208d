"""Per-tenant CRM connections: each tenant's calls go to its own CRMs and nowhere else.

A connection is a tenant's CRM configuration as :class:`~core.settings.Settings` (the
``crm_*`` fields from its ``[tenant.<name>.crm]`` table, :mod:`core.tenant_crm`) and a
state folder of its own: token files, outbox journal, rejection log. Each connection
gets its own :class:`~connectors.sync.SyncWorker` (own threads per CRM, own outbox), so
one tenant's CRM answering 429/500 or refusing its token holds back only that tenant's
queue. :class:`TenantWorkers` hands each event and CDR to the worker of the tenant it
names; a tenant without a connection is not synced (logged once).

    conns = connections(settings)     # one Connection per tenant with a CRM
    workers = TenantWorkers({c.tenant: SyncWorker(...) for c in conns})
    workers.handle_cdr(cdr)           # only cdr.tenant's worker sees it
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from connectors.sync import SyncWorker
from core.events import Event
from core.records import Cdr
from core.settings import Settings
from core.tenant_crm import CRMS, crm_keys, tenant_crms, tenant_tables

__all__ = ["Connection", "TenantWorkers", "connection_settings", "connections"]

log = logging.getLogger("tawag.connectors")


@dataclass(frozen=True)
class Connection:
    """One tenant's CRMs: its settings (``tenant``, ``crm_*``) and its own state folder."""

    settings: Settings
    state_dir: Path

    @property
    def tenant(self) -> str:
        return self.settings.tenant


def connection_settings(settings: Settings, tenant: str, table: dict[str, Any]) -> Settings:
    """``settings`` with every ``crm_<crm>_*`` field from the tenant's ``crm`` table.

    Fields the table does not set are reset to their defaults, never inherited from the
    environment: a tenant gets no other tenant's portal, token or user map."""
    defaults = Settings()
    values: dict[str, Any] = {"tenant": tenant,
                              "crm_enabled": tuple(c for c in CRMS if c in table)}
    for crm in CRMS:
        spec = table.get(crm) or {}
        for key, typ in crm_keys(crm).items():
            name = f"crm_{crm}_{key}"
            value = spec.get(key, getattr(defaults, name))
            values[name] = ({str(k): str(v) for k, v in value.items()} if typ is dict
                            else value)
    if "recordings_base_url" in table:
        values["recordings_base_url"] = table["recordings_base_url"]
    if "call_source" in table:
        values["crm_call_source"] = table["call_source"]
    return dataclasses.replace(settings, **values)


def connections(settings: Settings) -> list[Connection]:
    """Every tenant's CRM connection: the ``TAWAG_CRM_*`` one of the default tenant (in
    ``connectors_dir``, as a single-tenant install always had it) unless the file gives
    that tenant a ``crm`` table, then each ``crm`` table (in ``connectors_dir/tenants/<name>``)."""
    tables = tenant_crms(settings.provisioning_file)
    named = {t for t, spec in tenant_tables(settings.provisioning_file).items() if "crm" in spec}
    for tenant in sorted(named - set(tables)):
        log.error("tenant %s: its [tenant.%s.crm] table is invalid (tawag provision "
                  "--check %s says why); its calls are not synced", tenant, tenant,
                  settings.provisioning_file)
    found = []
    if settings.crm_enabled and settings.tenant not in named:
        found.append(Connection(settings, settings.connectors_dir))
    for tenant, table in sorted(tables.items()):
        found.append(Connection(connection_settings(settings, tenant, table),
                                settings.connectors_dir / "tenants" / tenant))
    return [c for c in found if c.settings.crm_enabled]


class TenantWorkers:
    """The workers of every connection, behind the one interface the Kafka loop feeds."""

    def __init__(self, workers: dict[str, SyncWorker], *, default_tenant: str = "") -> None:
        self.workers = workers
        self.default_tenant = default_tenant
        """Whose CRM a click-to-call (connectors.web) comes from."""
        self._unconnected: set[str] = set()

    def worker_for(self, tenant: str) -> SyncWorker | None:
        worker = self.workers.get(tenant)
        if worker is None and tenant not in self._unconnected:
            self._unconnected.add(tenant)
            log.info("tenant %s has no CRM connection: its calls are not synced", tenant)
        return worker

    def handle_event(self, ev: Event) -> None:
        if (worker := self.worker_for(ev.tenant)) is not None:
            worker.handle_event(ev)

    def handle_cdr(self, cdr: Cdr) -> int:
        worker = self.worker_for(cdr.tenant)
        return worker.handle_cdr(cdr) if worker is not None else 0

    def expire_click_to_calls(self, now: float) -> int:
        return sum(w.expire_click_to_calls(now) for w in self.workers.values())

    def click_not_placed(self, crm: str, crm_call_id: str, user: str) -> bool:
        worker = self.workers.get(self.default_tenant)
        return worker is not None and worker.click_not_placed(crm, crm_call_id, user)

    @property
    def links(self) -> Any:
        """The default tenant's click-to-call links (None without its connection)."""
        worker = self.workers.get(self.default_tenant)
        return worker.links if worker is not None else None

    def start(self) -> None:
        for worker in self.workers.values():
            worker.start()

    def stop(self, timeout: float = 5.0) -> None:
        for worker in self.workers.values():
            worker.stop(timeout)

    def idle(self) -> bool:
        return all(w.idle() for w in self.workers.values())
