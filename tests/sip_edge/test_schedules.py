"""Opening hours compiled into the edge's open windows, checked at the minute they change.

Pure: no edge. The edge compares the INVITE's epoch second with the windows exactly as
:func:`edge.schedules.is_open` does (kamailio.cfg route[SCHEDULE]); test_pbx.py places
calls on a closed and an open number through the real edge.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from edge import provision
from edge.schedules import horizon_end, is_open, open_windows

WEEKDAYS = {d: "09:00-18:00" for d in ("mon", "tue", "wed", "thu", "fri")}
MONDAY = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)  # 15:00 in Moscow


def epoch(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp())


def test_moscow_weekdays_open_at_nine_and_close_at_six_local():
    windows = open_windows(WEEKDAYS, (), "Europe/Moscow", MONDAY, days=7)
    assert windows[0] == (epoch("2026-12-07T06:00:00+00:00"), epoch("2026-12-07T15:00:00+00:00"))
    assert len(windows) == 5  # Saturday and Sunday closed
    until = horizon_end("Europe/Moscow", MONDAY, days=7)
    opens, closes = windows[0]
    assert not is_open(windows, until, opens - 1)   # 08:59:59
    assert is_open(windows, until, opens)           # 09:00:00
    assert is_open(windows, until, closes - 1)      # 17:59:59
    assert not is_open(windows, until, closes)      # 18:00:00
    saturday_noon = epoch("2026-12-12T09:00:00+00:00")
    assert not is_open(windows, until, saturday_noon)


def test_a_holiday_is_closed_all_day_and_the_next_day_opens_as_usual():
    windows = open_windows(WEEKDAYS, ["2026-12-08"], "Europe/Moscow", MONDAY, days=7)
    until = horizon_end("Europe/Moscow", MONDAY, days=7)
    assert not is_open(windows, until, epoch("2026-12-08T09:00:00+03:00"))
    assert is_open(windows, until, epoch("2026-12-09T09:00:00+03:00"))


def test_daylight_saving_moves_the_utc_hours_and_a_whole_day_merges_with_the_next():
    every_day = {d: "00:00-24:00" for d in ("fri", "sat", "sun")} | {"mon": "09:00-18:00"}
    friday = datetime(2027, 3, 26, 12, 0, tzinfo=UTC)
    windows = open_windows(every_day, (), "Europe/Berlin", friday, days=4)
    # Friday 00:00 CET to Monday 00:00 CEST: one window, 71 hours (the night lost an hour)
    assert windows[0] == (epoch("2027-03-25T23:00:00+00:00"), epoch("2027-03-28T22:00:00+00:00"))
    assert (windows[0][1] - windows[0][0]) == 71 * 3600
    assert windows[1][0] == epoch("2027-03-29T07:00:00+00:00")  # 09:00 CEST


def test_past_the_compiled_horizon_a_number_counts_as_open():
    windows = open_windows(WEEKDAYS, (), "Europe/Moscow", MONDAY, days=2)
    until = horizon_end("Europe/Moscow", MONDAY, days=2)
    assert until == epoch("2026-12-09T00:00:00+03:00")
    assert is_open(windows, until, until + 3600 * 12 + 3600 * 24 * 5)  # a Sunday, past it


GOOD = """\
[tenant.acme]
domain = "pbx.test"
trunk = "127.0.0.1:5090"
time_zone = "Europe/Moscow"

[tenant.acme.extension.101]
password = "secret-101"

[tenant.acme.schedule.office]
hours = { mon = "09:00-18:00", fri = "09:00-17:00" }
holidays = ["2026-12-11"]
closed = "ext:101"

[tenant.acme.did."74951230001"]
to = "ext:101"
schedule = "office"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tawag.toml"
    path.write_text(text)
    return path


def test_a_scheduled_did_compiles_to_its_windows_horizon_and_closed_target(tmp_path):
    assert provision.check(write(tmp_path, GOOD)) == []
    state = provision.load(write(tmp_path, GOOD), now=MONDAY)["acme"]
    ints, strings = state.ints, state.strings
    assert strings["sched:74951230001:closed"] == "ext:101"
    assert ints["sched:74951230001:s0"] == epoch("2026-12-07T06:00:00+00:00")
    assert ints["sched:74951230001:e0"] == epoch("2026-12-07T15:00:00+00:00")
    n = ints["sched:74951230001:n"]
    assert n == len([k for k in ints if k.startswith("sched:74951230001:s")])
    assert ints["sched:74951230001:until"] == horizon_end("Europe/Moscow", MONDAY)
    opening_days = {datetime.fromtimestamp(ints[f"sched:74951230001:s{i}"], UTC).date()
                    for i in range(n)}
    assert date(2026, 12, 11) not in opening_days  # the holiday, a Friday
    assert {date(2026, 12, 14), date(2026, 12, 18)} <= opening_days  # Monday, Friday


@pytest.mark.parametrize("change, line, message", [
    ('hours = { mon = "09:00-18:00", fri = "09:00-17:00" }',
     'hours = { mon = "18:00-09:00" }', "schedule office: hours.mon: '18:00-09:00': closes "
                                       "before it opens"),
    ('hours = { mon = "09:00-18:00", fri = "09:00-17:00" }',
     'hours = { monday = "09:00-18:00" }', "schedule office: hours: unknown day 'monday'"),
    ('holidays = ["2026-12-11"]', 'holidays = ["31.12.2026"]',
     "schedule office: holidays: not a date \"YYYY-MM-DD\": '31.12.2026'"),
    ('closed = "ext:101"', 'closed = "ext:199"', "schedule office: closed: "),
    ('schedule = "office"', 'schedule = "night"',
     "did 74951230001: schedule 'night' is not defined in this tenant"),
    ('time_zone = "Europe/Moscow"\n', '',
     "did 74951230001: a schedule needs the tenant's time_zone"),
])
def test_schedule_mistakes_are_reported_at_their_lines(tmp_path, change, line, message):
    [error] = provision.check(write(tmp_path, GOOD.replace(change, line)))
    assert message in error.message, error.message
    assert error.line > 0
