"""The Today page, run by Streamlit's AppTest against a real embedded warehouse.

The warehouse is the real thing, only smaller: a migrated chdb store on a tmp path,
loaded with hand-made CDRs through the loader, served read-only by
``warehouse.http_server`` on a test port. The app finds it the way it does in
production, through ``TAWAG_*`` settings read from the environment.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from core.records import Cdr, Disposition, cdr_to_json
from core.settings import Settings
from dashboards.auth import User
from dashboards.formatting import cdr_table, format_rate, hourly_outcomes
from warehouse import schema
from warehouse.client import ChdbClient
from warehouse.http_server import make_server, serve_in_thread
from warehouse.loader import Loader, Record, routes_for
from warehouse.migrate import migrate
from warehouse.queries import cdr as q
from warehouse.readers import ReaderPool
from warehouse.users import Authenticator, service_password

APP = Path(__file__).resolve().parents[2] / "dashboards" / "streamlit_app.py"
UP_PORT = 31123
DOWN_PORT = 31124  # nothing listens here
TENANT = "acme"
MISSED = {Disposition.BUSY, Disposition.NO_ANSWER, Disposition.CANCELLED,
          Disposition.FAILED}
TIMEOUT_S = 60  # the first chdb query of a process is slow


# --- known data ------------------------------------------------------------------------------


def midnight_utc() -> datetime:
    return datetime.combine(datetime.now(UTC).date(), time.min, tzinfo=UTC)


def make_call(call_id: str, started_at: datetime, disposition: Disposition, *,
              closed: bool = True, agent: str | None = None, sip_code: int | None = None,
              ring_s: float = 0, talk_s: float = 0, hangup_by: str | None = None,
              version: int = 3) -> Cdr:
    """A CDR revision; only what the page shows is set, the rest is plausible."""
    answered_at = started_at + timedelta(seconds=ring_s) if talk_s else None
    ended_at = started_at + timedelta(seconds=ring_s + talk_s) if closed else None
    return Cdr(tenant=TENANT, call_id=call_id, version=version, direction="inbound",
               caller=f"+7495{call_id[-1]}000000", callee="101", did="+74957654321",
               agent=agent, started_at=started_at, answered_at=answered_at,
               ended_at=ended_at, ring_ms=int(ring_s * 1000), talk_ms=int(talk_s * 1000),
               disposition=disposition, sip_code=sip_code, reason=None,
               hangup_by=hangup_by, closed=closed, recording=None, mos=None,
               packet_loss=None, jitter_ms=None, event_count=version,
               last_event_ts=ended_at or started_at)


def todays_calls() -> list[Cdr]:
    """Six calls today in three UTC hours, the latest revision of each."""
    t0 = midnight_utc()
    hour = timedelta(hours=1)
    return [
        make_call("c1", t0 + 1 * hour, Disposition.ANSWERED, agent="101", sip_code=200,
                  ring_s=4.2, talk_s=61.5, hangup_by="caller"),
        make_call("c2", t0 + 1 * hour + timedelta(minutes=7), Disposition.BUSY,
                  sip_code=486, ring_s=0.3, hangup_by="callee"),
        make_call("c3", t0 + 2 * hour, Disposition.NO_ANSWER, sip_code=408, ring_s=20),
        make_call("c4", t0 + 2 * hour + timedelta(minutes=30), Disposition.CANCELLED,
                  sip_code=487, ring_s=9.9, hangup_by="caller"),
        make_call("c5", t0 + 3 * hour, Disposition.ANSWERED, agent="102", sip_code=200,
                  ring_s=2, talk_s=30, hangup_by="callee"),
        make_call("c6", t0 + 3 * hour + timedelta(minutes=1), Disposition.IN_PROGRESS,
                  closed=False, ring_s=1),
    ]


def yesterdays_call() -> Cdr:
    """Listed among the latest calls, but not counted today."""
    return make_call("y7", midnight_utc() - timedelta(hours=1), Disposition.ANSWERED,
                     agent="101", sip_code=200, ring_s=3, talk_s=10, hangup_by="caller")


def stale_revisions(calls: list[Cdr]) -> list[Cdr]:
    """An older in-progress revision of each closed call: FINAL must hide them."""
    return [replace(c, version=1, disposition=Disposition.IN_PROGRESS, closed=False,
                    ended_at=None, sip_code=None, hangup_by=None)
            for c in calls if c.closed]


def expected_kpis(calls: list[Cdr]) -> dict[str, str]:
    """The tiles' values, worked out here from the inserted calls (not by the warehouse)."""
    answered = sum(c.closed and c.disposition is Disposition.ANSWERED for c in calls)
    missed = sum(c.closed and c.disposition in MISSED for c in calls)
    return {"Calls today": str(len(calls)), "Answered": str(answered),
            "Missed": str(missed), "Answer rate": f"{100 * answered / (answered + missed):.1f}%"}


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def fresh_caches() -> Iterator[None]:
    """Streamlit's caches are per process: settings and results must not leak across tests."""
    st.cache_data.clear()
    st.cache_resource.clear()
    yield
    st.cache_data.clear()
    st.cache_resource.clear()


