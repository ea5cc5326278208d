"""Every page, run by AppTest against the known data of ``dash_known_data`` (acme and
globex), logged in as acme's alice unless said otherwise. Expected figures are worked out
here from the inserted values."""

from __future__ import annotations

import io

import dash_known_data as known
import pandas as pd
import pytest
from dash_app import APP, TIMEOUT_S, USERS, metrics, open_page, page_text
from streamlit.testing.v1 import AppTest

from dashboards import data

pytestmark = pytest.mark.usefixtures("app_env")


def pct(x: float) -> str:
    return f"{x * 100:.1f}%"


# --- log-in ------------------------------------------------------------------------------


def log_in(name: str, password: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT_S).run()
    at.text_input(key="login_name").input(name)
    at.text_input(key="login_password").input(password)
    return at.button[0].click().run()


def test_nothing_but_the_log_in_form_before_logging_in():
    at = AppTest.from_file(APP, default_timeout=TIMEOUT_S).run()
    assert [t.value for t in at.title] == ["Tawag"]
    assert not at.metric and not at.dataframe


def test_log_in_opens_the_wallboard_of_the_users_tenant():
    at = log_in("alice", "alice-pw")
    assert not at.exception
    assert at.title[0].value == "Wallboard"
    assert "Tenant `acme`" in at.caption[-1].value or any(
        "Tenant `acme`" in c.value for c in at.caption)


@pytest.mark.parametrize("name, password", [("alice", "wrong"), ("mallory", "alice-pw")])
def test_a_wrong_password_or_unknown_user_is_refused(name, password):
    at = log_in(name, password)
    assert [e.value for e in at.error] == ["Unknown user or wrong password."]
    assert data.USER_KEY not in at.session_state


# --- wallboard ---------------------------------------------------------------------------


def test_wallboard_shows_live_calls_agents_and_kpis_against_targets():
    at = open_page(None)  # the default page

    # queue KPIs over inbound calls only (the outbound busy a5 is not a queue call), the
    # same population as Trends; busy and no-answer calls are queued
    closed = [c for c in known.acme_calls() if c.closed and c.direction == "inbound"]
    queued = [c for c in closed
              if c.disposition in ("answered", "cancelled", "no_answer", "busy")]
    answered = [c for c in closed if c.disposition == "answered"]
    in_sl = [c for c in queued if c.disposition in ("answered", "cancelled")
             and c.ring_ms <= 20_000]
    abandoned = [c for c in queued if c.disposition == "cancelled"]
    wait = sum(c.ring_ms for c in queued) / len(queued) / 1000
    assert metrics(at) == {
        "Calls ringing": "1", "Calls talking": "1",
        "Agents available": "2", "Agents ringing": "0", "Agents on a call": "1",
        "Agents in wrap-up": "0", "Agents offline": "0",
        "Service level": pct(len(in_sl) / len(queued)),
        "Answer rate": pct(len(answered) / len(closed)),
        "Abandoned": pct(len(abandoned) / len(queued)),
        "Average wait": f"{wait:.1f} s"}
    sl = next(m for m in at.metric if m.label == "Service level")
    assert sl.delta == f"{(len(in_sl) / len(queued) - 0.8) * 100:+.1f} pts vs 80%"
    assert "Amazon Connect" in sl.help  # the KPI library's definition
    assert list(at.dataframe[0].value["caller"]) == ["+74951110006", "+74951110007"] or \
        set(at.dataframe[0].value["caller"]) == {"+74951110006", "+74951110007"}
    assert not at.error


# --- calls -------------------------------------------------------------------------------


def test_calls_lists_the_period_and_filters_by_disposition():
    at = open_page("calls")
    assert at.subheader[0].value == f"{len(known.acme_calls())} calls"
    table = at.dataframe[0].value
    newest_first = sorted(known.acme_calls(), key=lambda c: (c.started_at, c.call_id),
                          reverse=True)
    assert set(table["call_id"]) == {c.call_id for c in newest_first}
    assert list(table["started"]) == sorted(table["started"], reverse=True)

    at.selectbox(key="calls_disposition").select("answered").run()
    assert at.subheader[0].value == "2 calls"
    assert sorted(at.dataframe[0].value["call_id"]) == ["a1", "a2"]

    at.text_input(key="calls_number").input("110004").run()  # and a number: none answered
    assert at.subheader[0].value == "0 calls"


def test_calls_filters_by_did_and_group():
    at = open_page("calls")
    at.selectbox(key="calls_did").select(known.D2).run()
    assert list(at.dataframe[0].value["call_id"]) == ["a4"]
    at.selectbox(key="calls_did").select("(all)")
    at.selectbox(key="calls_group").select("sales").run()
    expected = {c.call_id for c in known.acme_calls()
                if c.callee == "sales" and c.direction == "inbound"}
    assert set(at.dataframe[0].value["call_id"]) == expected


