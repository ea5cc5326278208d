"""The sync worker: pure decisions, then whole call sequences against the three fakes.

Every wait is on a condition with a deadline (``wait_for``); nothing sleeps to hide a race.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from crm_helpers import (
    FAST,
    MANAGER_1,
    ONEC_USERS,
    T0,
    inbound_call,
    make_cdr,
    make_event,
    sync_settings,
    targets_for,
    wait_for,
)
from fakes.server import Reply, json_reply

from connectors import redact
from connectors.delivery import deliveries_for
from connectors.mapping import client_phone
from connectors.outbox import Outbox, list_rejections
from connectors.screen_pop import apply_event
from connectors.sync import SyncWorker
from core.events import Direction, EventType

KNOWN = "+79161234567"
UNKNOWN = "+79035550101"


def test_apply_event_shows_each_ringing_agent_once_and_hides_the_others_on_answer():
    view, pops = None, []
    for ev in inbound_call("c1", KNOWN, ring=("101", "102"), answer="102")[0]:
        view, change = apply_event(view, ev, "RU")
        pops.append(change and (change.users, change.hide_users))
    # offered to group 200: a card for the group number is filtered per CRM (unmapped)
    assert pops == [(("200",), ()), (("101",), ()), (("102",), ()), ((), ("200", "101")),
                    ((), ("102",))]
    assert view is None  # forgotten once the call ended


def test_a_members_leg_failure_hides_only_that_members_card():
    """Sequential group: 104's leg times out (its own call.failed), the call rings on."""
    ring = [make_event(EventType.CALL_RINGING, "c3", callee="74951230002", agent=a, ms=ms,
                       leg_id=f"c3#{n}") for n, (a, ms) in enumerate((("104", 10),
                                                                        ("102", 2100)))]
    leg_failed = make_event(EventType.CALL_FAILED, "c3", callee="74951230002", agent="104",
                            ms=2050, sip_code=408, leg_id="c3#0")
    view, pops = None, []
    for ev in (ring[0], leg_failed, ring[1]):
        view, change = apply_event(view, ev, "RU")
        pops.append(change and (change.users, change.hide_users))
    assert pops == [(("104",), ()), ((), ("104",)), (("102",), ())]
    assert view is not None and view.shown == ("102",)


def test_internal_and_outbound_calls_do_not_pop():
    ev = make_event(EventType.CALL_RINGING, "c2", caller="101", callee="102", agent="102",
                    direction=Direction.INTERNAL)
    assert apply_event(None, ev, "RU") == (None, None)
    assert client_phone("inbound", "8 (916) 123-45-67", "101", "RU") == KNOWN
    assert client_phone("outbound", "101", "102", "RU") is None


def test_only_closed_external_cdrs_are_delivered():
    assert deliveries_for(make_cdr("a", closed=False), "RU") == []
    assert deliveries_for(make_cdr("a", direction="internal", caller="101"), "RU") == []
    [(kind, data)] = deliveries_for(make_cdr("a", caller="8 916 123 45 67"), "RU")
    assert kind == "log" and data["phone"] == KNOWN


@pytest.fixture
def world(amo, b24, onec, tmp_path):
    """All three fakes with one known client owned by manager 504141 / 99 / m-1."""
    amo[0].add_contact("Иван Петров", "+7 916 123-45-67", responsible=504141,
                       lead_ids=(9774766,))
    b24[0].add_entity("Иван Петров", "+7 916 123-45-67", assigned=99)
    onec[0].add_party("ООО «Ромашка»", "79161234567", manager=MANAGER_1)
    box = Outbox(tmp_path / "outbox.jsonl")
    worker = SyncWorker(targets_for(amo, b24, onec), box, settings=sync_settings(), backoff=FAST)
    worker.start()
    yield amo[0], b24[0], onec[0], worker
    worker.stop()
    box.close()


def feed(worker: SyncWorker, events, cdrs, *, settle: bool = False) -> None:
    """Events, then CDRs; ``settle`` lets the screen-pops land first, as on a live call
    where the CDR closes seconds after the last ringing event."""
    for ev in events:
        worker.handle_event(ev)
    if settle:
        wait_for(worker.idle, what="screen-pops")
    for cdr in cdrs:
        worker.handle_cdr(cdr)


