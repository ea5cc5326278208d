"""Each client against its fake over real HTTP on loopback (crm-contracts.md §6)."""

from __future__ import annotations

import time

import httpx
import pytest
from crm_helpers import MANAGER_1, MANAGER_2, T0, amo_client, b24_client, make_cdr, onec_client
from fakes.onec import PREFIX

from connectors.base import (
    AuthExpired,
    LeakyBucket,
    MemoryProgress,
    RingingCall,
    Throttle,
)
from connectors.bitrix24 import Bitrix24Client
from connectors.bitrix24.client import CLIENT_LIMIT as B24_LIMIT
from connectors.onec import OneCBasicAuth, OneCClient
from core.records import Disposition

PHONE = "+79161234567"


# --- amoCRM ---------------------------------------------------------------------------
def test_amocrm_contact_call_and_a_resend_after_a_lost_answer(amo):
    fake, server = amo
    cid = fake.add_contact("Иван Петров", "+7 916 123-45-67", responsible=504141,
                           lead_ids=(9774766,))
    client, _ = amo_client(fake, server)
    contact = client.find_contact(PHONE)
    assert contact.id == str(cid) and contact.responsible_user_id == "504141"
    assert client.find_contact("+74990000000") is None  # 204, empty body
    cdr = make_cdr("call-1", recording="r.mp3")
    progress = MemoryProgress()
    client.log_call(cdr, phone=PHONE, user="8375357", contact=contact,
                    recording_url="https://pbx/r.mp3", progress=progress)
    # a resend whose first answer was lost: the call note with our uniq is found first
    progress.pop("call_id")
    client.log_call(cdr, phone=PHONE, user="8375357", contact=contact,
                    recording_url="https://pbx/r.mp3", progress=progress)
    assert [c["uniq"] for c in fake.calls] == ["call-1"] and fake.call_posts == ["call-1"]
    assert progress["call_id"] == str(fake.calls[0]["id"])
    assert fake.calls[0]["entity_type"] == "lead" and fake.calls[0]["entity_id"] == 9774766
    assert fake.calls[0]["link"] == "https://pbx/r.mp3"


def test_amocrm_unknown_number_becomes_an_incoming_lead_with_the_call_and_a_task(amo):
    fake, server = amo
    client, _ = amo_client(fake, server)
    cdr = make_cdr("call-2", disposition=Disposition.NO_ANSWER)
    lead = client.create_lead_for_unknown(cdr, phone=PHONE, user=None, recording_url=None)
    client.log_call(cdr, phone=PHONE, user="1", contact=lead, recording_url=None,
                    progress=MemoryProgress())
    progress = MemoryProgress()
    task = client.create_missed_call_task(cdr, phone=PHONE, contact=lead, responsible="504141",
                                          progress=progress)
    assert fake.unsorted[0]["metadata"]["uniq"] == "call-2"
    assert fake.calls == []  # the incoming lead carries the call; its contact takes none
    stored = fake.tasks[int(task.id)]
    assert stored["entity_type"] == "leads" and stored["responsible_user_id"] == 504141
    assert progress["task_id"] == task.id
    client.close_task(task, note="Перезвонили")
    assert stored["is_completed"] is True and stored["result"] == {"text": "Перезвонили"}


def test_amocrm_expired_token_mid_run_is_refreshed_once_and_stored(amo):
    fake, server = amo
    client, auth = amo_client(fake, server)
    client.screen_pop(RingingCall("c", PHONE, "inbound", 0.0, users=("7",)))
    fake.expire_tokens()
    client.screen_pop(RingingCall("c", PHONE, "inbound", 0.0, users=("8",)))
    assert auth.refreshes == 1 and len(fake.refresh) == 1  # the old refresh token is spent
    assert [n["users"] for n in fake.notifications] == [[7], [8]]
    fake.expire_tokens()
    fake.refresh.clear()  # refresh token revoked: an operator must re-authorise
    with pytest.raises(AuthExpired):
        client.find_contact(PHONE)


def test_amocrm_throttle_keeps_a_burst_under_7_per_second(amo):
    fake, server = amo
    client, _ = amo_client(fake, server)
    started = time.monotonic()
    for _ in range(15):
        client.find_contact(PHONE)
    assert fake.too_many == 0
    assert time.monotonic() - started >= 2.0 - 0.05  # 7 + 7 + 1 across three windows


def test_amocrm_fake_answers_429_with_an_empty_body_without_the_throttle(amo):
    fake, server = amo
    client, _ = amo_client(fake, server,
                           throttle=Throttle(LeakyBucket(capacity=1e9, drain_per_s=1e9)))
    errors = 0
    for _ in range(12):
        try:
            client.find_contact(PHONE)
        except Exception as exc:  # noqa: BLE001 - counting the vendor's refusals
            errors += type(exc).__name__ == "RateLimited"
    assert errors >= 4 and fake.too_many == errors


