"""``tawag migrate``: bring the warehouse schema up to date (idempotent), or say where it is.

    migrate(settings) -> names applied by this call ([] when already up to date)

- server mode: the migrations are applied through clickhouse-driver (:class:`DriverClient`),
  then the access control (:func:`server_access_statements`): the read-only profile, a role
  and row policies per provisioned tenant, and the dashboards' reader user.
- embedded mode, warehouse process running (its HTTP ``/ping`` answers): only that process
  may open the chdb store, and it migrates at every start; this reads
  ``schema_migrations`` over the read-only HTTP interface and raises
  :class:`PendingMigrations` naming what the running process still lacks (restart it).
- embedded mode, warehouse stopped: the store is opened here and migrated.
"""

from __future__ import annotations

import httpx

from core.settings import Settings
from warehouse.client import ChdbClient, DriverClient, WarehouseClient, service_client
from warehouse.migrate import applied_names, load_migrations
from warehouse.migrate import migrate as apply_migrations
from warehouse.server_access import access_statements, user_statements

__all__ = ["PendingMigrations", "migrate", "warehouse_running", "server_access_statements"]


class PendingMigrations(RuntimeError):
    """The running warehouse lacks migrations; it applies them when it restarts."""


def warehouse_running(settings: Settings, timeout: float = 1.0) -> bool:
    """True when the embedded warehouse's HTTP interface answers ``/ping``."""
    try:
        return httpx.get(f"{settings.warehouse_url}ping", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def server_access_statements(settings: Settings) -> list[str]:
    """Server mode's access DDL for the tenants of the provisioning file (and the default).

    The reader user is (re)created only when its password is set; without one the
    dashboards refuse to start in server mode (:func:`warehouse.client.connect`).
    """
    from edge.provision import load as load_provisioning

    tenants = {settings.tenant, *load_provisioning(settings.provisioning_file)}
    out = access_statements(tenants, writer=settings.clickhouse_user)
    if settings.clickhouse_reader_password:
        out += user_statements(settings.clickhouse_reader_user,
                               settings.clickhouse_reader_password, tenant=None)
    return out


def migrate(settings: Settings) -> list[str]:
    """Apply what is missing; the names applied by this call (see the module docstring)."""
    if settings.warehouse_mode == "server":
        client: WarehouseClient = DriverClient(settings)
        try:
            applied = apply_migrations(client)
            for statement in server_access_statements(settings):
                client.command(statement)
            return applied
        finally:
            client.close()
    if warehouse_running(settings):
        reader = service_client(settings)
        try:
            done = set(applied_names(reader))
        finally:
            reader.close()
        missing = [m.name for m in load_migrations() if m.name not in done]
        if missing:
            raise PendingMigrations(
                f"the running warehouse lacks {', '.join(missing)}; restart it "
                "(tawag down && tawag up) to apply them")
        return []
    store = ChdbClient(settings.chdb_path)
    try:
        return apply_migrations(store)
    finally:
        store.close()