def point_settings_at(monkeypatch: pytest.MonkeyPatch, port: int) -> None:
    monkeypatch.setenv("TAWAG_WAREHOUSE_MODE", "embedded")
    monkeypatch.setenv("TAWAG_WAREHOUSE_HOST", "127.0.0.1")
    monkeypatch.setenv("TAWAG_WAREHOUSE_HTTP_PORT", str(port))
    monkeypatch.setenv("TAWAG_TENANT", TENANT)


def load_cdrs(store: ChdbClient, cdrs: list[Cdr]) -> None:
    """Through the real loader, as the Kafka consumer would (one partition, in order)."""
    settings = Settings()
    records = [Record(settings.topic_cdrs, 0, offset, cdr_to_json(c))
               for offset, c in enumerate(cdrs)]
    Loader(store, routes_for(settings), lambda dead: None).load(records)


@pytest.fixture
def serve_warehouse(tmp_path, monkeypatch):
    """Start a warehouse holding ``cdrs`` on UP_PORT; yields the owner's chdb session."""
    started = []

    def start(cdrs: list[Cdr]) -> ChdbClient:
        store = ChdbClient(tmp_path / "chdb")
        migrate(store)
        load_cdrs(store, cdrs)
        reader = ReaderPool(tmp_path / "chdb", size=2, database=schema.DATABASE)
        monkeypatch.setenv("TAWAG_DATA_DIR", str(tmp_path))
        server = make_server("127.0.0.1", UP_PORT, reader, Authenticator(
            tmp_path / "no-users.toml", service_password(tmp_path)))
        started.append((store, reader, server, serve_in_thread(server)))
        point_settings_at(monkeypatch, UP_PORT)
        return store

    yield start
    for store, reader, server, thread in started:
        server.shutdown()
        server.server_close()
        thread.join()
        reader.close()
        store.close()


