"""Query results as a person reads them: pure functions, no Streamlit, no warehouse.

Kept apart from the pages so the arithmetic (milliseconds to seconds, rates to percent,
UTC hour labels) is unit-tested without running an app.
"""

from __future__ import annotations

import pandas as pd

__all__ = ["NO_VALUE", "CDR_TABLE_COLUMNS", "format_rate", "cdr_table", "hourly_outcomes"]

NO_VALUE = "—"
"""Shown for a figure that does not exist yet (a rate with nothing to divide)."""

CDR_TABLE_COLUMNS = {
    "started_at": "started",
    "caller": "caller",
    "callee": "callee",
    "agent": "agent",
    "disposition": "disposition",
    "sip_code": "SIP code",
    "ring_ms": "ring time s",
    "talk_ms": "talk time s",
    "hangup_by": "hangup by",
}
"""CDR columns shown in call tables, in order, with their headings."""

_MS_COLUMNS = ("ring_ms", "talk_ms")


def format_rate(rate: float | None) -> str:
    """A 0..1 ratio as a percentage with one decimal, or :data:`NO_VALUE` if undefined."""
    return NO_VALUE if rate is None else f"{rate * 100:.1f}%"


def cdr_table(cdrs: pd.DataFrame) -> pd.DataFrame:
    """The displayed columns of ``cdrs`` (rows as given), durations in seconds (0.1 s)."""
    table = cdrs.loc[:, list(CDR_TABLE_COLUMNS)].copy()
    for column in _MS_COLUMNS:
        table[column] = (table[column].astype("float64") / 1000).round(1)
    return table.rename(columns=CDR_TABLE_COLUMNS).reset_index(drop=True)


def hourly_outcomes(by_hour: pd.DataFrame) -> pd.DataFrame:
    """Per-hour answered / missed / in-progress counts, indexed by a ``HH:00`` UTC label.

    The label is text on purpose: charts render datetimes in the browser's time zone,
    and the page promises UTC. ``in progress`` is what is neither answered nor missed yet.
    """
    hours = pd.to_datetime(by_hour["hour"], utc=True)
    frame = pd.DataFrame({
        "hour (UTC)": hours.dt.strftime("%H:00"),
        "answered": by_hour["answered"].astype("int64"),
        "missed": by_hour["missed"].astype("int64"),
        "in progress": (by_hour["total"] - by_hour["answered"] - by_hour["missed"])
        .astype("int64"),
    })
    return frame.set_index("hour (UTC)")
