"""Tenant time in the warehouse: the tenants table loaded from provisioning, and the
queries' local days and hours for a Moscow (UTC+3) and a Manila (UTC+8) tenant across
their midnights and for Berlin across the spring DST change (Sunday 29 March 2026).

Every expected figure is worked out here from the zones' offsets.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pandas as pd
import pytest
from conftest import cdr_records, make_cdr

from core.records import Disposition
from core.settings import Settings
from core.timezones import local_day_bounds, zone
from warehouse import schema
from warehouse.loader import Loader, routes_for
from warehouse.queries import cdr as cdr_queries
from warehouse.queries import kpi, tenants, trends
from warehouse.tenants import sync_tenants

PROVISIONING = """\
[tenant.moscow]
domain = "msk.test"
trunk = "127.0.0.1:5090"
time_zone = "Europe/Moscow"

[tenant.manila]
domain = "mnl.test"
time_zone = "Asia/Manila"

[tenant.berlin]
domain = "ber.test"
time_zone = "Europe/Berlin"

[tenant.plain]
domain = "plain.test"
"""


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def answered(call_id: str, tenant: str, start: datetime, talk_s: int = 60, **kw):
    return make_cdr(call_id, tenant=tenant, started_at=start, answered_at=start + timedelta(
        seconds=5), ended_at=start + timedelta(seconds=5 + talk_s), ring_ms=5000,
        talk_ms=talk_s * 1000, disposition=Disposition.ANSWERED, closed=True, agent="101",
        last_event_ts=start + timedelta(seconds=5 + talk_s), **kw)


CDRS = [
    # Moscow: 23:30 on Thursday 26 Nov and 00:30 on Friday 27 Nov, local
    answered("m1", "moscow", utc(2026, 11, 26, 20, 30)),
    answered("m2", "moscow", utc(2026, 11, 26, 21, 30)),
    # Manila: 23:30 on Friday 27 Nov and 00:30 on Saturday 28 Nov, local
    answered("p1", "manila", utc(2026, 11, 27, 15, 30)),
    answered("p2", "manila", utc(2026, 11, 27, 16, 30)),
    # Berlin, DST day: 01:30 CET on 29 March; a talk 23:50 CEST -> 00:10 CEST 30 March
    answered("b1", "berlin", utc(2026, 3, 29, 0, 30)),
    answered("b2", "berlin", utc(2026, 3, 29, 21, 49, 55), talk_s=1200),
]


@pytest.fixture
def loaded(store, tmp_path):
    path = tmp_path / "provisioning.toml"
    path.write_text(PROVISIONING)
    sync_tenants(store, Settings(provisioning_file=path, tenant="acme"))
    Loader(store, routes_for(Settings()), dead_letters=lambda d: None).load(cdr_records(CDRS))
    return store


def test_the_tenants_table_holds_each_provisioned_zone(loaded):
    assert tenants.time_zone(loaded, "moscow") == "Europe/Moscow"
    assert tenants.time_zone(loaded, "manila") == "Asia/Manila"
    assert tenants.time_zone(loaded, "plain") == "UTC"  # none named: the settings' default
    assert tenants.time_zone(loaded, "acme") == "UTC"  # the settings' own tenant
    assert tenants.time_zone(loaded, "nobody") == "UTC"
    trunks = {r["tenant"]: r["trunk"] for r in loaded.query(
        f"SELECT tenant, trunk FROM {schema.TENANTS} FINAL ORDER BY tenant")}
    assert trunks["moscow"] == "127.0.0.1:5090" and trunks["manila"] is None


def test_a_new_load_of_provisioning_wins(loaded, tmp_path):
    path = tmp_path / "changed.toml"
    path.write_text(PROVISIONING.replace('"Asia/Manila"', '"Asia/Tokyo"'))
    sync_tenants(loaded, Settings(provisioning_file=path, tenant="acme"))
    assert tenants.time_zone(loaded, "manila") == "Asia/Tokyo"


def _days(client, tenant: str, first: date, last: date, tz: str) -> pd.DataFrame:
    start, end = local_day_bounds(first, last, zone(tz))
    return kpi.kpis_by_interval(client, tenant, start, end, "1 day", tz=tz)


def test_moscow_days_split_at_moscow_midnight(loaded):
    df = _days(loaded, "moscow", date(2026, 11, 26), date(2026, 11, 27), "Europe/Moscow")
    starts = [ts.isoformat() for ts in df["interval_start"]]
    assert starts == ["2026-11-26T00:00:00+03:00", "2026-11-27T00:00:00+03:00"]
    assert list(df["total"]) == [1, 1]
    # in UTC both calls are on 26 November
    utc_days = _days(loaded, "moscow", date(2026, 11, 26), date(2026, 11, 26), "UTC")
    assert list(utc_days["total"]) == [2]


def test_manila_hours_and_weekdays_are_local(loaded):
    start, end = local_day_bounds(date(2026, 11, 27), date(2026, 11, 28), zone("Asia/Manila"))
    hours = cdr_queries.calls_by_hour(loaded, "manila", start, end, tz="Asia/Manila")
    assert len(hours) == 48
    busy = hours[hours["total"] > 0]
    assert [ts.strftime("%a %H:%M") for ts in busy["hour"]] == ["Fri 23:00", "Sat 00:00"]
    grid = trends.volume_by_weekday_hour(loaded, "manila", start, end, tz="Asia/Manila")
    cells = grid[grid["calls"] > 0][["weekday", "hour"]].values.tolist()
    assert cells == [[5, 23], [6, 0]]  # Friday 23 h, Saturday 0 h


def test_berlin_spring_day_has_23_hourly_buckets(loaded):
    first = date(2026, 3, 29)
    start, end = local_day_bounds(first, first, zone("Europe/Berlin"))
    assert end - start == timedelta(hours=23)
    df = kpi.kpis_by_interval(loaded, "berlin", start, end, "1 hour", tz="Europe/Berlin")
    labels = [ts.strftime("%H") for ts in df["interval_start"]]
    assert len(df) == 23 and "02" not in labels  # 02:00-03:00 does not exist that night
    # b1 at 01:30 CET and b2 at 23:49:55 CEST: both on 29 March, local
    assert df[df["total"] > 0]["interval_start"].dt.strftime("%H").tolist() == ["01", "23"]
    hours = cdr_queries.calls_by_hour(loaded, "berlin", start, end, tz="Europe/Berlin")
    assert len(hours) == 23


def test_berlin_talk_across_local_midnight_is_split_at_it(loaded):
    # b2 talks 21:50:00-22:10:00 UTC = 23:50-00:10 CEST: 10 min on each local day
    df = kpi.talk_time_by_interval(loaded, "berlin",
                                   *local_day_bounds(date(2026, 3, 29), date(2026, 3, 30),
                                                     zone("Europe/Berlin")),
                                   "1 day", tz="Europe/Berlin")
    assert [ts.isoformat() for ts in df["interval_start"]] == [
        "2026-03-29T00:00:00+01:00", "2026-03-30T00:00:00+02:00"]
    assert list(df["talk_time_ms"]) == [60_000 + 600_000, 600_000]


def test_the_warehouse_start_loads_provisioning_into_the_tenants_table(store, tmp_path):
    from warehouse.service import _prepare

    path = tmp_path / "provisioning.toml"
    path.write_text(PROVISIONING)
    _prepare(Settings(provisioning_file=path, data_dir=tmp_path), store)
    assert tenants.time_zone(store, "manila") == "Asia/Manila"
    assert tenants.time_zone(store, "berlin") == "Europe/Berlin"