def test_a_call_shows_its_legs_and_events_once_each():
    at = open_page("calls")
    at.text_input(key="calls_call_id").input("a1").run()
    assert at.subheader[1].value == "Call a1"
    assert metrics(at)["Disposition"] == "answered"
    assert metrics(at)["Talk"] == "1:00" and metrics(at)["Wait"] == "0:05"
    legs, events = at.dataframe[1].value, at.dataframe[2].value
    assert list(legs["leg"]) == ["a1", "a1-b"]
    assert list(legs["events"]) == [2, 2]
    # the ended event was delivered twice; it is listed once
    assert list(events["type"]) == ["call.offered", "call.ringing", "call.answered",
                                    "call.ended"]
    assert len(at.get("arrow_vega_lite_chart") or at.get("vega_lite_chart")) == 1


def test_a_call_a_routing_rule_decided_shows_the_decision():
    at = open_page("calls")
    at.text_input(key="calls_call_id").input("a2").run()
    decisions = at.dataframe[1].value
    assert decisions[["rule", "target", "default_target", "decision_us"]].to_dict(
        "records") == [{"rule": "whitelist", "target": "ext:102",
                        "default_target": "group:sales", "decision_us": 37}]


def test_routing_page_counts_the_rules_that_fired_for_the_tenant_only():
    at = open_page("routing")
    assert metrics(at)["Calls decided by a rule"] == "1"
    assert metrics(at)["Decision time (p99, µs)"] == "37"
    [table] = at.dataframe
    assert table.value.to_dict("records") == [
        {"rule": "whitelist", "target": "ext:102", "calls": 1, "p99_decision_us": 37}]
    assert open_page("routing", user="bob").info[0].value.startswith("No routing rule fired")


def test_routing_page_without_queue_decisions_says_nobody_waited():
    at = open_page("routing")
    [empty] = at.info
    assert empty.value.startswith("Nobody waited in a queue in the period")
    assert not at.metric[2:] and len(at.dataframe) == 1  # the rule hits, no queue figures


def test_a_calls_recording_plays_in_the_page():
    at = open_page("calls")
    at.text_input(key="calls_call_id").input("a1").run()
    [audio] = at.get("audio")
    # served from the file (a media URL), not passed on as a path the browser cannot open
    assert audio.proto.url.startswith("/mock/media/") and audio.proto.url.endswith(".wav")
    assert not [c for c in at.caption if "not available" in c.value]


def test_a_recording_missing_on_disk_is_said_not_played():
    at = open_page("calls")
    at.text_input(key="calls_call_id").input("a2").run()
    assert not at.get("audio")
    assert f"Recording {known.LOST_RECORDING} is not available on this server." in \
        [c.value for c in at.caption]


def test_the_csv_button_exports_what_the_filters_select():
    at = open_page("calls")
    at.selectbox(key="calls_disposition").select("answered").run()
    [button] = at.get("download_button")
    assert button.proto.label == "Download CSV" and not button.proto.disabled
    assert button.proto.deferred_file_id  # the CSV is made when clicked, with these filters


def export_script(start_iso: str, end_iso: str, disposition: str | None) -> None:
    """Runs as a Streamlit script: the page's own export call, its bytes shown as text."""
    from datetime import datetime

    import streamlit as st

    from dashboards import data
    csv = data.export_calls_csv(datetime.fromisoformat(start_iso),
                                datetime.fromisoformat(end_iso), disposition=disposition)
    st.text(csv.decode())


@pytest.mark.parametrize("user, disposition, expected", [
    ("alice", "answered", {"a1", "a2"}),
    ("alice", None, {c.call_id for c in known.acme_calls()}),
    ("bob", None, {c.call_id for c in known.globex_calls()}),
])
def test_csv_export_holds_every_selected_call_of_the_users_tenant(user, disposition, expected):
    start, end = data.day_bounds(known.MIDNIGHT.date())
    at = AppTest.from_function(export_script, args=(start.isoformat(), end.isoformat(),
                                                    disposition), default_timeout=TIMEOUT_S)
    at.session_state[data.USER_KEY] = USERS[user]
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    exported = pd.read_csv(io.StringIO(at.text[0].value), dtype=str)  # as a person reads it
    assert set(exported["call_id"]) == expected and len(exported) == len(expected)
    if user == "alice":
        a1 = exported.set_index("call_id").loc["a1"]
        assert (a1["caller"], a1["agent"], a1["talk_ms"]) == ("+74951110001", "101", "60000")
        assert a1["recording"] == known.RECORDING


