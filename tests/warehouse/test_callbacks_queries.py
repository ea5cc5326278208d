"""Callback-list queries on hand-made item revisions, answers worked out here.

Items of acme (UTC; "26th" = 2026-11-26, the window of the summary is that day):

    client  item  revisions                              opened      closed      ttc
    A       a1    v1 open, v2 closed by 101 (inbound)     26th 09:00  26th 09:30  30 min
    B       b1    v1 open (3 attempts)                    26th 10:00  -           -
    C       c0    v1 open, v5 retracted (merged)          26th 10:30  -           -
    C       c1    v5 closed by 102 (outbound)             26th 11:00  26th 13:00  2 h
    D       d1    v1 closed                               25th 23:00  26th 08:00  9 h
    globex  g1    open                                    26th 09:00  -           -

    open at 26th 12:00: b1, age 2 h (c0 is retracted, g1 another tenant)
    closed during the 26th: d1 (08:00), a1 (09:30), c1 (13:00)
    opened during the 26th: a1, b1, c1 -> 3 items, 2 closed, success 2/3;
        mean = median time to callback (30 min + 2 h) / 2 = 75 min = 4500000 ms;
        within 1 h: only a1 -> 1/3
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from conftest import SETTINGS, T0

from core.agent_records import CallbackItem, CallbackStatus, record_to_json
from warehouse.loader import Loader, Record, routes_for
from warehouse.queries import callbacks as q

CALLBACKS_TOPIC = SETTINGS.topic_callbacks

DAY = T0.replace(hour=0)
OPEN, CLOSED = CallbackStatus.OPEN, CallbackStatus.CLOSED


def at(hours: float):
    return DAY + timedelta(hours=hours)


def item(client, item_id, version, opened, closed=None, by=None, direction=None,
         attempts=1, tenant="acme", deleted=False):
    return CallbackItem(
        tenant=tenant, client=client, item_id=item_id, version=version,
        status=CLOSED if closed is not None else OPEN, opened_at=at(opened),
        last_missed_at=at(opened), attempts=attempts, callback_attempts=0,
        closed_at=at(closed) if closed is not None else None,
        closed_by_call_id=f"cb-{item_id}" if closed is not None else None,
        called_back_by=by, callback_direction=direction,
        time_to_callback_ms=round((closed - opened) * 3_600_000) if closed is not None else None,
        deleted=deleted)


A, B, C, D = "+74950000001", "+74950000002", "+74950000003", "+74950000004"
ITEMS = [
    item(A, "a1", 1, 9),
    item(A, "a1", 2, 9, closed=9.5, by="101", direction="inbound"),
    item(B, "b1", 1, 10, attempts=3),
    item(C, "c0", 1, 10.5),
    item(C, "c0", 5, 10.5, deleted=True),
    item(C, "c1", 5, 11, closed=13, by="102", direction="outbound"),
    item(D, "d1", 1, -1, closed=8, by="103", direction="inbound"),
    item(A, "g1", 1, 9, tenant="globex"),
]


@pytest.fixture
def callbacks(store):
    loader = Loader(store, routes_for(SETTINGS), dead_letters=lambda d: None)
    for offset, revision in enumerate(ITEMS):
        loader.load([Record(CALLBACKS_TOPIC, 0, offset, record_to_json(revision))])
    return store


def test_open_callbacks_with_their_age(callbacks):
    rows = q.open_callbacks(callbacks, "acme", at(12))
    assert [(r.client, r.item_id, r.attempts, r.age_ms) for r in rows.itertuples()] == [
        (B, "b1", 3, 7_200_000)]
    # before c0's item was opened at 10:30... it is retracted, so still only b1 later on
    assert list(q.open_callbacks(callbacks, "acme", at(9.9)).item_id) == []


def test_closed_callbacks_say_who_and_how_long(callbacks):
    rows = q.closed_callbacks(callbacks, "acme", at(0), at(24))
    got = [(r.item_id, r.called_back_by, r.callback_direction, r.time_to_callback_ms)
           for r in rows.itertuples()]
    assert got == [("d1", "103", "inbound", 32_400_000), ("a1", "101", "inbound", 1_800_000),
                   ("c1", "102", "outbound", 7_200_000)]


def test_callback_summary(callbacks):
    assert q.callback_summary(callbacks, "acme", at(0), at(24)) == {
        "items": 3, "closed": 2, "open": 1, "success_rate": 2 / 3,
        "mean_time_to_callback_ms": 4_500_000.0, "median_time_to_callback_ms": 4_500_000.0}
    within = q.callback_summary(callbacks, "acme", at(0), at(24), within_s=3600)
    assert within["success_rate"] == 1 / 3


def test_callback_summary_of_an_empty_window(callbacks):
    assert q.callback_summary(callbacks, "acme", at(48), at(72)) == {
        "items": 0, "closed": 0, "open": 0, "success_rate": None,
        "mean_time_to_callback_ms": None, "median_time_to_callback_ms": None}
