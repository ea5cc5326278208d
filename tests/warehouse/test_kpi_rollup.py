"""The KPI rollup (migration 0010, warehouse.rollup): the KPIs read through it equal the
KPIs over cdrs FINAL alone -- after a late revision of an old day, a redelivered
revision, for partial windows, filters and other tenants -- and it stays under the
tenant row policies."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from conftest import SETTINGS, cdr_records, make_cdr

from core.records import Disposition
from warehouse import rollup, schema
from warehouse.loader import Loader, routes_for
from warehouse.queries import kpi
from warehouse.server_access import access_statements

ROUTES = routes_for(SETTINGS)
DAY0 = datetime(2026, 11, 20, tzinfo=UTC)
DAYS = 4
CALLERS = ["+1", "+2", "", None, *(f"+3{i}" for i in range(60))]
"""Two frequent callers, hidden numbers, and many who call a few times (or once)."""
_OUTCOMES = [  # disposition, sip_code
    (Disposition.ANSWERED, 200), (Disposition.CANCELLED, 487), (Disposition.NO_ANSWER, 480),
    (Disposition.BUSY, 486), (Disposition.FAILED, 603), (Disposition.FAILED, 404),
    (Disposition.FAILED, 302), (Disposition.IN_PROGRESS, None)]


def a_call(rng: random.Random, tenant: str, n: int, version: int = 3):
    """A call with random direction, DID, outcome and waits; some on whole seconds."""
    start = DAY0 + timedelta(seconds=rng.randrange(DAYS * 86400))
    disposition, code = rng.choice(_OUTCOMES)
    ring = rng.choice([rng.randrange(60_000), 20_000, 10_000, 9_999, 20_001, 0])
    talk = (rng.choice([rng.randrange(1, 900_000), rng.randrange(1, 7_200_000)])
            if disposition == Disposition.ANSWERED else 0)  # some talk across slots, days
    answered = start + timedelta(milliseconds=ring) if talk else None
    closed = disposition != Disposition.IN_PROGRESS
    return make_cdr(
        f"{tenant}-{n}", tenant=tenant, version=version,
        direction=rng.choice(["inbound", "inbound", "outbound", "internal", None]),
        caller=rng.choice(CALLERS), did=rng.choice(["+70", "+71", None]),
        agent=rng.choice(["101", "102"]) if talk else None, started_at=start,
        answered_at=answered,
        ended_at=start + timedelta(milliseconds=ring + talk) if closed else None,
        ring_ms=ring, talk_ms=talk, disposition=disposition, sip_code=code, closed=closed,
        pdd_ms=rng.choice([None, rng.randrange(5000)]), event_count=version,
        last_event_ts=start)


class Feed:
    """Loads revisions as the loader does, one batch each, on increasing offsets."""

    def __init__(self, store) -> None:
        self.loader = Loader(store, ROUTES, lambda d: None)
        self.offset = 0

    def load(self, cdrs, *, partition: int = 0) -> None:
        self.loader.load(cdr_records(list(cdrs), first_offset=self.offset, partition=partition))
        self.offset += len(cdrs)


WINDOWS = [
    (DAY0, DAY0 + timedelta(days=DAYS)),                                    # whole days
    (DAY0 + timedelta(days=2), DAY0 + timedelta(days=DAYS)),  # the comparison: days 0-3
    (DAY0 + timedelta(days=1), DAY0 + timedelta(days=2)),                   # one day
    (DAY0 + timedelta(hours=5, minutes=7, seconds=3),                       # ragged ends
     DAY0 + timedelta(days=2, hours=17, minutes=52, milliseconds=1)),
    (DAY0 + timedelta(hours=30, minutes=1), DAY0 + timedelta(hours=30, minutes=9)),  # < slot
]
FILTERS = [{}, {"direction": "inbound"}, {"did": "+70"}, {"direction": "outbound", "did": "+71"},
           {"agent": "101"}]


def raw(monkeypatch, fn, *args, **kwargs):
    """``fn`` with the rollup switched off: every call read from cdrs FINAL."""
    with monkeypatch.context() as m:
        m.setattr(kpi, "_rollup_plan", lambda *a, **k: None)
        return fn(*args, **kwargs)


def assert_same_kpis(store, monkeypatch, tenant: str = "acme") -> None:
    for start, end in WINDOWS:
        for filters in FILTERS:
            got = kpi.kpi_summary(store, tenant, start, end, **filters)
            want = raw(monkeypatch, kpi.kpi_summary, store, tenant, start, end, **filters)
            assert got == want, (start, end, filters)
            got = kpi.period_comparison(store, tenant, start, end, **filters)
            want = raw(monkeypatch, kpi.period_comparison, store, tenant, start, end, **filters)
            assert got == want, ("period_comparison", start, end, filters)
    for repeat_window_h in (0.25, 1.0, 48.0, 0.1):  # 0.1 h: under a slot, from cdrs
        for start, end in WINDOWS[2:4]:
            got = kpi.kpi_summary(store, tenant, start, end, repeat_window_h=repeat_window_h)
            want = raw(monkeypatch, kpi.kpi_summary, store, tenant, start, end,
                       repeat_window_h=repeat_window_h)
            assert got == want, ("repeat window", repeat_window_h, start, end)
    for window in (WINDOWS[2], WINDOWS[3], WINDOWS[4], *LOCAL_DAYS):
        for interval, tz, options in INTERVAL_CASES:
            got = kpi.kpis_by_interval(store, tenant, *window, interval, tz=tz, **options)
            want = raw(monkeypatch, kpi.kpis_by_interval, store, tenant, *window, interval,
                       tz=tz, **options)
            pd.testing.assert_frame_equal(got, want, check_dtype=False, rtol=1e-12)
            options = {k: v for k, v in options.items() if k != "short_abandon_s"}
            got = kpi.talk_time_by_interval(store, tenant, *window, interval, tz=tz, **options)
            want = raw(monkeypatch, kpi.talk_time_by_interval, store, tenant, *window,
                       interval, tz=tz, **options)
            pd.testing.assert_frame_equal(got, want, check_dtype=False)
    for start, end in LOCAL_DAYS:
        got = kpi.kpi_summary(store, tenant, start, end, did="+71")
        assert got == raw(monkeypatch, kpi.kpi_summary, store, tenant, start, end, did="+71")


INTERVAL_CASES = [("1 hour", "UTC", {}), ("15 minute", "Asia/Kathmandu", {}),
                  ("1 day", "Europe/Moscow", {"short_abandon_s": 10.0}),
                  ("1 hour", "Asia/Kolkata", {"direction": "inbound"}),
                  ("1 hour", "UTC", {"did": "+70"})]
LOCAL_DAYS = [  # a local day of a tenant in Moscow (UTC+3) and in Kathmandu (UTC+5:45)
    (DAY0 + timedelta(days=1, hours=-3), DAY0 + timedelta(days=2, hours=-3)),
    (DAY0 + timedelta(days=2, hours=-5, minutes=-45), DAY0 + timedelta(days=3, hours=-5,
                                                                       minutes=-45)),
]


def plan(store, tenant="acme", start=DAY0, end=DAY0 + timedelta(days=DAYS)):
    params = {**kpi.build_params(), "tenant": tenant, "start": start, "end": end}
    return kpi._rollup_plan(store, kpi._SUMMARY_EXPRS, params, None)["params"]


@pytest.fixture
def loaded(store):
    rng = random.Random(15)
    feed = Feed(store)
    calls = [a_call(rng, tenant, n) for tenant in ("acme", "other") for n in range(400)]
    # earlier revisions (ringing) first, then the final ones, in batches
    feed.load([c.__class__(**{**c.__dict__, "version": 1, "closed": False,
                              "disposition": Disposition.IN_PROGRESS, "answered_at": None,
                              "ended_at": None, "ring_ms": 0, "talk_ms": 0, "sip_code": None})
               for c in calls[::3]])
    for i in range(0, len(calls), 100):
        feed.load(calls[i:i + 100])
    return store, feed, calls


def test_the_rollup_gives_the_kpis_of_cdrs_final(loaded, monkeypatch):
    store, _, _ = loaded
    assert rollup.refresh(store) == 2 * DAYS
    assert rollup.refresh(store) == 0, "nothing loaded since: nothing to rebuild"
    p = plan(store)
    assert p["raw_days"] == [] and len(p["rollup_days"]) == DAYS
    assert_same_kpis(store, monkeypatch)
    assert_same_kpis(store, monkeypatch, "other")


def test_before_any_rebuild_everything_is_read_from_cdrs(loaded, monkeypatch):
    store, _, _ = loaded
    assert plan(store)["rollup_days"] == []
    assert_same_kpis(store, monkeypatch)


def test_a_late_revision_of_an_old_day_and_a_redelivery(loaded, monkeypatch):
    store, feed, calls = loaded
    rollup.refresh(store)
    old = next(c for c in calls if c.tenant == "acme" and c.started_at < DAY0 + timedelta(days=1)
               and c.disposition == Disposition.CANCELLED and c.direction == "inbound")
    late = old.__class__(**{**old.__dict__, "version": 9, "disposition": Disposition.ANSWERED,
                            "sip_code": 200, "answered_at": old.started_at, "talk_ms": 60_000,
                            "agent": "102", "ended_at": old.started_at + timedelta(minutes=1)})
    before = kpi.kpi_summary(store, "acme", *WINDOWS[0])
    feed.load([late])
    assert DAY0.date() in plan(store)["raw_days"], "the revised day is read from cdrs"
    after = kpi.kpi_summary(store, "acme", *WINDOWS[0])
    assert after["answered"] == before["answered"] + 1
    assert after["abandoned"] == before["abandoned"] - 1
    assert_same_kpis(store, monkeypatch)
    assert rollup.refresh(store) == 1
    assert plan(store)["raw_days"] == []
    assert kpi.kpi_summary(store, "acme", *WINDOWS[0]) == after
    assert_same_kpis(store, monkeypatch)
    # the same revision delivered again (another offset: not deduplicated), and an older
    # one arriving after it: FINAL keeps version 9, so does the rollup
    feed.load([late, old])
    assert_same_kpis(store, monkeypatch)
    assert rollup.refresh(store) == 1
    assert kpi.kpi_summary(store, "acme", *WINDOWS[0]) == after
    assert_same_kpis(store, monkeypatch)
    # only the newest generation is kept
    generations = store.query(f"SELECT DISTINCT generation FROM {schema.CDR_ROLLUP} "
                              "WHERE tenant = 'acme' AND call_day = {d:Date}",
                              {"d": DAY0.date()})
    assert len(generations) == 1


def test_a_rebuild_twice_counts_once(loaded, monkeypatch):
    store, _, _ = loaded
    rollup.refresh(store)
    day = store.query(f"SELECT tenant, call_day, generation FROM {schema.CDR_ROLLUP_DAYS} "
                      "WHERE tenant = 'acme' ORDER BY call_day LIMIT 1")[0]
    rollup.rebuild_day(store, day["tenant"], day["call_day"], day["generation"])
    builds = store.query(f"SELECT DISTINCT build FROM {schema.CDR_ROLLUP_CALLERS} WHERE "
                         "tenant = 'acme' AND call_day = {d:Date}", {"d": day["call_day"]})
    assert len(builds) == 2, "two copies of the caller pieces, one read (no FINAL)"
    assert_same_kpis(store, monkeypatch)


def test_settle_leaves_recent_days_to_cdrs(loaded):
    store, _, _ = loaded
    assert rollup.refresh(store, settle_s=3600) == 0
    assert plan(store)["rollup_days"] == []


def test_rollups_are_under_the_tenant_row_policies():
    statements = access_statements(["acme"], writer="tawag")
    for table in schema.ROLLUP_TABLES:
        assert f"GRANT SELECT ON {table} TO `tawag_tenant_acme`" in statements
        assert any(s.startswith("CREATE ROW POLICY") and f" ON {table} " in s
                   and "USING tenant = 'acme' TO `tawag_tenant_acme`" in s for s in statements)


def test_whole_slots_of_current_days_need_no_cdrs(loaded):
    """Every KPI of a window on slot bounds over current days comes from the rollups:
    the same figures once the tenant's cdrs are gone (the rollups are not told)."""
    store, _, _ = loaded
    rollup.refresh(store)
    start, end = DAY0 + timedelta(days=1), DAY0 + timedelta(days=3, minutes=45)

    def figures():
        return (kpi.kpi_summary(store, "acme", start, end),
                kpi.kpis_by_interval(store, "acme", start, end, "1 hour"),
                kpi.talk_time_by_interval(store, "acme", start, end, "15 minute"))

    summary, by_interval, talk = figures()
    assert summary["total"] > 0 and summary["repeat_callers"] > 0
    assert talk["talk_time_ms"].sum() > 0
    store.command(f"DELETE FROM {schema.CDRS} WHERE tenant = 'acme'")
    after = figures()
    assert after[0] == summary
    pd.testing.assert_frame_equal(after[1], by_interval)
    pd.testing.assert_frame_equal(after[2], talk)