def test_another_tenants_call_is_not_found():
    at = open_page("calls")
    at.text_input(key="calls_call_id").input("g1").run()
    assert [w.value for w in at.warning] == ["No call g1 for this tenant."]


# --- trends ------------------------------------------------------------------------------


def test_trends_compares_periods_and_splits_by_did_and_group():
    at = open_page("trends")
    shown = metrics(at)
    assert shown["Inbound calls closed"] == str(sum(c.closed and c.direction == "inbound"
                                                    for c in known.acme_calls()))
    # the wallboard's figures for the same calls (inbound only): 2 of 4 in both pages
    assert shown["Service level"] == pct(2 / 4) and shown["Answer rate"] == pct(2 / 4)
    by_did, by_group = at.dataframe[0].value, at.dataframe[1].value
    assert by_did.set_index("value")[["offered", "answered", "abandoned"]].to_dict("index") \
        == {known.D1: {"offered": 3, "answered": 2, "abandoned": 1},
            known.D2: {"offered": 1, "answered": 0, "abandoned": 0}}
    assert by_did.set_index("value").loc[known.D1, "answer_rate"] == pytest.approx(2 / 3)
    assert dict(zip(by_group["value"], by_group["offered"], strict=True)) == \
        {"sales": 3, "support": 1}
    assert len(at.get("arrow_vega_lite_chart") or at.get("vega_lite_chart")) >= 2
    assert not at.error


# --- quality -----------------------------------------------------------------------------


def test_quality_summarises_media_and_links_the_worst_calls():
    at = open_page("quality")
    measured = [c for c in known.acme_calls() if c.mos is not None]
    mos = [pd.Series([c.mos], dtype="float32").astype("float64")[0] for c in measured]
    assert metrics(at) == {
        "Calls measured": str(len(measured)),
        "Average MOS": f"{sum(mos) / len(mos):.2f}",
        "Poor calls (MOS < 3.6)": str(sum(m < 3.6 for m in mos)),
        "Average loss": f"{sum(c.packet_loss for c in measured) / len(measured) * 100:.2f}%",
        "Average jitter": f"{sum(c.jitter_ms for c in measured) / len(measured):.1f} ms"}
    worst = at.dataframe[0].value
    assert list(worst["record"]) == ["calls?call=a2", "calls?call=a1"]


# --- agents ------------------------------------------------------------------------------


def test_agents_table_sums_the_days_intervals():
    at = open_page("agents")
    table = at.dataframe[0].value.set_index("agent")
    assert list(table.index) == ["101", "102"]
    assert table.loc["101"].to_dict() == {
        "offered": 2, "answered": 1, "missed": 1, "talk time": "1:00", "AHT (talk + hold)": "1:00",
        "occupancy": pct(60 / (60 + 840 + 900)), "logged in": "30:00",
        "counted until (UTC)": "00:30:00"}  # the end of its last row (00:15 + 15 min)
    assert table.loc["102"].to_dict() == {
        "offered": 2, "answered": 1, "missed": 1, "talk time": "0:30", "AHT (talk + hold)": "0:30",
        "occupancy": pct(60 / 660), "logged in": "15:00", "counted until (UTC)": "00:15:00"}


# --- missed calls ----------------------------------------------------------------------------


def test_missed_calls_lists_open_items_and_callbacks_with_nights_and_weekends():
    at = open_page("missed_calls")
    subheaders = [s.value for s in at.subheader]
    assert subheaders == ["To call back: 2", "Called back: 1"]
    open_table = at.dataframe[0].value.set_index("client")
    after_midnight = "weekend" if known.MIDNIGHT.weekday() >= 5 else "night"
    assert open_table["when"].to_dict() == {"+74952220001": "weekend",
                                            "+74952220002": after_midnight}
    closed = at.dataframe[1].value
    assert closed[["client", "called back by", "time to callback"]].values.tolist() == \
        [["+74952220003", "101", "2:00:00"]]
    assert metrics(at) == {"Items opened": "3", "Called back": "1",
                           "Callback rate": pct(1 / 3), "Median time to callback": "2:00:00"}


# --- SQL -------------------------------------------------------------------------------------


def run_sql(sql: str, user: str = "alice", all_tenants: bool = False) -> AppTest:
    at = open_page("sql", user)
    at.text_area(key="sql_text").input(sql)
    if all_tenants:
        at.checkbox(key="sql_all_tenants").check()
    return at.button(key="sql_run").click().run()


def test_sql_box_answers_with_this_tenants_rows():
    at = run_sql("SELECT tenant, count() AS n FROM cdrs FINAL GROUP BY tenant")
    assert at.dataframe[-1].value.to_dict("records") == [{"tenant": "acme", "n": 7}]


