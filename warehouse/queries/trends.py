"""Named queries of the trends page: volume by hour x weekday, and the KPIs split by DID
or by group.

The KPIs per DID / group are the KPI library's own aggregates
(:mod:`warehouse.queries.kpi`'s catalogue), grouped by one more column, so a figure
here is by construction the same as ``kpi.kpi_summary`` filtered on that DID or group.
Window: calls whose ``started_at`` is in ``[start, end)`` (instants; pages pass the
tenant's local days), FINAL; hours and weekdays are local to the tenant's zone (``tz``).
"""

from __future__ import annotations

from datetime import datetime

import pandas as pd

from warehouse.client import WarehouseClient
from warehouse.queries import kpi
from warehouse.queries.window import CALL_WINDOW
from warehouse.schema import CDRS

__all__ = ["DIMENSIONS", "BY_DIMENSION_KPIS", "volume_by_weekday_hour", "kpis_by_dimension"]

DIMENSIONS = {"did": "did", "group": "route_group"}
"""What the KPIs can be split by -> the CDR column: the DID dialled, or the group the call
was routed to or rang through (``route_group``, from the events' ``extra.group``)."""

BY_DIMENSION_KPIS = ("offered", "answered", "abandoned", "service_level_offered",
                     "answer_rate", "abandonment_rate", "average_wait")
"""The columns of :func:`kpis_by_dimension` after ``value``."""



def volume_by_weekday_hour(client: WarehouseClient, tenant: str, start: datetime,
                           end: datetime, *, tz: str = "UTC") -> pd.DataFrame:
    """Calls started per (ISO weekday 1=Mon..7=Sun, hour 0..23), both local to ``tz`` (the
    tenant's IANA zone): all 168 cells, zeros included. Columns ``weekday``, ``hour``,
    ``calls``."""
    return client.query_df(
        "SELECT w AS weekday, h AS hour, toUInt64(ifNull(c.calls, 0)) AS calls "
        "FROM (SELECT toUInt8(number DIV 24 + 1) AS w, toUInt8(number % 24) AS h "
        "FROM numbers(168)) AS g LEFT JOIN ("
        "SELECT toUInt8(toDayOfWeek(started_at, 0, {tz:String})) AS w, "
        "toUInt8(toHour(started_at, {tz:String})) AS h, "
        f"count() AS calls FROM {CDRS} FINAL WHERE {CALL_WINDOW} GROUP BY w, h) AS c "
        "USING (w, h) ORDER BY weekday, hour",
        {"tenant": tenant, "start": start, "end": end, "tz": tz})


def kpis_by_dimension(client: WarehouseClient, tenant: str, start: datetime, end: datetime,
                      dimension: str = "did", limit: int = 50) -> pd.DataFrame:
    """The KPIs of :data:`BY_DIMENSION_KPIS` per DID or group, busiest first (``limit`` rows).

    Inbound calls only, as every queue KPI (a DID or a group is what an outside caller
    reached). Calls no group rang are left out of the split by group. Each KPI is
    the KPI library's definition (service level with abandons counted, no short-abandon
    cut-off; threshold 20 s): see :func:`warehouse.queries.kpi.service_level_offered` etc.
    """
    if dimension not in DIMENSIONS:
        raise ValueError(f"dimension must be one of {', '.join(DIMENSIONS)}; got {dimension!r}")
    column = DIMENSIONS[dimension]
    catalogue = {**kpi._COUNTS, **kpi._OUTCOMES}  # the library's own aggregates
    exprs = ", ".join(f"{kpi._render(catalogue[name])} AS {name}" for name in BY_DIMENSION_KPIS)
    sql = (f"WITH calls AS (SELECT {column} AS value, {', '.join(kpi._CALL_COLUMNS)} "
           f"FROM {CDRS} FINAL WHERE {CALL_WINDOW} AND direction = {{d_inbound:String}} "
           f"AND {column} IS NOT NULL) SELECT value, {exprs} FROM calls GROUP BY value "
           "ORDER BY offered DESC, value LIMIT {limit:UInt32}")
    params = {**kpi._params(tenant, start, end), "short_abandon_ms": 0, "limit": limit}
    return client.query_df(sql, params)
