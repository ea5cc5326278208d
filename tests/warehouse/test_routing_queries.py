"""Routing decisions in the warehouse: one call's, and the hit counts of a window.

Loaded as the loader loads ``tawag.call-events`` (the audit log), with one decision
delivered twice, another tenant's decision and one outside the window:

    event  call  rule       target            at      decision_us
    d1     c1    whitelist  ext:103           09:05   40
    d1     c1    (the same message again, Kafka's redelivery)
    d2     c2    blacklist  refuse:blacklist  09:10   25
    d3     c3    whitelist  ext:103           09:20   90
    d4     c4    whitelist  ext:103           12:00   10   (end of the window: out)
    g1     g1    blacklist  refuse:blacklist  09:30   30   (globex)
"""

from datetime import timedelta

import pandas as pd
import pytest
from conftest import SETTINGS, T0, event_records, make_event

from core.events import EventType
from warehouse.loader import Loader, routes_for
from warehouse.queries import routing as q

START, END = T0, T0 + timedelta(hours=3)


def decision(event_id, call_id, minutes, rule, target, us, tenant="acme"):
    return make_event(event_id, type=EventType.ROUTE_DECIDED, call_id=call_id, leg_id=call_id,
                      ts=T0 + timedelta(minutes=minutes), tenant=tenant,
                      caller="+79035550101", callee="+74951230001", did="+74951230001",
                      extra={"rule": rule, "target": target,
                             "default_target": "group:sales", "decision_us": us})


@pytest.fixture
def decisions(store):
    d1 = decision("d1", "c1", 5, "whitelist", "ext:103", 40)
    events = [d1, d1, decision("d2", "c2", 10, "blacklist", "refuse:blacklist", 25),
              decision("d3", "c3", 20, "whitelist", "ext:103", 90),
              decision("d4", "c4", 180, "whitelist", "ext:103", 10),
              decision("g1", "g1", 30, "blacklist", "refuse:blacklist", 30, tenant="globex"),
              make_event("o1", call_id="c1")]  # the call's offer: not a decision
    Loader(store, routes_for(SETTINGS), dead_letters=lambda d: None).load(event_records(events))
    return store


def test_why_a_call_went_where_it_went_is_one_query(decisions):
    df = q.call_decisions(decisions, "acme", "c1")
    assert list(df.columns) == list(q.DECISION_COLUMNS)
    assert df.to_dict("records") == [{"ts": T0 + timedelta(minutes=5), "rule": "whitelist",
                                      "target": "ext:103", "default_target": "group:sales",
                                      "decision_us": 40}]
    assert q.call_decisions(decisions, "acme", "g1").empty  # another tenant's call


def test_rule_counts_count_each_call_once_within_the_window_and_tenant(decisions):
    df = q.rule_counts(decisions, "acme", START, END)
    assert df.to_dict("records") == [
        {"rule": "whitelist", "target": "ext:103", "calls": 2, "p99_decision_us": 90},
        {"rule": "blacklist", "target": "refuse:blacklist", "calls": 1, "p99_decision_us": 25},
    ]



def test_decided_calls_count_a_call_once_however_many_decisions_it_took(store):
    # c1 queued then offered (two decisions, the second delivered twice), c2 one decision
    offer = decision("q2", "c1", 6, "queue_offer", "ext:101", 70)
    events = [decision("q1", "c1", 5, "queue_wait", "group:sales", 40), offer, offer,
              decision("w1", "c2", 10, "whitelist", "ext:103", 90),
              decision("g1", "g1", 30, "blacklist", "refuse:blacklist", 30, tenant="globex")]
    Loader(store, routes_for(SETTINGS), dead_letters=lambda d: None).load(event_records(events))
    assert q.decided_calls(store, "acme", START, END).to_dict("records") == [
        {"calls": 2, "decisions": 3, "p99_decision_us": 90}]
    assert q.decided_calls(store, "acme", END, END + timedelta(hours=1)).to_dict(
        "records") == [{"calls": 0, "decisions": 0, "p99_decision_us": 0}]


# --- the waiting queue ------------------------------------------------------------------------
#
#   call  queue    rule            at        position  wait_ms  inputs
#   A     support  queue_wait      09:01:00  1
#   A     support  queue_offer     09:01:20  1         20000    (delivered twice)
#   B     support  queue_wait      09:02:00  2                  (delivered twice)
#   B     support  queue_abandon   09:02:30  2         30000
#   C     support  queue_wait      09:03:00  3
#   C     support  queue_overflow  09:04:00  3         60000    reason=timeout
#   D     support  queue_overflow  09:03:30  4         0        reason=full (never waited)
#   F     billing  queue_wait      09:10:00  1
#   F     billing  queue_overflow  09:10:10  1         10000    reason=no_agent
#   E     support  queue_wait      09:40:00  1
#   E     support  queue_offer     09:40:05  1         5000
#   Z     support  queue_wait      12:00:00  7                  (the window's end: out)
#   G     gx-q     queue_wait      09:05:00  9                  (globex)
#   G     gx-q     queue_overflow  09:06:00  9         99000    reason=timeout (globex)

