"""The dashboards' query modules (calls, wallboard, trends, quality, catalog) on known CDRs."""

from __future__ import annotations

from datetime import timedelta

import pytest
from conftest import T0, cdr_records, make_cdr

from core.records import Disposition
from core.settings import Settings
from warehouse.loader import Loader, routes_for
from warehouse.queries import calls, catalog, quality, trends, wallboard

END = T0 + timedelta(days=1)


def answered(call_id, ring_s, talk_s, **changes):
    return make_cdr(call_id, version=3, closed=True, disposition=Disposition.ANSWERED,
                    ring_ms=ring_s * 1000, talk_ms=talk_s * 1000,
                    answered_at=T0 + timedelta(seconds=ring_s),
                    ended_at=T0 + timedelta(seconds=ring_s + talk_s), **changes)


@pytest.fixture
def loaded(store):
    cdrs = [
        make_cdr("old", version=1),  # an older revision of c1, hidden by FINAL
        answered("c1", 5, 60, agent="101", mos=4.5, packet_loss=0.0, jitter_ms=1.0),
        answered("c2", 30, 10, agent="102", did="+74950000002", callee="support",
                 started_at=T0 + timedelta(hours=2), mos=2.6, packet_loss=0.1,
                 jitter_ms=12.0),
        make_cdr("c3", version=2, closed=True, disposition=Disposition.CANCELLED,
                 ring_ms=12_000, caller="+74959999999", ended_at=T0),
        make_cdr("c4"),  # ringing now
        make_cdr("x1", tenant="beta", mos=1.0),
    ]
    Loader(store, routes_for(Settings()), lambda dead: None).load(cdr_records(cdrs))
    return store


def test_find_and_count_calls_apply_every_filter(loaded):
    assert calls.count_calls(loaded, "acme", T0, END) == 5
    found = calls.find_calls(loaded, "acme", T0, END, disposition="answered")
    assert list(found["call_id"]) == ["c2", "c1"]  # newest first
    assert list(calls.find_calls(loaded, "acme", T0, END, did="+74950000002")["call_id"]) \
        == ["c2"]
    assert list(calls.find_calls(loaded, "acme", T0, END, group="support")["call_id"]) \
        == ["c2"]
    assert list(calls.find_calls(loaded, "acme", T0, END, number="9999")["call_id"]) == ["c3"]
    assert calls.count_calls(loaded, "acme", T0, END, agent="101", direction="inbound") == 1
    assert calls.find_call(loaded, "acme", "x1") is None  # another tenant's call


def test_unknown_filters_are_an_error(loaded):
    with pytest.raises(ValueError, match="unknown call filter"):
        calls.count_calls(loaded, "acme", T0, END, caller="+74959999999")


def test_wallboard_counts_live_calls(loaded):
    assert wallboard.live_summary(loaded, "acme", T0 - timedelta(hours=1)) == \
        {"ringing": 2, "talking": 0}  # c4 and the never-closed "old"


def test_kpis_by_did_use_the_librarys_definitions(loaded):
    frame = trends.kpis_by_dimension(loaded, "acme", T0, END, "did").set_index("value")
    assert frame.loc["+74957654321", ["offered", "answered", "abandoned"]].tolist() == [2, 1, 1]
    assert frame.loc["+74957654321", "answer_rate"] == pytest.approx(0.5)
    assert frame.loc["+74950000002", "service_level_offered"] == pytest.approx(0.0)


def test_volume_grid_has_every_cell(loaded):
    grid = trends.volume_by_weekday_hour(loaded, "acme", T0, END)
    assert len(grid) == 168 and grid["calls"].sum() == 5
    cell = grid[(grid["weekday"] == T0.isoweekday()) & (grid["hour"] == T0.hour)]
    assert cell["calls"].item() == 4


def test_quality_summary_distribution_and_worst(loaded):
    summary = quality.quality_summary(loaded, "acme", T0, END)
    assert summary["calls"] == 2 and summary["poor_calls"] == 1
    assert summary["mos_avg"] == pytest.approx((4.5 + 2.6) / 2, abs=1e-6)
    bins = quality.distribution(loaded, "acme", T0, END, "mos")
    assert bins.to_dict("records") == [{"bin_start": 2.5, "calls": 1},
                                       {"bin_start": 4.5, "calls": 1}]
    assert list(quality.worst_calls(loaded, "acme", T0, END)["call_id"]) == ["c2", "c1"]


def test_catalog_describes_every_column(loaded):
    columns = catalog.list_columns(loaded)
    assert set(columns["table"]) == set(catalog.TABLE_DESCRIPTIONS)
    ring = columns[(columns["table"] == "tawag.cdrs") & (columns["column"] == "ring_ms")]
    assert ring["description"].tolist()[0].startswith("Caller's wait")
    present = set(zip(columns["table"], columns["column"], strict=True))
    documented = {(t, c) for t, cols in catalog.COLUMN_DESCRIPTIONS.items() for c in cols}
    assert documented <= present  # no description of a column that is gone
    assert catalog.list_tenants(loaded) == ["acme", "beta"]