def test_a_day_in_the_life(world):
    """Known client answered with a recording; unknown number missed; callback closes it."""
    amo, b24, onec, worker = world
    feed(worker, *inbound_call("A", KNOWN, ring=("101", "102"), answer="102",
                               recording="2026/11/26/A.mp3"), settle=True)
    feed(worker, *inbound_call("B", UNKNOWN, ring=("101",), answer=None), settle=True)
    wait_for(worker.idle, what="B delivered")
    # the manager accepts B's incoming lead: only then does its contact take calls
    amo.accept_unsorted(amo.find_by_phone(UNKNOWN, unsorted=True)["id"])
    callback = make_cdr("C", direction="outbound", caller="101", callee="8 903 555-01-01",
                        agent="101", start=T0 + timedelta(minutes=5))
    worker.handle_cdr(callback)
    worker.handle_cdr(callback)  # a redelivered revision changes nothing
    internal = make_cdr("D", direction="internal", caller="101", callee="102")
    worker.handle_cdr(internal)
    wait_for(worker.idle, what="all deliveries")

    # amoCRM: calls with contacts, an incoming lead carrying B, B's task created then closed
    assert [c["uniq"] for c in amo.calls] == ["A", "C"]
    a, c = amo.calls
    assert a["call_status"] == 4 and a["call_responsible"] == 8002 and a["duration"] == 42
    assert a["link"].startswith("https://pbx.test/rec/2026/11/26/A.mp3?expires=")
    assert c["direction"] == "outbound" and c["entity_type"] == "lead"
    assert [u["metadata"]["uniq"] for u in amo.unsorted] == ["B"]
    [task] = amo.tasks.values()
    assert task["responsible_user_id"] == 8000 and task["is_completed"] is True
    assert [n["users"] for n in amo.notifications] == [[8001], [8002], [8001]]

    # Bitrix24: one registration per external call, cards shown/hidden, finished, record
    for call_id in "ABC":
        assert len(b24.call_for(call_id)) == 1
    reg_a = b24.call_for("A")[0]
    assert b24.cards[reg_a] == set()  # hidden for 1269 on answer, all hidden by finish
    assert [(act, user) for cid, act, user, _ in b24.card_log if cid == reg_a] == [
        ("show", 1269), ("show", 1270), ("hide", 1269), ("hide", 1270)]
    assert b24.finished[reg_a]["PORTAL_USER_ID"] == 1270  # who talked
    assert b24.records[reg_a]["FILENAME"] == "A.mp3"
    reg_b = b24.call_for("B")[0]
    assert b24.finished[reg_b]["CALL_FAILED_CODE"] == "304"
    # the lead made by the ringing-time register belongs to the user it rang for
    assert b24.finished[reg_b]["PORTAL_USER_ID"] == 1269
    assert [lead["CALL_ID"] for lead in b24.leads] == [reg_b]
    assert b24.registrations[b24.call_for("C")[0]]["params"]["TYPE"] == 1

    # 1C: one document per external call; B's stays unreviewed until the callback
    docs = {d["Комментарий"]: d for d in onec.documents.values()}
    assert set(docs) == {"tawag:A", "tawag:B", "tawag:C"}
    assert docs["tawag:A"]["Ответственный_Key"] == ONEC_USERS["102"]
    assert docs["tawag:B"]["Рассмотрено"] is True and docs["tawag:B"]["Важность"] == "Высокая"
    assert worker.outbox.rejections() == []


def test_permanent_rejection_is_recorded_with_the_crm_body_and_the_queue_moves_on(
        amo, tmp_path):
    fake, _ = amo
    fake.add_contact("Иван", KNOWN, responsible=504141)
    path = tmp_path / "outbox.jsonl"
    box = Outbox(path)
    worker = SyncWorker(targets_for(amo=amo), box, settings=sync_settings(), backoff=FAST)
    worker.start()
    try:
        # outbound to a number no contact has: amoCRM lists the call under errors[]
        worker.handle_cdr(make_cdr("X", direction="outbound", caller="101",
                                   callee="+74990000000", agent="101"))
        feed(worker, *inbound_call("Y", KNOWN))
        wait_for(worker.idle, what="deliveries")
    finally:
        worker.stop()
        box.close()
    assert [c["uniq"] for c in fake.calls] == ["Y"]
    [rejected] = list_rejections(path)
    assert rejected["call_id"] == "X" and rejected["crm"] == "amocrm"
    assert rejected["body"][0]["detail"] == "Entity not found"


