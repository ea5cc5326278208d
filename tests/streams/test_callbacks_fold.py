"""Missed-call callback items from hand-made CDRs (answers worked out by hand), plus properties.

Client +74951234567 of acme (UTC; Saturday 2026-11-28 at night counts like any hour):

    call  started   direction  outcome                        item effect
    m1    Fri 22:00 inbound    no_answer                      opens item m1 (attempts 1)
    m2    Sat 02:00 inbound    busy                           attempts 2
    o1    Sat 09:00 outbound   no_answer (101 tried)          callback_attempts 1
    o2    Sat 09:30 outbound   answered 09:30:15 by 102        closes m1: 11 h 30 m 15 s
    m3    Sat 20:00 inbound    cancelled                      opens item m3
    i1    Sat 20:10 inbound    in progress                    nothing yet
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from core.agent_records import CallbackStatus
from core.records import Cdr, Disposition
from streams.folds.callbacks import (
    CallbackConfig,
    CallbackState,
    apply,
    client_key,
    fold,
    item_changes,
    items,
)

CLIENT = "+74951234567"
FRI = datetime(2026, 11, 27, tzinfo=UTC)


def at(hours: float) -> datetime:
    return FRI + timedelta(hours=hours)


def cdr(call_id: str, start: datetime, disposition: Disposition, *, inbound: bool = True,
        answered: datetime | None = None, agent: str | None = None, ext: str = "101",
        version: int = 3, caller: str = CLIENT) -> Cdr:
    closed = disposition is not Disposition.IN_PROGRESS
    return Cdr(
        tenant="acme", call_id=call_id, version=version,
        direction="inbound" if inbound else "outbound",
        caller=caller if inbound else ext, callee=ext if inbound else caller, did=None,
        agent=agent, started_at=start, answered_at=answered, ended_at=None, ring_ms=0,
        talk_ms=0, disposition=disposition, sip_code=None, reason=None, hangup_by=None,
        closed=closed, recording=None, mos=None, packet_loss=None, jitter_ms=None,
        event_count=version, last_event_ts=start)


D = Disposition
CALLS = [
    cdr("m1", at(22), D.NO_ANSWER),
    cdr("m2", at(26), D.BUSY),
    cdr("o1", at(33), D.NO_ANSWER, inbound=False, ext="101"),
    cdr("o2", at(33.5), D.ANSWERED, inbound=False, ext="102",
        answered=at(33.5) + timedelta(seconds=15), agent=CLIENT),
    cdr("m3", at(44), D.CANCELLED),
    cdr("i1", at(44 + 1 / 6), D.IN_PROGRESS),
]


def test_items_of_the_weekend() -> None:
    first, second = items(fold("acme", CLIENT, CALLS))
    assert (first.item_id, first.status, first.attempts, first.callback_attempts) == (
        "m1", CallbackStatus.CLOSED, 2, 1)
    assert (first.opened_at, first.last_missed_at) == (at(22), at(26))
    assert (first.closed_at, first.closed_by_call_id, first.called_back_by) == (
        at(33.5) + timedelta(seconds=15), "o2", "102")
    assert first.callback_direction == "outbound"
    assert first.time_to_callback_ms == (11 * 3600 + 30 * 60 + 15) * 1000
    assert (second.item_id, second.status, second.attempts, second.closed_at) == (
        "m3", CallbackStatus.OPEN, 1, None)


def test_an_answered_inbound_call_from_the_client_closes_the_item() -> None:
    back = cdr("i2", at(45), D.ANSWERED, answered=at(45) + timedelta(seconds=4), agent="103")
    last = items(fold("acme", CLIENT, [*CALLS, back]))[-1]
    assert (last.status, last.called_back_by, last.callback_direction) == (
        CallbackStatus.CLOSED, "103", "inbound")
    assert last.time_to_callback_ms == 3_604_000


def test_the_client_is_the_normalised_external_party() -> None:
    national = cdr("n1", at(1), D.BUSY, caller="8 (495) 123-45-67")
    assert client_key(national) == f"acme:{CLIENT}"
    assert client_key(cdr("o9", at(1), D.BUSY, inbound=False)) == f"acme:{CLIENT}"
    internal = replace(national, direction="internal", caller="101", callee="102")
    assert client_key(internal) is None
    assert items(fold("acme", CLIENT, [national]))[0].item_id == "n1"


def test_revisions_keep_the_latest_and_items_are_never_duplicated() -> None:
    ringing = cdr("m1", at(22), D.IN_PROGRESS, version=1)
    missed = cdr("m1", at(22), D.NO_ANSWER, version=3)
    state = fold("acme", CLIENT, [missed, ringing, missed])
    assert [i.item_id for i in items(state)] == ["m1"] and state.version == 3
    state = apply(state, cdr("m2", at(26), D.BUSY))
    assert [(i.item_id, i.attempts) for i in items(state)] == [("m1", 2)]


def test_item_changes_retract_an_item_merged_into_an_earlier_one() -> None:
    old = fold("acme", CLIENT, CALLS[1:2])  # m2 alone: item m2
    new = apply(old, CALLS[0])  # m1 arrives late: the item is m1 with 2 attempts
    changes = item_changes(old, new)
    assert [(i.item_id, i.deleted, i.attempts) for i in changes] == [
        ("m1", False, 2), ("m2", True, 1)]
    assert all(i.version == new.version == 6 for i in changes)


def test_old_settled_history_is_pruned() -> None:
    config = CallbackConfig(retention=timedelta(days=7))
    late = cdr("m9", at(24 * 20), D.NO_ANSWER)
    state = fold("acme", CLIENT, [*CALLS[:4], late], config)
    assert [c.call_id for c in state.calls] == ["m9"]
    assert state.version == 5 * 3  # pruned revisions still count: versions keep growing
    assert apply(state, cdr("old", at(0), D.BUSY), config) is state
    kept = fold("acme", CLIENT, [*CALLS[:2], late], config)  # m1 is still open: kept
    assert [c.call_id for c in kept.calls] == ["m1", "m2", "m9"]


def test_the_app_keeps_the_history_the_settings_ask_for() -> None:
    from core.settings import load
    from streams.app import callback_config

    assert callback_config(load(environ={})).retention == timedelta(days=30)
    week = callback_config(load(environ={"TAWAG_CALLBACK_RETENTION_DAYS": "7"}))
    assert (week.country, week.retention) == ("RU", timedelta(days=7))
    # the zones come from the provisioning file: the demo tenant is in Moscow
    assert week.time_zone("acme") == "Europe/Moscow"
    assert week.time_zone("not-provisioned") == "UTC"


def test_state_round_trips_through_its_dict() -> None:
    state = fold("acme", CLIENT, CALLS)
    assert CallbackState.from_dict(state.to_dict()) == state


@st.composite
def client_calls(draw: st.DrawFn) -> list[Cdr]:
    out = []
    for n in range(draw(st.integers(1, 8))):
        start = at(draw(st.integers(0, 72 * 60)) / 60)
        inbound = draw(st.booleans())
        answered = draw(st.booleans())
        final = cdr(f"k{n}", start, D.ANSWERED if answered else D.NO_ANSWER, inbound=inbound,
                    answered=start + timedelta(seconds=5) if answered else None,
                    agent="101" if answered and inbound else None)
        out += [replace(final, version=1, disposition=D.IN_PROGRESS, closed=False,
                        answered_at=None), final]
    return out


@hsettings(max_examples=80, deadline=None)
@given(revisions=client_calls(), data=st.data())
def test_any_arrival_order_gives_the_same_items(revisions, data) -> None:
    shuffled = data.draw(st.permutations(revisions))
    expected = items(fold("acme", CLIENT, revisions))
    assert items(fold("acme", CLIENT, shuffled)) == expected
    # what an agent would have sent, highest version per item, is the same list
    state, sent = CallbackState("acme", CLIENT), {}
    for revision in shuffled:
        new = apply(state, revision)
        for item in item_changes(state, new):
            if item.item_id not in sent or sent[item.item_id].version <= item.version:
                sent[item.item_id] = item
        state = new
    live = sorted((i for i in sent.values() if not i.deleted),
                  key=lambda i: (i.opened_at, i.item_id))  # the order items() gives
    assert [replace(i, version=0) for i in live] == [replace(i, version=0) for i in expected]
