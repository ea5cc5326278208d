"""Query results as a person reads them: pure functions, no Streamlit, no warehouse.

Kept apart from the pages so the arithmetic (milliseconds to seconds, rates to percent,
UTC hour labels) is unit-tested without running an app.
"""

from __future__ import annotations

import pandas as pd

__all__ = ["NO_VALUE", "CDR_TABLE_COLUMNS", "AGENT_TABLE_COLUMNS", "format_rate",
           "cdr_table", "hourly_outcomes", "format_seconds", "format_duration_ms",
           "target_delta", "change", "when_label", "callback_table", "agent_table",
           "timeline_segments", "wall_clock"]

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


def hourly_outcomes(by_hour: pd.DataFrame, tz: str = "UTC") -> pd.DataFrame:
    """Per-hour answered / missed / in-progress counts, indexed by a ``HH:00`` label of
    the hour in ``tz`` (the tenant's zone; the column is named after it).

    The label is text on purpose: charts render datetimes in the browser's time zone,
    and the page promises the tenant's. ``in progress`` is neither answered nor missed yet.
    """
    hours = pd.to_datetime(by_hour["hour"], utc=True).dt.tz_convert(tz)
    label = f"hour ({tz})"
    frame = pd.DataFrame({
        label: hours.dt.strftime("%H:00"),
        "answered": by_hour["answered"].astype("int64"),
        "missed": by_hour["missed"].astype("int64"),
        "in progress": (by_hour["total"] - by_hour["answered"] - by_hour["missed"])
        .astype("int64"),
    })
    return frame.set_index(label)


# --- figures against targets, durations ------------------------------------------------------


def format_seconds(seconds: float | None) -> str:
    """Seconds with one decimal and a unit, or :data:`NO_VALUE`."""
    return NO_VALUE if seconds is None or pd.isna(seconds) else f"{seconds:.1f} s"


def format_duration_ms(ms: float | None) -> str:
    """A duration in ms as ``H:MM:SS`` (``M:SS`` under an hour), or :data:`NO_VALUE`."""
    if ms is None or pd.isna(ms):
        return NO_VALUE
    total = int(round(float(ms) / 1000))
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


def target_delta(value: float | None, target: float, *, percent: bool) -> str | None:
    """How far ``value`` is from ``target``: ``+3.0 pts`` for rates, ``-2.5 s`` for times;
    None when there is no value (st.metric then shows no arrow)."""
    if value is None or pd.isna(value):
        return None
    if percent:
        return f"{(value - target) * 100:+.1f} pts vs {target * 100:.0f}%"
    return f"{value - target:+.1f} s vs {target:.0f} s"


def change(current: float | None, previous: float | None, *, percent: bool) -> str | None:
    """Period-over-period change: points for rates, relative % for counts; None if unknown."""
    if current is None or previous is None or pd.isna(current) or pd.isna(previous):
        return None
    if percent:
        return f"{(current - previous) * 100:+.1f} pts"
    if previous == 0:
        return None
    return f"{(current - previous) / previous * 100:+.1f}%"


# --- missed calls ------------------------------------------------------------------------------

def when_label(night: bool, weekend: bool) -> str:
    """``weekend``, ``night`` or ``""`` from the item's own flags, which streams computed in
    the tenant's time zone and business hours (one definition: ``core.timezones``)."""
    return "weekend" if weekend else "night" if night else ""


def callback_table(items: pd.DataFrame, *, open_items: bool, tz: str = "UTC") -> pd.DataFrame:
    """Callback items as shown: client, first missed (in ``tz``), when (night/weekend),
    missed calls, then the age (open items) or who called back and how long (closed)."""
    opened = pd.to_datetime(items["opened_at"], utc=True).dt.tz_convert(tz)
    table = pd.DataFrame({
        "client": items["client"],
        f"first missed ({tz})": opened,
        "when": [when_label(bool(n), bool(w))
                 for n, w in zip(items["night"], items["weekend"], strict=True)],
        "missed calls": items["attempts"].astype("int64"),
    })
    if open_items:
        table["age"] = [format_duration_ms(ms) for ms in items["age_ms"]]
        table["callback attempts"] = items["callback_attempts"].astype("int64")
    else:
        table["called back by"] = items["called_back_by"]
        table["direction"] = items["callback_direction"]
        table["time to callback"] = [format_duration_ms(ms)
                                     for ms in items["time_to_callback_ms"]]
    return table.reset_index(drop=True)


# --- agents --------------------------------------------------------------------------------------

AGENT_TABLE_COLUMNS = {
    "agent": "agent", "offered": "offered", "answered": "answered", "missed": "missed",
    "talk_ms": "talk time", "aht_talk_ms": "AHT (talk + hold)", "occupancy": "occupancy",
    "logged_in_ms": "logged in", "counted_until": "counted until (UTC)",
}
"""agent_stats.agent_table columns shown, in order, with their headings."""


def agent_table(stats: pd.DataFrame, tz: str = "UTC") -> pd.DataFrame:
    """The per-agent table as shown: durations as H:MM:SS, occupancy as a percentage,
    ``counted until`` in ``tz`` (the tenant's zone, named in its heading)."""
    table = stats.loc[:, list(AGENT_TABLE_COLUMNS)].copy()
    for column in ("talk_ms", "aht_talk_ms", "logged_in_ms"):
        table[column] = [format_duration_ms(v) for v in table[column]]
    table["occupancy"] = [format_rate(None if pd.isna(v) else float(v))
                          for v in table["occupancy"]]
    for column in ("offered", "answered", "missed"):
        table[column] = table[column].astype("int64")
    table["counted_until"] = pd.to_datetime(table["counted_until"], utc=True) \
        .dt.tz_convert(tz).dt.strftime("%H:%M:%S")
    headings = {**AGENT_TABLE_COLUMNS, "counted_until": f"counted until ({tz})"}
    return table.rename(columns=headings).reset_index(drop=True)


def timeline_segments(segments: pd.DataFrame, window_end: pd.Timestamp,
                      tz: str | None = None) -> pd.DataFrame:
    """State segments ready to draw: an open segment (no ``until``) drawn up to the
    window's end (or now, whichever the caller passes). With ``tz``, the times are the
    wall clock of that zone without a zone (a chart on a "utc" scale shows them as they
    are, not in the browser's zone)."""
    frame = segments.loc[:, ["agent", "state", "since", "until"]].copy()
    frame["until"] = pd.to_datetime(frame["until"], utc=True).fillna(
        pd.Timestamp(window_end).as_unit("ms"))
    if tz is not None:
        for column in ("since", "until"):
            frame[column] = wall_clock(frame[column], tz)
    return frame.reset_index(drop=True)


def wall_clock(times: pd.Series, tz: str) -> pd.Series:
    """Instants (naive = UTC) as the wall clock of ``tz``, without a zone."""
    return pd.to_datetime(times, utc=True).dt.tz_convert(tz).dt.tz_localize(None)