def test_sql_box_refuses_writes_with_a_clear_message():
    at = run_sql("DROP TABLE cdrs")
    assert at.error[0].value.startswith(
        "Refused: tawag warehouse is read-only: DropQuery statements are not allowed")


def test_an_administrator_may_query_every_tenant():
    at = run_sql("SELECT tenant, count() AS n FROM cdrs FINAL GROUP BY tenant ORDER BY tenant",
                 user="root", all_tenants=True)
    assert at.dataframe[-1].value.to_dict("records") == [{"tenant": "acme", "n": 7},
                                                         {"tenant": "globex", "n": 4}]


def test_schema_browser_describes_columns():
    at = open_page("sql")
    cdrs = at.dataframe[0].value.set_index("column")
    assert cdrs.loc["ring_ms", "description"].startswith("Caller's wait")
    assert cdrs.loc["ring_ms", "type"] == "Int64"


# --- glossary ------------------------------------------------------------------------------


def test_glossary_lists_every_kpi_with_the_calls_it_counts_and_the_zone():
    from warehouse.queries import glossary

    at = open_page("glossary")
    table = at.dataframe[0].value
    assert list(table["KPI"]) == [k.title for k in glossary.GLOSSARY]
    counts = table.set_index("KPI")["calls counted"]
    assert counts["Service level"] == counts["ASA"] == counts["Abandon rate"] == \
        glossary.INBOUND
    assert "UTC" in at.caption[0].value  # acme has no zone in this warehouse: the default
    assert not at.error


# --- webhooks ----------------------------------------------------------------------------


def test_webhooks_page_shows_each_subscriptions_deliveries(app_env):
    from datetime import UTC, datetime

    import httpx

    from api.delivery_log import outbox_file
    from api.subscriptions import SubscriptionStore, subscriptions_file
    from api.webhooks import KIND, Webhooks
    from connectors.outbox import Outbox
    from core.settings import load

    settings = load()  # the app's own (TAWAG_DATA_DIR = app_env)
    subs = SubscriptionStore(subscriptions_file(settings))
    up = subs.add("acme", "http://crm.example/hook", ("*",), "tawag", None, "UTC")
    down = subs.add("acme", "http://down.example/hook", ("*",), "zadarma", None, "UTC")
    globex = subs.add("globex", "http://globex.example/hook", ("*",), "tawag", None, "UTC")
    event_ts = datetime(2026, 11, 26, 9, 0, tzinfo=UTC).timestamp()
    now = [event_ts]
    receiver = httpx.MockTransport(lambda request: httpx.Response(
        503 if request.url.host == "down.example" else 200, text="busy"))
    box = Outbox(outbox_file(settings))
    hooks = Webhooks(box, subs, http=httpx.Client(transport=receiver), max_age_s=3600,
                     clock=lambda: now[0])
    # e1 reaches its receiver 250 ms after the event, e2 120 ms after; the other one is down
    for sub, event_id, delay, tries in ((up, "e1", 0.25, 1), (up, "e2", 0.12, 1),
                                        (down, "e1", 0.3, 2), (globex, "g1", 0.1, 1)):
        box.enqueue(sub.id, KIND, event_id, {"body": "{}", "event_ts": event_ts})
        for _ in range(tries):
            now[0] = event_ts + delay
            hooks.attempt(sub, box.head(sub.id))
    box.close()

    at = open_page("webhooks")
    assert [s.value for s in at.subheader] == [up.url, down.url]
    assert [(m.label, m.value) for m in at.metric] == [
        ("Delivered", "2"), ("Pending", "0"), ("Given up", "0"), ("First try ok", pct(1)),
        ("Latency p50 / p99", "185 ms / 249 ms"),  # 120 + 0.99 * (250 - 120), interpolated
        ("Delivered", "0"), ("Pending", "1"), ("Given up", "0"), ("First try ok", pct(0)),
        ("Latency p50 / p99", "— / —")]
    first = at.dataframe[0].value
    assert first[["event", "state", "status", "attempts", "latency (ms)"]].values.tolist() \
        == [["e2", "done", 200, 1, 120.0], ["e1", "done", 200, 1, 250.0]]
    second = at.dataframe[1].value
    assert second[["event", "state", "status", "attempts"]].values.tolist() == \
        [["e1", "pending", 503, 2]]
    assert "HTTP 503: busy" in second["last error"].iloc[0]
    assert globex.url not in page_text(at)
    # and globex's user sees only globex's subscription
    assert [s.value for s in open_page("webhooks", user="bob").subheader] == [globex.url]
