"""Named queries of the quality page: how MOS, packet loss and jitter are distributed,
and the worst calls.

The media figures are the ones rtpengine reports at hangup, kept on the CDR (``mos``
1..5, ``packet_loss`` as a 0..1 fraction, ``jitter_ms``). Only calls with a figure count:
a call never answered carried no media and has none. Window: ``started_at`` in
``[start, end)`` (UTC), FINAL (one row per call, latest revision).
"""

from __future__ import annotations

from datetime import datetime

import pandas as pd

from warehouse.client import WarehouseClient
from warehouse.queries.calls import CALL_COLUMNS
from warehouse.queries.window import CALL_WINDOW
from warehouse.schema import CDRS

__all__ = ["METRICS", "quality_summary", "distribution", "worst_calls"]

METRICS = {"mos": 0.25, "packet_loss": 0.005, "jitter_ms": 5.0}
"""Media metric -> histogram bin width (MOS points, loss fraction, milliseconds)."""



def quality_summary(client: WarehouseClient, tenant: str, start: datetime,
                    end: datetime) -> dict[str, float | int | None]:
    """``calls`` with a MOS; ``mos_avg``, ``mos_p10`` (10th percentile, interpolated),
    ``loss_avg``, ``jitter_avg``; ``poor_calls`` = MOS below 3.6 (ITU-T G.107 "many users
    dissatisfied" below R 70). Averages are None when no call has a figure."""
    rows = client.query(
        "SELECT countIf(mos IS NOT NULL) AS calls, avg(mos) AS mos_avg, "
        "quantileExactInclusive(0.1)(mos) AS mos_p10, avg(packet_loss) AS loss_avg, "
        "avg(jitter_ms) AS jitter_avg, countIf(mos < 3.6) AS poor_calls "
        f"FROM {CDRS} FINAL WHERE {CALL_WINDOW}",
        {"tenant": tenant, "start": start, "end": end})
    row = rows[0]
    calls = int(row["calls"])
    return {"calls": calls, "poor_calls": int(row["poor_calls"]),
            **{k: (float(row[k]) if calls and row[k] is not None else None)
               for k in ("mos_avg", "mos_p10", "loss_avg", "jitter_avg")}}


def distribution(client: WarehouseClient, tenant: str, start: datetime, end: datetime,
                 metric: str) -> pd.DataFrame:
    """Calls per bin of ``metric`` (width :data:`METRICS`): ``bin_start``, ``calls``;
    only bins with calls. A value on a bin edge goes to the upper bin."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}; got {metric!r}")
    return client.query_df(
        "SELECT floor(v / {width:Float64}) * {width:Float64} AS bin_start, count() AS calls "
        f"FROM (SELECT toFloat64({metric}) AS v FROM {CDRS} FINAL WHERE {CALL_WINDOW} "
        f"AND {metric} IS NOT NULL) GROUP BY bin_start ORDER BY bin_start",
        {"tenant": tenant, "start": start, "end": end, "width": METRICS[metric]})


def worst_calls(client: WarehouseClient, tenant: str, start: datetime, end: datetime,
                limit: int = 20) -> pd.DataFrame:
    """The ``limit`` calls with the lowest MOS (then highest loss), CDR columns."""
    return client.query_df(
        f"SELECT {', '.join(CALL_COLUMNS)} FROM {CDRS} FINAL WHERE {CALL_WINDOW} "
        "AND mos IS NOT NULL ORDER BY mos, packet_loss DESC, call_id LIMIT {limit:UInt32}",
        {"tenant": tenant, "start": start, "end": end, "limit": limit})
