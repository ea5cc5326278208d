"""The one definition of a CDR time window, with the day predicate that lets it prune.

``tawag.cdrs`` is sorted by ``(tenant, call_day, call_id)`` and partitioned by the month
of ``call_day``, the UTC day of ``started_at`` (migration 0009; no revision moves it).
ClickHouse cannot derive a bound on ``call_day`` from one on ``started_at`` (they are two
columns), so every window on ``started_at`` also bounds ``call_day``: the UTC days from
the window's start to its end (the end's own day included: the window is half-open to the
millisecond, its day may hold calls before it). The ``started_at`` bounds stay and are
exact; the day bounds only let the primary index and the partitions skip the rest. The
bounds are ``Date32`` (1900-2299): a ``Date`` wraps outside 1970-2149 (``toDate`` of
2199-12-31 is 2020-07-26), which turned the API's open end (2200) into "before 2020".

    f"SELECT ... FROM {CDRS} FINAL WHERE {CALL_WINDOW}"      # binds tenant, start, end
    f"... WHERE tenant = ... AND {day_bounds('since')} AND started_at >= {{since:...}}"
"""

from __future__ import annotations

__all__ = ["CALL_WINDOW", "TALK_LOOKBACK_DAYS", "day_bounds"]

_TS = "DateTime64(3, 'UTC')"

TALK_LOOKBACK_DAYS = 1
"""How many days before a window a call that talks inside it may have started. The edge
cuts a call at ``max_call_duration_s`` after its answer (2 h by default, Kamailio's dialog
timeout), so the day before holds every call that can still be talking: queries on talk
that happened in a window (``kpi.talk_time_by_interval``) read from the day before it.
(A ``max_call_duration_s`` above a day would need this raised.)"""


def day_bounds(start: str, end: str | None = None, *, lookback_days: int = 0) -> str:
    """``call_day`` bounds for a window whose instants are the parameters ``start`` and
    ``end`` (names of ``DateTime64(3, 'UTC')`` parameters; ``end`` None: open-ended),
    reaching ``lookback_days`` before the start's day."""
    low = f"toDate32({{{start}:{_TS}}})"
    if lookback_days:
        low = f"subtractDays({low}, {int(lookback_days)})"
    sql = f"call_day >= {low}"
    if end is not None:
        sql += f" AND call_day <= toDate32({{{end}:{_TS}}})"
    return sql


CALL_WINDOW = (f"tenant = {{tenant:String}} AND {day_bounds('start', 'end')} "
               f"AND started_at >= {{start:{_TS}}} AND started_at < {{end:{_TS}}}")
"""The tenant's calls offered in ``[start, end)``: parameters ``tenant``, ``start``, ``end``."""
