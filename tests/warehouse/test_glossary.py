"""One meaning per KPI: the glossary names real queries, and the same KPI gives the same
number on every page's query for the same calls and period (wallboard, Today, Trends'
headline, over time and by DID / by group).

The calls (tenant acme, one local day in Moscow; T = 20 s):

    call  dir       did    group  outcome           wait s  talk s
    i1    inbound   MAIN   sales  answered          5       60
    i2    inbound   MAIN   sales  answered          30      30      outside T
    i3    inbound   MAIN   sales  cancelled (487)   12              abandoned inside T
    i4    inbound   MAIN   sales  busy (486)        1               an agent refused it
    i5    inbound   SALES  sales  failed (603)      2               declined: queued too
    i6    inbound   SALES  -      failed (503)      1               network: not queued
    o1    outbound  -      -      answered          3       600     not a queue call
    n1    internal  -      -      answered          2       30      not a queue call

Queue KPIs (inbound only): offered 6, answered 2, abandoned 1, queued 5 (i1-i5);
service level = (i1 + i3) / 5 = 0.4; answer rate 2/6; abandon rate 1/5; ASA (5+30)/2.
"""

from __future__ import annotations

import inspect
from datetime import date, timedelta

import pytest
from conftest import SETTINGS, cdr_records, make_cdr

from core.records import Disposition
from core.timezones import local_day_bounds, zone
from warehouse import queries
from warehouse.loader import Loader, routes_for
from warehouse.queries import cdr as cdr_queries
from warehouse.queries import glossary, kpi, trends

D = Disposition
MOSCOW = "Europe/Moscow"
DAY = date(2026, 11, 27)
START, END = local_day_bounds(DAY, DAY, zone(MOSCOW))  # 26 Nov 21:00 UTC .. 27 Nov 21:00
MAIN, SALES = "+74957654321", "+74950000002"


def call(call_id, minutes, disposition, wait_s, talk_s=0, **kw):
    start = START + timedelta(minutes=minutes)
    answered = start + timedelta(seconds=wait_s) if disposition == D.ANSWERED else None
    ended = (answered + timedelta(seconds=talk_s)) if answered else start + timedelta(
        seconds=wait_s)
    return make_cdr(call_id, version=3, event_count=3, started_at=start, answered_at=answered,
                    ended_at=ended, ring_ms=wait_s * 1000, talk_ms=talk_s * 1000,
                    disposition=disposition, closed=True, last_event_ts=ended, **kw)


CALLS = [
    call("i1", 10, D.ANSWERED, 5, 60, caller="+79160000001", did=MAIN, route_group="sales",
         agent="101", sip_code=200),
    call("i2", 20, D.ANSWERED, 30, 30, caller="+79160000002", did=MAIN, route_group="sales",
         agent="102", sip_code=200),
    call("i3", 190, D.CANCELLED, 12, caller="+79160000003", did=MAIN, route_group="sales",
         sip_code=487),
    call("i4", 200, D.BUSY, 1, caller="+79160000004", did=MAIN, route_group="sales",
         sip_code=486),
    call("i5", 900, D.FAILED, 2, caller="+79160000005", did=SALES, route_group="sales",
         sip_code=603),
    call("i6", 910, D.FAILED, 1, caller="+79160000006", did=SALES, sip_code=503),
    call("o1", 30, D.ANSWERED, 3, 600, direction="outbound", caller="101",
         callee="+79160000009", did=None, agent="101", sip_code=200),
    call("n1", 40, D.ANSWERED, 2, 30, direction="internal", caller="101", callee="102",
         did=None, agent="102", sip_code=200),
]
QUEUE_KPIS = ("service_level_offered", "answer_rate", "abandonment_rate", "average_wait")


@pytest.fixture
def loaded(store):
    Loader(store, routes_for(SETTINGS), dead_letters=lambda d: None).load(cdr_records(CALLS))
    return store


def test_queue_kpis_count_inbound_calls_with_busy_and_declined_queued(loaded):
    s = kpi.kpi_summary(loaded, "acme", START, END, threshold_s=20)
    assert (s["offered"], s["answered"], s["abandoned"], s["queued"]) == (6, 2, 1, 5)
    assert s["service_level_offered"] == pytest.approx(2 / 5)  # busy/declined never in T
    assert s["service_level_answered"] == pytest.approx(1 / 2)
    assert s["answer_rate"] == pytest.approx(2 / 6)
    assert s["abandonment_rate"] == pytest.approx(1 / 5)
    assert s["asa"] == pytest.approx(17.5)
    assert s["average_wait"] == pytest.approx((5 + 30 + 12 + 1 + 2) / 5)
    # SIP-level and handle-time KPIs are over every direction: 4 answered of 8
    assert s["asr"] == pytest.approx(4 / 8)
    assert s["aht_talk_only"] == pytest.approx((60 + 30 + 600 + 30) / 4)