def run_app() -> AppTest:
    """The Today page, logged in as an acme user (the router's default page is the wallboard)."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT_S)
    at.session_state["auth_user"] = User("alice", TENANT, "tenant-user")
    at.switch_page("app_pages/today.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


# --- the page ----------------------------------------------------------------------------------


def test_today_shows_the_kpis_chart_and_latest_calls(serve_warehouse):
    calls = todays_calls()
    serve_warehouse([*stale_revisions(calls), *calls, yesterdays_call()])

    at = run_app()

    assert at.title[0].value == "Today"
    assert not at.markdown  # nothing printed by Streamlit's magic
    assert metrics(at) == expected_kpis(calls)
    assert not at.error
    assert len(at.get("vega_lite_chart")) == 1
    table = at.dataframe[0].value
    assert list(table["callee"]) == ["101"] * 7
    newest_first = sorted([*calls, yesterdays_call()], key=lambda c: c.started_at,
                          reverse=True)
    assert list(table["caller"]) == [c.caller for c in newest_first]
    assert list(table["disposition"]) == [c.disposition.value for c in newest_first]
    assert list(table["ring time s"]) == [c.ring_ms / 1000 for c in newest_first]


def test_answer_rate_help_names_its_definition(serve_warehouse):
    serve_warehouse(todays_calls())
    rate = next(m for m in run_app().metric if m.label == "Answer rate")
    assert "closed calls" in rate.help and "in progress" in rate.help


def test_no_calls_yet_is_said_not_drawn(serve_warehouse):
    serve_warehouse([])

    at = run_app()

    assert metrics(at) == {"Calls today": "0", "Answered": "0", "Missed": "0",
                           "Answer rate": "—"}
    assert [i.value for i in at.info][0].startswith("No calls yet today")
    assert "No calls recorded yet." in [i.value for i in at.info]
    assert not at.get("vega_lite_chart")
    assert not at.error


def test_warehouse_down_shows_an_error_not_a_traceback(monkeypatch):
    point_settings_at(monkeypatch, DOWN_PORT)

    at = run_app()

    assert len(at.error) == 1
    message = at.error[0].value
    assert f"warehouse not reachable at http://127.0.0.1:{DOWN_PORT}/" in message
    assert "`tawag status`" in message
    assert not at.metric


# --- formatting on real query results ------------------------------------------------------


def test_hourly_outcomes_labels_utc_hours_and_splits_outcomes(serve_warehouse):
    store = serve_warehouse(todays_calls())
    start = midnight_utc()

    chart = hourly_outcomes(q.calls_by_hour(store, TENANT, start, start + timedelta(days=1)))

    assert len(chart) == 24 and chart.index[0] == "00:00" and chart.index[-1] == "23:00"
    assert chart.loc["01:00"].to_dict() == {"answered": 1, "missed": 1, "in progress": 0}
    assert chart.loc["02:00"].to_dict() == {"answered": 0, "missed": 2, "in progress": 0}
    assert chart.loc["03:00"].to_dict() == {"answered": 1, "missed": 0, "in progress": 1}
    assert chart.drop(index=["01:00", "02:00", "03:00"]).sum().sum() == 0


def test_cdr_table_shows_seconds_and_keeps_missing_values(serve_warehouse):
    store = serve_warehouse(todays_calls())

    table = cdr_table(q.latest_cdrs(store, TENANT))

    assert list(table.columns) == ["started", "caller", "callee", "agent", "disposition",
                                   "SIP code", "ring time s", "talk time s", "hangup by"]
    c1 = table.set_index("caller").loc["+74951000000"]
    assert (c1["ring time s"], c1["talk time s"], c1["SIP code"]) == (4.2, 61.5, 200)
    in_progress = table.set_index("caller").loc["+74956000000"]
    assert pd.isna(in_progress["SIP code"]) and pd.isna(in_progress["agent"])


@pytest.mark.parametrize("rate, shown", [(None, "—"), (0.0, "0.0%"), (2 / 3, "66.7%"),
                                         (1.0, "100.0%")])
def test_format_rate(rate, shown):
    assert format_rate(rate) == shown


# --- the tenant's time zone -------------------------------------------------------------------


def test_today_is_the_tenants_local_day_and_the_page_says_which_zone(serve_warehouse):
    """A Manila tenant (UTC+8): 'today' starts at Manila's midnight, 16:00 UTC the day
    before. A call 30 min after it counts; one 30 min before it is yesterday's."""
    manila = ZoneInfo("Asia/Manila")
    local_midnight = datetime.combine(datetime.now(manila).date(), time.min, tzinfo=manila)
    after = make_call("c1", (local_midnight + timedelta(minutes=30)).astimezone(UTC),
                      Disposition.ANSWERED, agent="101", ring_s=3, talk_s=30)
    before = make_call("c2", (local_midnight - timedelta(minutes=30)).astimezone(UTC),
                       Disposition.ANSWERED, agent="101", ring_s=3, talk_s=30)
    store = serve_warehouse([after, before])
    store.insert_rows(schema.TENANTS, [{"tenant": TENANT, "time_zone": "Asia/Manila"}])

    at = run_app()

    assert metrics(at)["Calls today"] == "1"
    assert "since 00:00 Asia/Manila" in at.caption[0].value
    assert "times in Asia/Manila" in at.caption[0].value
    assert at.subheader[0].value == f"Calls by hour, {local_midnight.date()} (Asia/Manila)"
    chart = hourly_outcomes(q.calls_by_hour(store, TENANT, local_midnight.astimezone(UTC),
                                            (local_midnight + timedelta(days=1))
                                            .astimezone(UTC), tz="Asia/Manila"),
                            "Asia/Manila")
    assert chart.index.name == "hour (Asia/Manila)"
    assert chart.loc["00:00", "answered"] == 1 and chart["answered"].sum() == 1