def queue_step(event_id, call_id, at, rule, *, queue="support", position=None, wait_ms=None,
               inputs=None, tenant="acme"):
    extra = {"rule": rule, "target": f"group:{queue}", "default_target": f"group:{queue}",
             "decision_us": 50, "position": position, "wait_ms": wait_ms, "inputs": inputs}
    return make_event(event_id, type=EventType.ROUTE_DECIDED, call_id=call_id, leg_id=call_id,
                      ts=T0 + at, tenant=tenant, caller="+79035550101",
                      callee="+74951230200", did="+74951230200",
                      extra={k: v for k, v in extra.items() if v is not None})


def s(seconds):
    return timedelta(seconds=seconds)


@pytest.fixture
def queue_steps(store):
    a_offer = queue_step("a2", "A", s(80), "queue_offer", position=1, wait_ms=20_000,
                         inputs="idle_since=1764147600")
    b_wait = queue_step("b1", "B", s(120), "queue_wait", position=2)
    events = [
        queue_step("a1", "A", s(60), "queue_wait", position=1), a_offer, a_offer,
        b_wait, b_wait,
        queue_step("b2", "B", s(150), "queue_abandon", position=2, wait_ms=30_000,
                   inputs="reason=caller_hung_up"),
        queue_step("c1", "C", s(180), "queue_wait", position=3),
        queue_step("c2", "C", s(240), "queue_overflow", position=3, wait_ms=60_000,
                   inputs="reason=timeout"),
        queue_step("d1", "D", s(210), "queue_overflow", position=4, wait_ms=0,
                   inputs="reason=full"),
        queue_step("f1", "F", s(600), "queue_wait", queue="billing", position=1),
        queue_step("f2", "F", s(610), "queue_overflow", queue="billing", position=1,
                   wait_ms=10_000, inputs="reason=no_agent"),
        queue_step("e1", "E", s(2400), "queue_wait", position=1),
        queue_step("e2", "E", s(2405), "queue_offer", position=1, wait_ms=5_000),
        queue_step("z1", "Z", s(3 * 3600), "queue_wait", position=7),
        queue_step("g1", "G", s(300), "queue_wait", queue="gx-q", position=9, tenant="globex"),
        queue_step("g2", "G", s(360), "queue_overflow", queue="gx-q", position=9,
                   wait_ms=99_000, inputs="reason=timeout", tenant="globex"),
        decision("w1", "W", 30, "whitelist", "ext:103", 40),  # not a queue decision
    ]
    Loader(store, routes_for(SETTINGS), dead_letters=lambda d: None).load(event_records(events))
    return store


ZERO = {"queued": 0, "offered": 0, "overflowed": 0, "overflowed_timeout": 0,
        "overflowed_full": 0, "overflowed_no_agent": 0, "overflowed_expired": 0,
        "abandoned": 0, "wait_p50_s": None, "wait_p90_s": None, "wait_max_s": None,
        "max_queue_length": 0}


def figures(**changes):
    return ZERO | changes


def records(df):
    return [{k: (None if pd.isna(v) else v) for k, v in row.items()}
            for row in df.to_dict("records")]


def test_queue_summary_counts_each_step_once_for_the_tenant_and_window(queue_steps):
    df = q.queue_summary(queue_steps, "acme", START, END)
    assert list(df.columns) == list(q.QUEUE_COLUMNS)
    # support's waits of callers that left: 20, 30, 60, 5 s (D's full overflow never
    # waited); inclusive quantiles: p50 = (20 + 30) / 2, p90 = 30 + 0.7 * (60 - 30)
    assert records(df) == [
        {"queue": "support"} | figures(
            queued=4, offered=2, overflowed=2, overflowed_timeout=1, overflowed_full=1,
            abandoned=1, wait_p50_s=25.0, wait_p90_s=51.0, wait_max_s=60.0,
            max_queue_length=3),
        {"queue": "billing"} | figures(
            queued=1, overflowed=1, overflowed_no_agent=1, wait_p50_s=10.0,
            wait_p90_s=10.0, wait_max_s=10.0, max_queue_length=1)]