def test_the_same_kpi_is_the_same_number_on_every_page(loaded):
    args = (loaded, "acme", START, END)
    wallboard = kpi.kpi_summary(*args)  # the wallboard's tiles
    trends_head = kpi.period_comparison(*args)["current"]  # Trends' headline
    over_time = kpi.kpis_by_interval(*args, "1 day", tz=MOSCOW)  # Trends over time
    by_group = trends.kpis_by_dimension(*args, "group").set_index("value")
    assert list(over_time["interval_start"].dt.date) == [DAY]  # one local day
    for name in QUEUE_KPIS:
        expected = wallboard[name]
        assert trends_head[name] == pytest.approx(expected), name
        assert over_time[name].iloc[0] == pytest.approx(expected), name
    # every queued call is in the sales group (i6 was never routed to a group)
    for name in ("answer_rate", "abandonment_rate", "service_level_offered"):
        row = by_group.loc["sales", name]
        assert row == pytest.approx(kpi.kpi_summary(*args)[name] if name != "answer_rate"
                                    else 2 / 5), name
    # Today's answer rate (cdr.calls_summary) is the KPI's
    assert cdr_queries.calls_summary(*args)["answer_rate"] == pytest.approx(
        wallboard["answer_rate"])
    # by DID: a row equals the summary filtered on that DID
    by_did = trends.kpis_by_dimension(*args, "did").set_index("value")
    for did in (MAIN, SALES):
        filtered = kpi.kpi_summary(*args, did=did)
        for name in QUEUE_KPIS:
            assert by_did.loc[did, name] == pytest.approx(filtered[name], nan_ok=True), name


def test_outbound_and_internal_calls_do_not_move_the_queue_kpis(loaded):
    inbound_only = kpi.kpi_summary(loaded, "acme", START, END, direction="inbound")
    every = kpi.kpi_summary(loaded, "acme", START, END)
    for name in (*QUEUE_KPIS, "offered", "queued", "asa"):
        assert every[name] == pytest.approx(inbound_only[name]), name


def test_the_group_split_is_by_the_group_routed_to_not_by_did(loaded):
    by_group = trends.kpis_by_dimension(loaded, "acme", START, END, "group")
    assert dict(zip(by_group["value"], by_group["offered"], strict=True)) == {"sales": 5}


def test_every_glossary_entry_names_a_real_query_and_every_catalogue_kpi_has_one():
    for entry in glossary.GLOSSARY:
        subject, _, function = entry.query.partition(".")
        module = getattr(queries, subject, None) or __import__(
            f"warehouse.queries.{subject}", fromlist=[function])
        assert inspect.isfunction(getattr(module, function)), entry.query
        assert entry.definition and entry.counts and entry.source
    names = {k.name for k in glossary.GLOSSARY}
    assert set(kpi._OUTCOMES) - names == set()  # every computed KPI is defined once
    assert len(names) == len(glossary.GLOSSARY)


def test_pdd_is_the_mean_first_response_of_trunk_calls_per_trunk(store, tmp_path):
    from core.settings import Settings
    from warehouse.tenants import sync_tenants

    path = tmp_path / "p.toml"
    path.write_text('[tenant.acme]\ndomain = "pbx.test"\ntrunk = "127.0.0.1:5090"\n')
    sync_tenants(store, Settings(provisioning_file=path))
    trunk_calls = [call("t1", 50, D.ANSWERED, 4, 10, direction="outbound", caller="101",
                        callee="+79160000011", did=None, pdd_ms=1_500,
                        route_target="tel:+79160000011"),
                   call("t2", 60, D.BUSY, 3, direction="outbound", caller="101",
                        callee="+79160000012", did=None, pdd_ms=2_500,
                        route_target="tel:+79160000012")]
    Loader(store, routes_for(SETTINGS), dead_letters=lambda d: None).load(
        cdr_records([*CALLS, *trunk_calls]))
    assert kpi.pdd(store, "acme", START, END) == pytest.approx(2.0)
    per_trunk = kpi.pdd_by_trunk(store, "acme", START, END).to_dict("records")
    assert per_trunk == [{"trunk": "127.0.0.1:5090", "calls": 2, "pdd_s": pytest.approx(2.0),
                          "pdd_p95_s": pytest.approx(2.45)}]
    assert kpi.pdd_by_trunk(store, "acme", START - timedelta(days=9),
                            START - timedelta(days=8)).empty
