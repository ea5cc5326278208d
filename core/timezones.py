"""Tenant time: each tenant's IANA zone, and the calendar arithmetic done in it.

One source of truth for a tenant's zone: the provisioning file (``[tenant.<name>]
time_zone = "Europe/Moscow"``), with :attr:`core.settings.Settings.default_time_zone`
for a tenant that names none. Every floor reads it through here: the edge validates it
(:mod:`edge.provision`), streams buckets agent intervals and flags missed calls in it,
the warehouse loads it into its ``tenants`` table at start, and the dashboards show
every day, hour and interval in it.

Intervals and days are *local*: a '1 day' bucket is ``[local 00:00, next local 00:00)``,
23 or 25 hours long on a DST change; a '1 hour' bucket starts at a local full hour.
Instants stay UTC everywhere (events, CDRs, warehouse columns); only the boundaries
move::

    zone = ZoneInfo("Asia/Manila")
    floor(datetime(2026, 12, 6, 17, 30, tzinfo=UTC), "1 day", zone)
    # -> 2026-12-06 16:00 UTC (00:00 on 7 December in Manila)
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["UTC_ZONE", "BUCKETS", "BusinessHours", "zone", "is_valid_zone", "tenant_zones",
           "floor", "next_bound", "bounds", "split", "local_day_bounds", "local_today"]

UTC_ZONE = "UTC"

BUCKETS = {"15 minute": timedelta(minutes=15), "1 hour": timedelta(hours=1),
           "1 day": timedelta(days=1)}
"""Bucket names -> nominal length (a local day may be 23 or 25 h long)."""


def is_valid_zone(name: object) -> bool:
    """Whether ``name`` is an IANA zone name the system's tz database knows."""
    if not isinstance(name, str) or not name or name.startswith(("/", ".")):
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


@lru_cache(maxsize=256)
def zone(name: str) -> ZoneInfo:
    """The :class:`ZoneInfo` of an IANA name; ValueError naming it when unknown."""
    if not is_valid_zone(name):
        raise ValueError(f"unknown IANA time zone {name!r}")
    return ZoneInfo(name)


def tenant_zones(path: Path, default: str = UTC_ZONE) -> dict[str, str]:
    """Tenant -> IANA zone from a provisioning file (``default`` where none is named).

    A missing or unreadable file gives ``{}`` (every tenant then has ``default``); an
    invalid zone is :mod:`edge.provision`'s to report, and here falls back to ``default``.
    """
    try:
        stat = Path(path).stat()
    except OSError:
        return {}
    return dict(_read_zones(str(path), stat.st_mtime_ns, default))


@lru_cache(maxsize=16)
def _read_zones(path: str, _mtime_ns: int, default: str) -> tuple[tuple[str, str], ...]:
    # cached per file version: the file is read again only when it changes
    try:
        doc = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return ()
    tenants = doc.get("tenant") if isinstance(doc.get("tenant"), dict) else {}
    out = []
    for name, spec in tenants.items():
        named = spec.get("time_zone") if isinstance(spec, dict) else None
        out.append((name, named if is_valid_zone(named) else default))
    return tuple(out)


# --- buckets in a zone -----------------------------------------------------------------------


def _local(ts: datetime, tz: ZoneInfo) -> datetime:
    return (ts if ts.tzinfo else ts.replace(tzinfo=UTC)).astimezone(tz)


def floor(ts: datetime, bucket: str, tz: ZoneInfo) -> datetime:
    """Start (UTC) of the local ``bucket`` holding ``ts``."""
    if ts.tzinfo is UTC:
        return _floor_utc(ts, bucket, tz)
    return _floor(ts, bucket, tz)


@lru_cache(maxsize=1 << 16)
def _floor_utc(ts: datetime, bucket: str, tz: ZoneInfo) -> datetime:
    """:func:`floor` of a UTC time, remembered (the folds ask for the same few intervals
    on every event). Only UTC times: a local time in a DST fold hashes like its twin."""
    return _floor(ts, bucket, tz)