def test_another_tenants_queue_never_shows(queue_steps):
    globex = q.queue_summary(queue_steps, "globex", START, END)
    assert records(globex) == [{"queue": "gx-q"} | figures(
        queued=1, overflowed=1, overflowed_timeout=1, wait_p50_s=99.0, wait_p90_s=99.0,
        wait_max_s=99.0, max_queue_length=9)]
    acme = q.queue_intervals(queue_steps, "acme", START, END, "1 hour")
    assert "gx-q" not in set(acme["queue"]) and acme["max_queue_length"].max() == 3
    assert q.queue_summary(queue_steps, "initech", START, END).empty


def test_queue_intervals_are_local_hours_of_the_tenants_zone(queue_steps):
    """In Asia/Kolkata (UTC+5:30) an hour starts at :30 UTC: E (09:40 UTC) is in the hour
    after A-D and F (09:01-09:10 UTC), and the window 09:00-12:00 UTC spans four hours."""
    df = q.queue_intervals(queue_steps, "acme", START, END, "1 hour", tz="Asia/Kolkata")
    assert list(df.columns) == ["interval_start", *q.QUEUE_COLUMNS]
    local = [t.strftime("%H:%M") for t in
             pd.to_datetime(df["interval_start"], utc=True).dt.tz_convert("Asia/Kolkata")]
    assert local == ["14:00", "14:00", "15:00", "15:00", "16:00", "16:00", "17:00", "17:00"]
    rows = records(df.drop(columns="interval_start"))
    assert rows[:4] == [
        {"queue": "billing"} | figures(queued=1, overflowed=1, overflowed_no_agent=1,
                                       wait_p50_s=10.0, wait_p90_s=10.0, wait_max_s=10.0,
                                       max_queue_length=1),
        # waits 20, 30, 60 s: p90 = 30 + 0.8 * (60 - 30)
        {"queue": "support"} | figures(queued=3, offered=1, overflowed=2,
                                       overflowed_timeout=1, overflowed_full=1, abandoned=1,
                                       wait_p50_s=30.0, wait_p90_s=54.0, wait_max_s=60.0,
                                       max_queue_length=3),
        {"queue": "billing"} | ZERO,
        {"queue": "support"} | figures(queued=1, offered=1, wait_p50_s=5.0, wait_p90_s=5.0,
                                       wait_max_s=5.0, max_queue_length=1)]
    assert rows[4:] == [{"queue": "billing"} | ZERO, {"queue": "support"} | ZERO] * 2


def test_a_window_without_queue_decisions_has_no_rows(queue_steps):
    later = (END + timedelta(hours=1), END + timedelta(hours=5))
    assert q.queue_intervals(queue_steps, "acme", *later, "1 hour").empty
    with pytest.raises(ValueError, match="interval"):
        q.queue_intervals(queue_steps, "acme", START, END, "5 minute")


def test_an_offer_the_member_did_not_answer_is_no_answer_of_the_queue(store):
    # R: offered twice, back in the queue twice, overflowed at 60 s; S: offered, back,
    # offered again and taken (20 s). Waits of those who left: 60 and 20 s
    events = [
        queue_step("r1", "R", s(1200), "queue_wait", position=1),
        queue_step("r2", "R", s(1210), "queue_offer", position=1, wait_ms=10_000),
        queue_step("r3", "R", s(1212), "queue_return", position=1, wait_ms=12_000,
                   inputs="reason=no_answer"),
        queue_step("r4", "R", s(1230), "queue_offer", position=1, wait_ms=30_000),
        queue_step("r5", "R", s(1232), "queue_return", position=1, wait_ms=32_000,
                   inputs="reason=busy"),
        queue_step("r6", "R", s(1260), "queue_overflow", position=1, wait_ms=60_000,
                   inputs="reason=timeout"),
        queue_step("s1", "S", s(1500), "queue_wait", position=1),
        queue_step("s2", "S", s(1505), "queue_offer", position=1, wait_ms=5_000),
        queue_step("s3", "S", s(1507), "queue_return", position=1, wait_ms=7_000,
                   inputs="reason=no_answer"),
        queue_step("s4", "S", s(1520), "queue_offer", position=1, wait_ms=20_000),
    ]
    Loader(store, routes_for(SETTINGS), dead_letters=lambda d: None).load(event_records(events))
    # p50 = (20 + 60) / 2, p90 = 20 + 0.9 * (60 - 20)
    assert records(q.queue_summary(store, "acme", START, END)) == [
        {"queue": "support"} | figures(queued=2, offered=1, overflowed=1,
                                       overflowed_timeout=1, wait_p50_s=40.0,
                                       wait_p90_s=56.0, wait_max_s=60.0, max_queue_length=1)]
