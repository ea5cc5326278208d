"""Named CDR queries on hand-made calls, with the answers worked out here.

The day (all UTC, window [09:00, 12:00) on 2026-11-26, tenant acme):

    call  started  revisions (version: disposition)           in window?  counts as
    c1    09:05    1: in_progress, 2: answered (closed)         yes         answered
    c2    09:40    1: busy (closed)                             yes         missed
    c3    10:10    1: no_answer (closed)                        yes         missed
    c4    10:20    1: cancelled (closed)                        yes         missed
    c5    10:30    1: in_progress, 4: answered (closed)         yes         answered
    c6    11:15    1: in_progress                               yes         in progress
    c7    12:00    1: failed (closed)                           no (end is exclusive)
    c8    08:59:59.999  1: answered (closed)                    no
    c9    11:50 in v1, moved to 08:30 by v2 (a late event)      no (latest revision counts)
    g1    09:30    globex's call                                no (other tenant)

    total 6, in progress 1, closed 5, answered 2, missed 3 -> answer rate 2/5 = 0.4
    by hour: 09h 2 calls (1 answered, 1 missed), 10h 3 (1, 2), 11h 1 (0, 0)
"""

from datetime import timedelta

import pytest
from conftest import SETTINGS, T0, cdr_records, make_cdr

from core.records import Disposition
from warehouse.loader import Loader, routes_for
from warehouse.queries import Queries
from warehouse.queries import cdr as q

D = Disposition
START, END = T0, T0 + timedelta(hours=3)


def at(minutes: float):
    return T0 + timedelta(minutes=minutes)


def closed(call_id, minutes, disposition, version=1, **kw):
    return make_cdr(call_id, started_at=at(minutes), disposition=disposition, closed=True,
                    version=version, event_count=version, **kw)


def open_(call_id, minutes, version=1, **kw):
    return make_cdr(call_id, started_at=at(minutes), version=version, **kw)


REVISIONS = [
    open_("c1", 5), closed("c1", 5, D.ANSWERED, 2, agent="101", answered_at=at(5.2)),
    closed("c2", 40, D.BUSY, sip_code=486),
    closed("c3", 70, D.NO_ANSWER),
    closed("c4", 80, D.CANCELLED),
    closed("c5", 90, D.ANSWERED, 4, agent="102"), open_("c5", 90),  # v1 arrives late
    open_("c6", 135),
    closed("c7", 180, D.FAILED),
    closed("c8", -0.0001 / 6, D.ANSWERED),
    open_("c9", 170), open_("c9", -30, version=2),
    closed("g1", 30, D.ANSWERED, tenant="globex"),
]


@pytest.fixture
def day(store):
    loader = Loader(store, routes_for(SETTINGS), dead_letters=lambda d: None)
    for offset, revision in enumerate(REVISIONS):  # one insert per revision, as in life
        loader.load(cdr_records([revision], first_offset=offset))
    return store


def test_calls_summary(day):
    assert q.calls_summary(day, "acme", START, END) == {
        "total": 6, "in_progress": 1, "closed": 5, "answered": 2, "missed": 3,
        "answer_rate": 0.4}


def test_calls_summary_of_an_empty_window_has_no_answer_rate(day):
    summary = q.calls_summary(day, "acme", END + timedelta(days=1), END + timedelta(days=2))
    assert summary["total"] == 0 and summary["answer_rate"] is None


def test_latest_cdrs_are_newest_first_one_row_per_call(day):
    df = q.latest_cdrs(day, "acme", limit=3)
    assert list(df["call_id"]) == ["c7", "c6", "c5"]
    assert df.loc[df["call_id"] == "c5", "version"].item() == 4


def test_latest_cdrs_default_limit_covers_every_call_once(day):
    df = q.latest_cdrs(day, "acme")
    assert sorted(df["call_id"]) == ["c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8", "c9"]


def test_cdr_returns_the_latest_revision(day):
    row = q.cdr(day, "acme", "c5")
    assert (row["version"], row["disposition"], row["closed"], row["agent"]) \
        == (4, "answered", True, "102")
    assert row["started_at"] == at(90)


def test_cdr_of_an_unknown_call_or_another_tenant_is_none(day):
    assert q.cdr(day, "acme", "nope") is None
    assert q.cdr(day, "acme", "g1") is None


def test_cdrs_between_is_the_window_oldest_first(day):
    df = q.cdrs_between(day, "acme", START, END)
    assert list(df["call_id"]) == ["c1", "c2", "c3", "c4", "c5", "c6"]
    assert list(df["version"]) == [2, 1, 1, 1, 4, 1]
    assert str(df["started_at"].dt.tz) == "UTC"


def test_calls_by_hour_fills_every_hour(day):
    df = q.calls_by_hour(day, "acme", START, END)
    assert list(df["hour"]) == [T0, at(60), at(120)]
    assert list(df["total"]) == [2, 3, 1]
    assert list(df["answered"]) == [1, 1, 0]
    assert list(df["missed"]) == [1, 2, 0]


def test_calls_by_hour_keeps_empty_hours_as_zeros(day):
    df = q.calls_by_hour(day, "globex", START, END)  # g1 at 09:30
    assert list(df["total"]) == [1, 0, 0]


def test_queries_facade_binds_the_client(day):
    assert Queries(day).cdr.calls_summary("acme", START, END)["answered"] == 2
