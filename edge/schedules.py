"""Business-hours schedules (the auto-calendar): opening hours -> the edge's open windows.

A schedule names, per weekday, the hours a number is open in the tenant's time zone, and
the holidays it is closed all day::

    [tenant.acme.schedule.office]
    hours = { mon = "09:00-18:00", tue = "09:00-18:00", sat = "10:00-14:00" }
    holidays = ["2026-12-31", "2027-01-01"]
    closed = "ext:101"        # where calls go out of hours ("reply": answered 480 Closed)

A day not in ``hours`` is closed; ``"00:00-24:00"`` is the whole day. Kamailio knows no
time zones per tenant, so the hours are compiled here into absolute open windows (epoch
seconds, UTC) for :data:`HORIZON_DAYS` from the start of the tenant's current day, and the
edge only compares the INVITE's time with them: right across the opening and closing
minute, daylight-saving changes and holidays, without asking anything at call time. The
windows are compiled again each time the provisioning is applied (every ``tawag up`` and
``tawag provision``); past the horizon a number counts as open.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

__all__ = ["DAYS", "HORIZON_DAYS", "parse_hours", "hours_problems", "holiday_problems",
           "open_windows", "horizon_end", "is_open"]

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
HORIZON_DAYS = 62
"""How far ahead the open windows are compiled (two months of a stack left running)."""

_RANGE = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])-([01][0-9]|2[0-4]):([0-5][0-9])$")


def parse_hours(text: str) -> tuple[time, time | None]:
    """``"09:00-18:00"`` -> (opens, closes); closes None for ``24:00`` (end of the day)."""
    match = _RANGE.match(text)
    if not match:
        raise ValueError(f"{text!r}: expected \"HH:MM-HH:MM\" such as \"09:00-18:00\"")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h2 == 24 and m2:
        raise ValueError(f"{text!r}: the day ends at 24:00")
    opens, closes = time(h1, m1), (None if h2 == 24 else time(h2, m2))
    if closes is not None and closes <= opens:
        raise ValueError(f"{text!r}: closes before it opens (a night shift is two days' "
                         "hours: \"22:00-24:00\" and \"00:00-06:00\")")
    return opens, closes


def hours_problems(hours: Any) -> list[str]:
    """What is wrong with a schedule's ``hours`` table (nothing: [])."""
    if not isinstance(hours, dict):
        return ["hours: a table of weekdays such as { mon = \"09:00-18:00\" }"]
    problems = [f"hours: unknown day {day!r} (days are {', '.join(DAYS)})"
                for day in hours if day not in DAYS]
    for day, text in hours.items():
        try:
            parse_hours(str(text))
        except ValueError as exc:
            problems.append(f"hours.{day}: {exc}")
    return problems


def holiday_problems(holidays: Any) -> list[str]:
    """What is wrong with a schedule's ``holidays`` list (nothing: [])."""
    if holidays is None:
        return []
    if not isinstance(holidays, list):
        return ["holidays: a list of dates such as [\"2026-12-31\"]"]
    problems = []
    for day in holidays:
        if not (isinstance(day, str) and _is_iso_date(day)):
            problems.append(f"holidays: not a date \"YYYY-MM-DD\": {day!r}")
    return problems


def _is_iso_date(text: str) -> bool:
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


def open_windows(hours: Mapping[str, str], holidays: Iterable[str], zone: str,
                 now: datetime, days: int = HORIZON_DAYS) -> list[tuple[int, int]]:
    """The open windows ``[start, end)`` in epoch seconds for ``days`` days from the start
    of ``now``'s day in ``zone``; adjacent windows (a day open until 24:00 and the next
    from 00:00) merged into one."""
    tz = ZoneInfo(zone)
    closed = {date.fromisoformat(d) for d in holidays}
    first = now.astimezone(tz).date()
    windows: list[tuple[int, int]] = []
    for n in range(days):
        day = first + timedelta(days=n)
        text = hours.get(DAYS[day.weekday()])
        if text is None or day in closed:
            continue
        opens, closes = parse_hours(text)
        start = datetime.combine(day, opens, tz)
        end = (datetime.combine(day + timedelta(days=1), time(0), tz) if closes is None
               else datetime.combine(day, closes, tz))
        window = (int(start.timestamp()), int(end.timestamp()))
        if windows and windows[-1][1] == window[0]:
            windows[-1] = (windows[-1][0], window[1])
        else:
            windows.append(window)
    return windows


def horizon_end(zone: str, now: datetime, days: int = HORIZON_DAYS) -> int:
    """Where :func:`open_windows` stops (epoch s): from there on the edge counts a number
    as open rather than closed for good."""
    tz = ZoneInfo(zone)
    last = now.astimezone(tz).date() + timedelta(days=days)
    return int(datetime.combine(last, time(0), tz).timestamp())


def is_open(windows: Iterable[tuple[int, int]], until: int, at: int) -> bool:
    """The edge's test (kamailio.cfg route[SCHEDULE]) at epoch second ``at``: inside a
    window ``[start, end)``, or past the compiled horizon."""
    return at >= until or any(start <= at < end for start, end in windows)