# --- Bitrix24 -------------------------------------------------------------------------
def test_bitrix24_one_registration_show_hide_finish_and_record(b24):
    fake, server = b24
    fake.add_entity("John Doe", "+7 916 123-45-67", assigned=99)
    client, _ = b24_client(fake, server)
    assert client.find_contact(PHONE).responsible_user_id == "99"
    client.screen_pop(RingingCall("call-3", PHONE, "inbound", T0.timestamp(), users=("1269",)))
    client.screen_pop(RingingCall("call-3", PHONE, "inbound", T0.timestamp(), users=("1270",)))
    client.screen_pop(RingingCall("call-3", PHONE, "inbound", T0.timestamp(),
                                  hide_users=("1270",)))
    progress = MemoryProgress()
    client.log_call(make_cdr("call-3", talk_ms=95_000, recording="r.mp3"), phone=PHONE,
                    user="1269", contact=None, recording_url="https://pbx/r.mp3?sig=1",
                    progress=progress)
    [cid] = fake.call_for("call-3")
    assert len(fake.register_requests) == 1 and progress["b24_call_id"] == cid
    assert [(a, u) for c, a, u, _ in fake.card_log] == [("show", 1269), ("show", 1270),
                                                        ("hide", 1270)]
    row = fake.finished[cid]
    assert row["CALL_STATUS"] == 1 and row["CALL_DURATION"] == 95 and row["PORTAL_USER_ID"] == 1269
    assert fake.records[cid]["FILENAME"] == "call-3.mp3"
    assert fake.records[cid]["content"] == b"ID3\x03call-3"  # uploaded, not fetched


def test_bitrix24_unknown_number_missed_call_creates_a_lead_via_crm_create(b24):
    fake, server = b24
    client, _ = b24_client(fake, server)
    assert client.find_contact(PHONE) is None
    client.log_call(make_cdr("call-4", disposition=Disposition.NO_ANSWER), phone=PHONE,
                    user="1", contact=None, recording_url=None, progress=MemoryProgress())
    [cid] = fake.call_for("call-4")
    assert fake.leads[0]["CALL_ID"] == cid
    row = fake.finished[cid]
    assert row["CALL_FAILED_CODE"] == "304" and row["CALL_STATUS"] == 0


def test_bitrix24_resent_register_within_30_minutes_is_the_same_call(b24):
    fake, server = b24
    client, _ = b24_client(fake, server)
    params = {"USER_ID": 1, "PHONE_NUMBER": PHONE, "TYPE": 2, "EXTERNAL_CALL_ID": "x-1"}
    first = client.call("telephony.externalcall.register", params)
    again = client.call("telephony.externalcall.register", params)
    assert first["CALL_ID"] == again["CALL_ID"] and len(fake.registrations) == 1


def test_bitrix24_expired_token_refresh_and_webhook_mode(b24):
    fake, server = b24
    client, auth = b24_client(fake, server)
    fake.expire_tokens()
    assert client.find_contact(PHONE) is None
    assert auth.refreshes == 1
    uid, code = fake.webhook
    hook = Bitrix24Client(httpx.Client(base_url=f"{server.url}/rest/{uid}/{code}/"))
    assert hook.find_contact(PHONE) is None
    bad = Bitrix24Client(httpx.Client(base_url=f"{server.url}/rest/{uid}/wrong/"))
    with pytest.raises(AuthExpired):
        bad.find_contact(PHONE)


def test_bitrix24_throttle_stays_inside_the_leaky_bucket(b24):
    fake, server = b24
    fake.capacity = 6  # a small bucket so the test is short; same rule as X=50, Y=2/s
    capacity = 6 - (50 - B24_LIMIT["capacity"])
    client, _ = b24_client(fake, server, throttle=Throttle(LeakyBucket(capacity, 2.0)))
    for _ in range(9):
        client.find_contact(PHONE)
    assert fake.limited == 0


# --- 1C -------------------------------------------------------------------------------
def test_onec_lookup_exact_then_by_presentation(onec):
    fake, server = onec
    exact = fake.add_party("ООО «Ромашка»", "+7 (495) 123-45-67", manager=MANAGER_1)
    # НомерТелефона can be empty on real rows; the presentation still holds the digits
    fuzzy = fake.add_party("ИП Сидоров", "8-9161234567 (моб.)", manager=MANAGER_2,
                           digits_column="")
    client = onec_client(fake, server)
    assert client.find_contact("+74951234567").id == exact
    found = client.find_contact(PHONE)
    assert found.id == fuzzy and found.responsible_user_id == MANAGER_2
    assert client.find_contact("+74990000000") is None


def test_onec_call_document_is_created_once_and_closed(onec):
    fake, server = onec
    party = fake.add_party("ООО «Ромашка»", "+7 (495) 123-45-67", manager=MANAGER_1)
    client = onec_client(fake, server)
    contact = client.find_contact("+74951234567")
    cdr = make_cdr("call-5", caller="+74951234567", disposition=Disposition.NO_ANSWER)
    progress = MemoryProgress()
    client.log_call(cdr, phone="+74951234567", user=MANAGER_1, contact=contact,
                    recording_url=None, progress=progress)
    # a resend after a lost 201: the document is found by its marker, not posted again
    retry = MemoryProgress(doc_sent=True)
    client.log_call(cdr, phone="+74951234567", user=MANAGER_1, contact=contact,
                    recording_url=None, progress=retry)
    assert fake.posts == 1 and retry["doc_ref"] == progress["doc_ref"]
    doc = fake.documents[progress["doc_ref"]]
    assert doc["АбонентКонтакт"] == party and doc["Рассмотрено"] is False
    task = client.create_missed_call_task(cdr, phone="+74951234567", contact=contact,
                                          responsible=MANAGER_1, progress=progress)
    client.close_task(task, note="Перезвонили")
    assert doc["Рассмотрено"] is True


def test_onec_wrong_password_is_auth_expired(onec):
    fake, server = onec
    http = httpx.Client(base_url=server.url + PREFIX, auth=OneCBasicAuth(fake.user, "nope"))
    with pytest.raises(AuthExpired):
        OneCClient(http).find_contact(PHONE)
