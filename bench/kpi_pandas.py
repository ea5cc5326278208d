"""The pandas baseline of ``bench/kpi_queries.py``: headline KPIs from a DataFrame.

The same rows the warehouse query reads -- the tenant's CDR revisions offered in the
window, as loaded (every revision) -- are read into a DataFrame once; then pandas keeps
each call's latest revision (what FINAL does) and computes the headline KPIs with the
definitions of ``warehouse.queries.kpi`` (DESIGN §7). Not the product: a yardstick for
what the warehouse's SQL is worth against a script an analyst would write.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from warehouse.client import WarehouseClient
from warehouse.queries.window import CALL_WINDOW
from warehouse.schema import CDRS

__all__ = ["COMPARED", "read_rows", "kpis"]

_COLUMNS = ("call_id", "version", "direction", "caller", "started_at", "disposition", "closed",
            "ring_ms", "talk_ms")

COMPARED = ("total", "offered", "answered", "abandoned", "answer_rate",
            "service_level_answered", "asa", "acd", "contacts_per_client", "repeat_callers")
"""The KPIs computed here, named as ``kpi.kpi_summary`` names them."""


def read_rows(client: WarehouseClient, tenant: str, start: datetime,
              end: datetime) -> pd.DataFrame:
    """Every revision of the tenant's calls offered in ``[start, end)`` (no FINAL)."""
    return client.query_df(f"SELECT {', '.join(_COLUMNS)} FROM {CDRS} WHERE {CALL_WINDOW}",
                           {"tenant": tenant, "start": start, "end": end})


def _rate(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def kpis(rows: pd.DataFrame, threshold_s: float, repeat_window_h: float) -> dict[str, Any]:
    """The :data:`COMPARED` KPIs of ``rows`` (revisions), one latest revision per call."""
    calls = rows.sort_values("version").drop_duplicates("call_id", keep="last")
    closed = calls["closed"].astype(bool)
    inbound = calls["direction"] == "inbound"
    answered_any = closed & (calls["disposition"] == "answered")
    offered = closed & inbound
    answered = offered & (calls["disposition"] == "answered")
    abandoned = offered & (calls["disposition"] == "cancelled")
    contacts = calls[inbound & (calls["caller"].fillna("") != "")]
    starts = contacts[["caller", "started_at"]].sort_values(["caller", "started_at"])
    gap = starts["started_at"].diff()
    same = starts["caller"].eq(starts["caller"].shift())
    close = same & (gap <= pd.Timedelta(hours=repeat_window_h))
    repeat_callers = int(starts.loc[close, "caller"].nunique())
    n_answered = int(answered.sum())
    return {
        "total": len(calls),
        "offered": int(offered.sum()),
        "answered": n_answered,
        "abandoned": int(abandoned.sum()),
        "answer_rate": _rate(n_answered, int(offered.sum())),
        "service_level_answered": _rate(
            int((answered & (calls["ring_ms"] <= threshold_s * 1000)).sum()), n_answered),
        "asa": _rate(int(calls.loc[answered, "ring_ms"].sum()) / 1000, n_answered),
        "acd": _rate(int(calls.loc[answered_any, "talk_ms"].sum()) / 1000,
                     int(answered_any.sum())),
        "contacts_per_client": _rate(len(contacts), contacts["caller"].nunique()),
        "repeat_callers": repeat_callers,
    }


def agree(pandas_kpis: dict[str, Any], warehouse_kpis: dict[str, Any]) -> list[str]:
    """The :data:`COMPARED` KPIs on which the two disagree (beyond float rounding)."""
    differ = []
    for name in COMPARED:
        a, b = pandas_kpis[name], warehouse_kpis[name]
        if a is None or b is None:
            if a is not b:
                differ.append(name)
        elif not np.isclose(float(a), float(b), rtol=1e-9, atol=1e-9):
            differ.append(name)
    return differ
