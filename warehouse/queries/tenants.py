"""Named queries on ``tawag.tenants``: a tenant's IANA time zone (and trunk).

The table is loaded from provisioning at every warehouse start (:mod:`warehouse.tenants`);
the latest load wins (FINAL). Every query that buckets days or hours takes the zone as
``tz`` (bound, never formatted into SQL); pages get it here, once per tenant.
"""

from __future__ import annotations

from warehouse.client import WarehouseClient
from warehouse.schema import TENANTS

__all__ = ["DEFAULT_TIME_ZONE", "time_zone"]

DEFAULT_TIME_ZONE = "UTC"
"""The zone of a tenant the table does not know (not provisioned, or not loaded yet)."""


def time_zone(client: WarehouseClient, tenant: str) -> str:
    """The tenant's IANA time zone from provisioning; :data:`DEFAULT_TIME_ZONE` if unknown."""
    rows = client.query(f"SELECT time_zone FROM {TENANTS} FINAL WHERE tenant = {{tenant:String}}",
                        {"tenant": tenant})
    return rows[0]["time_zone"] if rows and rows[0]["time_zone"] else DEFAULT_TIME_ZONE
