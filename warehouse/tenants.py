"""The warehouse's copy of each tenant's provisioning facts: IANA time zone and trunk.

Provisioning (``settings.provisioning_file``) is the one source of truth; the warehouse
process loads it into ``tawag.tenants`` at every start (:func:`sync_tenants`), after
the migrations, so that queries, analysts' SQL and the dashboards read the zone from the
same place (:func:`warehouse.queries.tenants.time_zone`). A tenant the file does not
name (or a missing file) gets ``settings.default_time_zone`` when asked.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from core.settings import Settings
from warehouse.client import WarehouseClient
from warehouse.schema import TENANTS

__all__ = ["tenant_rows", "sync_tenants"]


def _trunks(path: Path) -> dict[str, str | None]:
    try:
        doc = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return {}
    tenants = doc.get("tenant") if isinstance(doc.get("tenant"), dict) else {}
    return {name: spec.get("trunk") if isinstance(spec, dict) else None
            for name, spec in tenants.items()}


def tenant_rows(settings: Settings) -> list[dict[str, Any]]:
    """One row per provisioned tenant (plus the settings' own tenant): zone and trunk."""
    zones = settings.time_zones()
    trunks = _trunks(settings.provisioning_file)
    names = sorted({*zones, settings.tenant})
    return [{"tenant": name, "time_zone": zones.get(name, settings.default_time_zone),
             "trunk": trunks.get(name)} for name in names]


def sync_tenants(client: WarehouseClient, settings: Settings) -> int:
    """Load the provisioning's tenants into ``tawag.tenants`` (the latest load wins);
    returns the number of tenants written."""
    rows = tenant_rows(settings)
    if rows:
        client.insert_rows(TENANTS, rows)
    return len(rows)
