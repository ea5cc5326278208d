"""Agent tables on hand-made revisions: loader routes, FINAL, retractions, named queries.

Per-agent 15-minute rows (acme; window [09:00, 10:00) on 2026-11-26; ms unless said):

    agent  interval  version  logged_in  avail    ring    talk    off ans mis hdl hdl_talk
    101    09:00     3        900000     630000   30000   240000  2   1   1   1   240000
    101    09:15     5        900000     620000   0       280000  0   0   0   0   0
    101    09:30     6 (v4 superseded: talk 100000)  600000  280000  0  320000  0 0 0 1 600000
    101    10:00     7        ... outside the window
    101    hour 09:00 ... another interval kind: not summed into the 15-minute table
    102    09:15     2        900000     900000   0       0       1   0   1   0   0
    globex 101 09:00 ... another tenant

    101: talk 840000, available 1530000, logged in 2400000, offered 2, answered 1,
         missed 1, handled 2 -> AHT talk-only (240000 + 600000) / 2 = 420000,
         occupancy 840000 / (840000 + 1530000) = 84/237, answer ratio 1/2
    102: occupancy 0 / 900000 = 0.0, AHT None (nothing handled), answer ratio 0

State segments of 2026-11-26 (window [00:00, 24:00)):

    agent  state      since        until        revisions               ms in window
    101    available  25th 10:00   25th 20:00   v1                      (before: not listed)
    101    offline    25th 20:00   08:00        v2                      8 h = 28800000
    101    available  08:00        09:00        v3 open, v9 closed      3600000
    101    ringing    09:02        09:03        v4, retracted by v9     (deleted: not listed)
    101    on_call    09:00        09:05        v9                      300000
    101    available  09:05        open         v9                      14 h 55 m = 53700000
    102    available  10:00        11:00        v1                      3600000
"""

from __future__ import annotations

import math
from datetime import timedelta

import pandas as pd
import pytest
from conftest import SETTINGS, T0

from core.agent_records import (
    AgentStateChange,
    AgentStats,
    AgentStatus,
    IntervalKind,
    record_to_json,
)
from warehouse.loader import Loader, Record, routes_for
from warehouse.queries import agent_stats as q

AGENT_STATES_TOPIC = SETTINGS.topic_agent_states
AGENT_STATS_TOPIC = SETTINGS.topic_agent_stats

DAY = T0.replace(hour=0)
S = AgentStatus


def at(hours: float):
    return DAY + timedelta(hours=hours)


def row(agent, start, version, kind=IntervalKind.QUARTER, tenant="acme", **numbers):
    values = dict.fromkeys(("logged_in_ms", "available_ms", "ringing_ms", "talk_ms",
                            "wrap_up_ms", "offered", "answered", "missed", "handled",
                            "handled_talk_ms"), 0) | numbers
    return AgentStats(tenant=tenant, agent=agent, interval_kind=kind, interval_start=start,
                      version=version, aht_talk_ms=None, occupancy=None,
                      complete_until=start, **values)


STATS = [
    row("101", at(9), 3, logged_in_ms=900_000, available_ms=630_000, ringing_ms=30_000,
        talk_ms=240_000, offered=2, answered=1, missed=1, handled=1, handled_talk_ms=240_000),
    row("101", at(9.25), 5, logged_in_ms=900_000, available_ms=620_000, talk_ms=280_000),
    row("101", at(9.5), 6, logged_in_ms=600_000, available_ms=280_000, talk_ms=320_000,
        handled=1, handled_talk_ms=600_000),
    row("101", at(9.5), 4, logged_in_ms=100_000, talk_ms=100_000),  # older revision, late
    row("101", at(10), 7, logged_in_ms=900_000, available_ms=900_000),
    row("101", at(9), 6, kind=IntervalKind.HOUR, logged_in_ms=3_600_000, talk_ms=1),
    row("102", at(9.25), 2, logged_in_ms=900_000, available_ms=900_000, offered=1, missed=1),
    row("101", at(9), 1, tenant="globex", logged_in_ms=900_000, talk_ms=900_000),
]


def seg(agent, state, since, until, version, deleted=False):
    return AgentStateChange("acme", agent, since, state, until, version, deleted)


STATES = [
    seg("101", S.AVAILABLE, at(-14), at(-4), 1),
    seg("101", S.OFFLINE, at(-4), at(8), 2),
    seg("101", S.AVAILABLE, at(8), None, 3),
    seg("101", S.RINGING, at(9 + 2 / 60), at(9 + 3 / 60), 4),
    seg("101", S.AVAILABLE, at(8), at(9), 9),
    seg("101", S.RINGING, at(9 + 2 / 60), at(9 + 3 / 60), 9, deleted=True),
    seg("101", S.ON_CALL, at(9), at(9 + 5 / 60), 9),
    seg("101", S.AVAILABLE, at(9 + 5 / 60), None, 9),
    seg("102", S.AVAILABLE, at(10), at(11), 1),
]


def records(topic, rows, partition=0):
    return [Record(topic, partition, offset, record_to_json(r)) for offset, r in enumerate(rows)]


@pytest.fixture
def agents(store):
    loader = Loader(store, routes_for(SETTINGS), dead_letters=lambda d: None)
    for record in records(AGENT_STATS_TOPIC, STATS) + records(AGENT_STATES_TOPIC, STATES):
        loader.load([record])  # one insert per revision, as in life
    return store