def _floor(ts: datetime, bucket: str, tz: ZoneInfo) -> datetime:
    local = _local(ts, tz)
    if bucket == "1 day":
        midnight = datetime.combine(local.date(), time.min, tzinfo=tz)
        return midnight.astimezone(UTC)
    if bucket == "1 hour":
        wall = local.replace(minute=0, second=0, microsecond=0)
    elif bucket == "15 minute":
        wall = local.replace(minute=local.minute // 15 * 15, second=0, microsecond=0)
    else:
        raise ValueError(f"bucket must be one of {', '.join(BUCKETS)}; got {bucket!r}")
    # the wall clock keeps ``fold``: in a repeated hour (DST ends) each pass is its own bucket
    return wall.astimezone(UTC)


def next_bound(start: datetime, bucket: str, tz: ZoneInfo) -> datetime:
    """End (UTC) of the local bucket starting at ``start``: the next local midnight for a
    day, ``start`` + 15 min / 1 h otherwise (absolute time: a local hour is 60 minutes)."""
    if bucket == "1 day":
        return _next_day(start, tz) if start.tzinfo is UTC else _next_day.__wrapped__(start, tz)
    return start + BUCKETS[bucket]


@lru_cache(maxsize=1 << 14)
def _next_day(start: datetime, tz: ZoneInfo) -> datetime:
    """The next local midnight (UTC) after ``start``; remembered for UTC times only (as
    :func:`_floor_utc`)."""
    day = _local(start, tz).date() + timedelta(days=1)
    return datetime.combine(day, time.min, tzinfo=tz).astimezone(UTC)


def bounds(start: datetime, end: datetime, bucket: str, tz: ZoneInfo) -> list[datetime]:
    """Bucket boundaries (UTC) covering ``[start, end)``: from the bucket holding
    ``start`` to the first boundary at or after ``end`` (n buckets -> n + 1 bounds)."""
    out = [floor(start, bucket, tz)]
    while out[-1] < end:
        out.append(next_bound(out[-1], bucket, tz))
    if len(out) == 1:
        out.append(next_bound(out[0], bucket, tz))
    return out


def split(start: datetime, end: datetime, bucket: str,
          tz: ZoneInfo) -> Iterator[tuple[datetime, datetime, datetime]]:
    """``(bucket start, part start, part end)`` of each local bucket ``[start, end)`` touches."""
    at = start
    while at < end:
        bucket_start = floor(at, bucket, tz)
        stop = min(end, next_bound(bucket_start, bucket, tz))
        yield bucket_start, at, stop
        at = stop


def local_day_bounds(first: date, last: date, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """``[first 00:00, last + 1 day 00:00)`` local, as UTC instants."""
    start = datetime.combine(first, time.min, tzinfo=tz).astimezone(UTC)
    end = datetime.combine(last + timedelta(days=1), time.min, tzinfo=tz).astimezone(UTC)
    return start, end


def local_today(tz: ZoneInfo, now: datetime | None = None) -> date:
    """Today's date in ``tz``."""
    return _local(now or datetime.now(UTC), tz).date()


# --- business hours ----------------------------------------------------------------------------


@dataclass(frozen=True)
class BusinessHours:
    """Opening hours in local time: ``BusinessHours(9, 18, (1, 2, 3, 4, 5))`` is 09:00-18:00
    Monday to Friday (ISO weekdays). ``night`` is outside the hours on any day, ``weekend``
    a day that is not a working day (its whole day, hours or not)."""

    start_hour: int = 9
    end_hour: int = 18
    days: tuple[int, ...] = (1, 2, 3, 4, 5)

    def __post_init__(self) -> None:
        if not 0 <= self.start_hour < self.end_hour <= 24:
            raise ValueError("business hours: 0 <= start < end <= 24, got "
                             f"{self.start_hour}-{self.end_hour}")
        if not self.days or any(d not in range(1, 8) for d in self.days):
            raise ValueError(f"business days: ISO weekdays 1..7, got {self.days!r}")

    @classmethod
    def parse(cls, hours: str, days: str) -> BusinessHours:
        """From settings text: ``"9-18"`` and ``"1,2,3,4,5"``."""
        start, _, end = hours.partition("-")
        return cls(int(start), int(end), tuple(int(d) for d in days.split(",") if d.strip()))

    def flags(self, ts: datetime, tz: ZoneInfo) -> dict[str, bool]:
        """``night`` and ``weekend`` of the instant ``ts`` in ``tz``."""
        local = _local(ts, tz)
        return {"night": not self.start_hour <= local.hour < self.end_hour,
                "weekend": local.isoweekday() not in self.days}
