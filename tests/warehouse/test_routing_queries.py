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