def test_agent_table_sums_the_latest_revisions(agents):
    table = q.agent_table(agents, "acme", at(9), at(10)).set_index("agent")
    assert list(table.index) == ["101", "102"]
    a = table.loc["101"]
    assert (a.talk_ms, a.available_ms, a.logged_in_ms, a.ringing_ms) == (
        840_000, 1_530_000, 2_400_000, 30_000)
    assert (a.offered, a.answered, a.missed, a.handled, a.handled_talk_ms) == (
        2, 1, 1, 2, 840_000)
    assert a.aht_talk_ms == 420_000
    assert math.isclose(a.occupancy, 84 / 237) and a.answer_ratio == 0.5
    b = table.loc["102"]
    assert b.occupancy == 0.0 and b.answer_ratio == 0.0 and pd.isna(b.aht_talk_ms)
    # counted up to the newest complete_until of the agent's rows in the window
    assert pd.Timestamp(a.counted_until) == pd.Timestamp(at(9.5))
    assert pd.Timestamp(b.counted_until) == pd.Timestamp(at(9.25))


def test_agent_table_by_hour_and_of_an_empty_period(agents):
    hour = q.agent_table(agents, "acme", at(9), at(10), "hour")
    assert list(hour.agent) == ["101"] and hour.talk_ms[0] == 1
    assert q.agent_table(agents, "acme", at(12), at(13)).empty
    with pytest.raises(ValueError, match="interval_kind"):
        q.agent_table(agents, "acme", at(9), at(10), "week")


def test_agent_intervals_one_row_per_agent_and_interval(agents):
    rows = q.agent_intervals(agents, "acme", at(9), at(10))
    got = [(r["agent"], pd.Timestamp(r["interval_start"]), r["talk_ms"], r["handled"])
           for r in rows]
    assert got == [("101", pd.Timestamp(at(9)), 240_000, 1),
                   ("101", pd.Timestamp(at(9.25)), 280_000, 0),
                   ("101", pd.Timestamp(at(9.5)), 320_000, 1),  # v6, not the late v4
                   ("102", pd.Timestamp(at(9.25)), 0, 0)]
    first, third = rows[0], rows[2]
    # the definitions of agent_table, per interval
    assert first["aht_talk_ms"] == 240_000 and first["answer_ratio"] == 0.5
    assert math.isclose(first["occupancy"], 240 / 870)
    assert third["aht_talk_ms"] == 600_000 and third["answer_ratio"] is None
    assert set(q.STAT_COLUMNS) <= set(first)
    # summed over the intervals they are the period's table
    table = q.agent_table(agents, "acme", at(9), at(10)).set_index("agent")
    assert sum(r["talk_ms"] for r in rows if r["agent"] == "101") == table.loc["101"].talk_ms


def test_agent_intervals_by_agent_kind_and_tenant(agents):
    assert {r["agent"] for r in q.agent_intervals(agents, "acme", at(9), at(10),
                                                  agent="102")} == {"102"}
    hour = q.agent_intervals(agents, "acme", at(9), at(10), "hour")
    assert [(r["agent"], r["talk_ms"]) for r in hour] == [("101", 1)]
    globex = q.agent_intervals(agents, "globex", at(9), at(10))
    assert [(r["agent"], r["talk_ms"]) for r in globex] == [("101", 900_000)]
    with pytest.raises(ValueError, match="interval_kind"):
        q.agent_intervals(agents, "acme", at(9), at(10), "week")


def test_state_timeline_of_a_day(agents):
    day = q.state_timeline(agents, "acme", at(0), at(24))
    got = [(r.agent, r.state, r.ms_in_window) for r in day.itertuples()]
    assert got == [("101", "offline", 28_800_000), ("101", "available", 3_600_000),
                   ("101", "on_call", 300_000), ("101", "available", 53_700_000),
                   ("102", "available", 3_600_000)]
    assert day.until.isna().tolist() == [False, False, False, True, False]
    only = q.state_timeline(agents, "acme", at(0), at(24), agent="102")
    assert list(only.agent) == ["102"]


def test_bad_records_are_dead_lettered_and_retries_add_nothing(store):
    dead = []
    loader = Loader(store, routes_for(SETTINGS), dead_letters=dead.extend)
    good = records(AGENT_STATS_TOPIC, STATS[:1])
    bad = Record(AGENT_STATS_TOPIC, 0, 1, b'{"tenant": "acme"}')
    negative = Record(AGENT_STATES_TOPIC, 0, 0, record_to_json(STATES[0]).replace(
        b'"version":1', b'"version":-1'))
    loader.load([*good, bad])
    loader.load([negative])
    assert [d.offset for d in dead] == [1, 0]
    assert "missing" in dead[0].error and "version" in dead[1].error
    Loader(store, routes_for(SETTINGS), dead_letters=dead.extend).load(good)  # a retry
    assert store.query("SELECT count() AS n FROM tawag.agent_stats")[0]["n"] == 1


@pytest.mark.parametrize("table", ["agent_states", "agent_stats", "callbacks"])
def test_tenant_leads_the_sort_key_and_retries_are_deduplicated(store, table):
    found = store.query("SELECT sorting_key, create_table_query FROM system.tables "
                        "WHERE database = 'tawag' AND name = {name:String}", {"name": table})[0]
    assert found["sorting_key"].startswith("tenant,")
    assert "non_replicated_deduplication_window = 1000" in found["create_table_query"]
