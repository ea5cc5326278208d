"""Tenant time in streams: local buckets (core.timezones), the agents' interval statistics
and the missed-call night/weekend flags, for a Moscow (UTC+3) and a Manila (UTC+8)
tenant across their midnights and a DST-observing zone (Berlin, last Sunday of March).

Expected values are worked out here from the zones' offsets, not read from the code.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from core.agent_records import IntervalKind
from core.events import Direction, Event, EventType
from core.records import Cdr, Disposition
from core.timezones import BusinessHours, bounds, floor, local_day_bounds, next_bound, zone
from streams.folds import callbacks
from streams.folds.agent_state import AgentConfig, fold
from streams.folds.agent_stats import stats

MOSCOW, MANILA, BERLIN = zone("Europe/Moscow"), zone("Asia/Manila"), zone("Europe/Berlin")
# Friday 27 November 2026, 22:30 UTC: Saturday 01:30 in Moscow, Saturday 06:30 in Manila
LATE_FRIDAY = datetime(2026, 11, 27, 22, 30, tzinfo=UTC)
H = timedelta(hours=1)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --- buckets ---------------------------------------------------------------------------------


def test_a_local_day_starts_at_local_midnight_in_utc_terms():
    assert floor(LATE_FRIDAY, "1 day", MOSCOW) == utc(2026, 11, 27, 21)  # Sat 00:00 MSK
    assert floor(LATE_FRIDAY, "1 day", MANILA) == utc(2026, 11, 27, 16)  # Sat 00:00 PHT
    assert floor(LATE_FRIDAY, "1 day", zone("UTC")) == utc(2026, 11, 27)


def test_an_instant_just_before_local_midnight_is_the_previous_local_day():
    before = utc(2026, 11, 27, 20, 59, 59)  # 23:59:59 in Moscow
    assert floor(before, "1 day", MOSCOW) == utc(2026, 11, 26, 21)
    assert floor(before + timedelta(seconds=1), "1 day", MOSCOW) == utc(2026, 11, 27, 21)


def test_hours_and_quarters_are_local_full_hours():
    assert floor(LATE_FRIDAY, "1 hour", MANILA) == utc(2026, 11, 27, 22)
    assert floor(utc(2026, 11, 27, 22, 44), "15 minute", MOSCOW) == utc(2026, 11, 27, 22, 30)
    # a half-hour zone: Kolkata's hours start at :30 UTC
    assert floor(utc(2026, 11, 27, 22, 10), "1 hour", zone("Asia/Kolkata")) \
        == utc(2026, 11, 27, 21, 30)


def test_berlin_day_of_the_spring_change_has_23_hours_and_autumn_25():
    # DST starts Sunday 29 March 2026 (02:00 CET -> 03:00 CEST), ends Sunday 25 October
    start = floor(utc(2026, 3, 29, 12), "1 day", BERLIN)
    assert start == utc(2026, 3, 28, 23)  # 00:00 CET
    assert next_bound(start, "1 day", BERLIN) - start == 23 * H
    autumn = floor(utc(2026, 10, 25, 12), "1 day", BERLIN)
    assert next_bound(autumn, "1 day", BERLIN) - autumn == 25 * H


def test_hour_bounds_of_the_spring_day_are_23_distinct_hours():
    day_start, day_end = local_day_bounds(utc(2026, 3, 29).date(), utc(2026, 3, 29).date(),
                                          BERLIN)
    edges = bounds(day_start, day_end, "1 hour", BERLIN)
    assert len(edges) == 24 and edges[-1] == day_end  # 23 buckets
    assert all(b - a == H for a, b in zip(edges, edges[1:], strict=False))


def test_the_repeated_autumn_hour_is_two_buckets():
    # 02:00-03:00 happens twice on 25 October 2026 in Berlin: 00:00 and 01:00 UTC
    first, second = utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1, 30)
    assert floor(first, "1 hour", BERLIN) == utc(2026, 10, 25, 0)
    assert floor(second, "1 hour", BERLIN) == utc(2026, 10, 25, 1)


# --- agent interval statistics -----------------------------------------------------------------


def _call_of(tenant: str, t0: datetime) -> list[Event]:
    """An inbound call that rings 101 at t0, answered 10 s later, 20 min of talk."""
    def ev(kind: EventType, offset_s: int, **fields) -> Event:
        return Event(event_id=f"c1/{kind.value}", type=kind, tenant=tenant,
                     ts=t0 + timedelta(seconds=offset_s), source="test", call_id="c1",
                     caller="+74951234567", callee="101", direction=Direction.INBOUND,
                     **fields)
    reg = Event(event_id="reg", type=EventType.AGENT_REGISTERED, tenant=tenant,
                ts=t0 - timedelta(minutes=5), source="test", agent="101")
    return [reg, ev(EventType.CALL_OFFERED, 0), ev(EventType.CALL_RINGING, 0, agent="101"),
            ev(EventType.CALL_ANSWERED, 10, agent="101"),
            ev(EventType.CALL_ENDED, 1210, agent="101")]


CONFIG = AgentConfig(time_zones=(("moscow", "Europe/Moscow"), ("manila", "Asia/Manila")))


def _days(tenant: str, t0: datetime) -> dict[datetime, object]:
    state = fold(tenant, "101", _call_of(tenant, t0), CONFIG)
    return {key[1]: row for key, row in stats(state, CONFIG).items()
            if key[0] is IntervalKind.DAY}


def test_a_moscow_agents_day_rows_split_at_moscow_midnight():
    # rings 20:55 UTC (23:55 MSK), talks 20:55:10-21:15:10 UTC: crosses Moscow midnight
    days = _days("moscow", utc(2026, 11, 27, 20, 55))
    before, after = utc(2026, 11, 26, 21), utc(2026, 11, 27, 21)
    assert set(days) == {before, after}
    assert days[before].offered == 1 and days[after].offered == 0  # where it rang
    assert days[after].handled == 1  # where the talk ended
    # on_call 20:55:10-21:00 = 290 s before midnight, 21:00-21:15:10 = 910 s after
    assert (days[before].talk_ms, days[after].talk_ms) == (290_000, 910_000)


def test_the_same_utc_call_is_one_manila_day_and_utc_gives_other_rows():
    # 20:55 UTC is 04:55 the next day in Manila: the whole call is in one Manila day
    days = _days("manila", utc(2026, 11, 27, 20, 55))
    assert set(days) == {utc(2026, 11, 27, 16)}
    assert days[utc(2026, 11, 27, 16)].talk_ms == 1_200_000
    # a tenant with no zone in provisioning gets the default (UTC): one UTC day
    assert set(_days("other", utc(2026, 11, 27, 20, 55))) == {utc(2026, 11, 27)}


def test_complete_until_is_capped_at_the_local_day_end():
    state = fold("moscow", "101", _call_of("moscow", utc(2026, 11, 27, 20, 55)), CONFIG)
    rows = stats(state, CONFIG)
    first_day = rows[(IntervalKind.DAY, utc(2026, 11, 26, 21))]
    assert first_day.complete_until == utc(2026, 11, 27, 21)  # Moscow midnight, not 00:00 UTC


# --- missed-call flags ---------------------------------------------------------------------------


def _missed(tenant: str, started: datetime) -> Cdr:
    return Cdr(tenant=tenant, call_id="m1", version=3, direction="inbound",
               caller="+74951234567", callee="101", did="+74957654321", agent=None,
               started_at=started, answered_at=None, ended_at=started + timedelta(seconds=20),
               ring_ms=20_000, talk_ms=0, disposition=Disposition.NO_ANSWER, sip_code=480,
               reason=None, hangup_by=None, closed=True, recording=None, mos=None,
               packet_loss=None, jitter_ms=None, event_count=3, last_event_ts=started)


CB_CONFIG = callbacks.CallbackConfig(
    time_zones=(("moscow", "Europe/Moscow"), ("manila", "Asia/Manila")),
    business_hours=BusinessHours(9, 18, (1, 2, 3, 4, 5)))


def _flags(tenant: str, started: datetime) -> tuple[bool, bool, str]:
    state = callbacks.fold(tenant, "+74951234567", [_missed(tenant, started)], CB_CONFIG)
    [item] = callbacks.items(state, CB_CONFIG)
    return item.night, item.weekend, item.time_zone


def test_friday_evening_utc_is_night_in_moscow_and_saturday_in_manila():
    # Friday 16:30 UTC: 19:30 Friday in Moscow (night), 00:30 Saturday in Manila (both)
    friday = utc(2026, 11, 27, 16, 30)
    assert _flags("moscow", friday) == (True, False, "Europe/Moscow")
    assert _flags("manila", friday) == (True, True, "Asia/Manila")


def test_a_morning_call_is_business_hours_only_where_it_is_morning():
    # Friday 06:30 UTC: 09:30 in Moscow (open), 14:30 in Manila (open), 06:30 UTC (night)
    morning = utc(2026, 11, 27, 6, 30)
    assert _flags("moscow", morning) == (False, False, "Europe/Moscow")
    assert _flags("manila", morning) == (False, False, "Asia/Manila")
    assert _flags("elsewhere", morning) == (True, False, "UTC")


def test_sunday_evening_utc_is_monday_morning_in_manila():
    # Sunday 29 Nov 23:30 UTC = Monday 07:30 in Manila: a working day, before opening
    assert _flags("manila", utc(2026, 11, 29, 23, 30)) == (True, False, "Asia/Manila")
    assert _flags("moscow", utc(2026, 11, 29, 23, 30)) == (True, False, "Europe/Moscow")
    assert _flags("moscow", utc(2026, 11, 29, 20, 30)) == (True, True, "Europe/Moscow")