def test_faults_429_storm_500s_and_expired_tokens_still_deliver_each_call_once_in_order(world):
    amo, b24, onec, worker = world
    amo.faults.add(Reply(429), 25)
    b24.faults.add(json_reply(500, {"error": "INTERNAL_SERVER_ERROR",
                                    "error_description": "Internal server error"}), 8)
    b24.faults.add(json_reply(503, {"error": "QUERY_LIMIT_EXCEEDED",
                                    "error_description": "Too many requests"}), 8)
    onec.faults.add(Reply(502), 6)
    ids = [f"F{n:02d}" for n in range(12)]
    for n, call_id in enumerate(ids):
        if n == 6:
            amo.expire_tokens()
            b24.expire_tokens()
        feed(worker, *inbound_call(call_id, KNOWN))
    wait_for(worker.idle, timeout=30, what="deliveries after faults")
    assert [c["uniq"] for c in amo.calls] == ids
    assert [row["EXTERNAL_CALL_ID"] for row in b24.finished.values()] == ids
    assert all(len(b24.call_for(i)) == 1 for i in ids)
    assert [d["Комментарий"] for d in onec.documents.values()] == [f"tawag:{i}" for i in ids]
    assert amo.faults.left() == b24.faults.left() == onec.faults.left() == 0


def test_crm_down_then_back_gets_every_call_once_in_order(amo, b24, onec, tmp_path):
    """The outage is short here (the servers refuse connections until restarted); what is
    checked is the same for ten minutes: nothing is dropped while retries back off."""
    for phone in (KNOWN, UNKNOWN):  # known to amoCRM: unknown numbers are a test of their own
        amo[0].add_contact("Клиент", phone, responsible=504141)
    box = Outbox(tmp_path / "outbox.jsonl")
    servers = [amo[1], b24[1], onec[1]]
    worker = SyncWorker(targets_for(amo, b24, onec), box, settings=sync_settings(), backoff=FAST)
    worker.start()
    try:
        for server in servers:
            server.stop()
        ids = [f"D{n:02d}" for n in range(20)]
        for n, call_id in enumerate(ids):
            feed(worker, *inbound_call(call_id, UNKNOWN if n % 2 else KNOWN, answer="101"))
        wait_for(lambda: len(box.pending()) == 60, what="all queued while down")
        for server in servers:
            server.start()
        wait_for(worker.idle, timeout=30, what="deliveries after the outage")
    finally:
        worker.stop()
        box.close()
    assert [c["uniq"] for c in amo[0].calls] == ids
    assert [row["EXTERNAL_CALL_ID"] for row in b24[0].finished.values()] == ids
    assert len(b24[0].register_requests) == len(ids)  # one register per call, none repeated
    assert [d["Комментарий"] for d in onec[0].documents.values()] == [f"tawag:{i}" for i in ids]


def test_secrets_never_reach_the_logs(amo, b24, onec, tmp_path, caplog):
    redact.install()
    box = Outbox(tmp_path / "outbox.jsonl")
    targets = targets_for(amo, b24, onec)
    secrets = {amo[0].client_secret, b24[0].client_secret, onec[0].password,
               *amo[0].access, *amo[0].refresh, *b24[0].access, *b24[0].refresh,
               sync_settings().recordings_link_secret}
    worker = SyncWorker(targets, box, settings=sync_settings(), backoff=FAST)
    # httpx's own logger too: `tawag` run in-process by another test quiets it to WARNING
    with caplog.at_level(logging.DEBUG), caplog.at_level(logging.DEBUG, logger="httpx"):
        worker.start()
        try:
            amo[0].expire_tokens()
            b24[0].expire_tokens()
            amo[0].faults.add(Reply(429), 3)
            b24[0].faults.add(json_reply(401, {"error": "NO_AUTH_FOUND",
                                               "error_description": "Wrong authorization"}), 1)
            feed(worker, *inbound_call("S1", KNOWN, recording="S1.mp3"))
            worker.handle_cdr(make_cdr("S2", direction="outbound", caller="101",
                                       callee="+74990000000", agent="101"))
            wait_for(worker.idle, timeout=30, what="deliveries")
        finally:
            worker.stop()
            box.close()
    secrets |= {*amo[0].access, *amo[0].refresh, *b24[0].access, *b24[0].refresh}
    assert "HTTP Request" in caplog.text  # httpx did log the requests...
    leaked = [s for s in secrets if s and s in caplog.text]
    assert leaked == []  # ...but no token, client secret, password or signing key
