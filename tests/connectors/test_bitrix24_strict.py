"""Bitrix24 against a fake as strict as a real portal (issue 19, items 3, 5, 6, 8).

Sources (bitrix24/b24restdocs): telephony-external-call-register.md / -finish.md
("works only in the context of an application", ``WRONG_AUTH_TYPE``),
telephony-external-call-attach-record.md (the portal downloads ``RECORD_URL`` and blocks
non-public addresses; ``FILENAME`` + base64 ``FILE_CONTENT``), limits.md
(``OPERATION_TIME_LIMIT`` until ``operating_reset_at``), the system errors table.
"""

from __future__ import annotations

import logging

import httpx
import pytest
from crm_helpers import FAST, b24_client, make_cdr, sync_settings, wait_for
from fakes.server import json_reply

from connectors.base import MemoryProgress, Misconfigured, RateLimited, Rejected
from connectors.bitrix24 import Bitrix24Client
from connectors.bitrix24.client import WEBHOOK_WARNING, build_client
from connectors.outbox import Outbox
from connectors.sync import SyncWorker
from connectors.targets import Target
from connectors.tokens import MemoryTokenStore, Token
from core.settings import Settings

PHONE = "+79161234567"


def webhook(fake, server) -> Bitrix24Client:
    uid, code = fake.webhook
    return Bitrix24Client(httpx.Client(base_url=f"{server.url}/rest/{uid}/{code}/"),
                          webhook=True)


def test_fake_refuses_register_and_finish_over_a_webhook_with_wrong_auth_type(b24):
    fake, server = b24
    uid, code = fake.webhook
    for method in ("telephony.externalcall.register", "telephony.externalcall.finish"):
        reply = httpx.post(f"{server.url}/rest/{uid}/{code}/{method}.json",
                           json={"USER_ID": 1, "PHONE_NUMBER": PHONE, "TYPE": 2})
        assert reply.status_code == 400 and reply.json()["error"] == "WRONG_AUTH_TYPE"
    # the lookup stays open to a webhook
    found = httpx.post(f"{server.url}/rest/{uid}/{code}/"
                       "telephony.externalCall.searchCrmEntities.json",
                       json={"PHONE_NUMBER": PHONE})
    assert found.status_code == 200 and found.json()["result"] == []


def test_webhook_mode_looks_up_only_and_says_so_at_start(b24, tmp_path, caplog):
    fake, server = b24
    fake.add_entity("John Doe", PHONE, assigned=99)
    uid, code = fake.webhook
    with caplog.at_level(logging.WARNING, "tawag.connectors"):
        client = build_client(Settings(crm_bitrix24_base_url=f"{server.url}/rest/{uid}/{code}/"),
                              None)
    assert WEBHOOK_WARNING in caplog.text and not client.capabilities.call_log
    published: list[tuple] = []
    box = Outbox(tmp_path / "outbox.jsonl")
    worker = SyncWorker([Target(client, {"101": "1269"}, "1")], box, settings=sync_settings(),
                        backoff=FAST, on_contact=lambda *a: published.append(a))
    worker.start()
    try:
        worker.handle_cdr(make_cdr("W1", caller=PHONE))
        wait_for(worker.idle, what="the lookup-only delivery")
    finally:
        worker.stop()
        box.close()
    assert fake.register_requests == [] and box.rejections() == []
    assert published[0][2].responsible_user_id == "99"


def test_a_webhook_asked_for_register_is_misconfigured_not_parked(b24):
    fake, server = b24
    with pytest.raises(Misconfigured, match="WRONG_AUTH_TYPE"):
        webhook(fake, server).call("telephony.externalcall.register",
                                   {"USER_ID": 1, "PHONE_NUMBER": PHONE, "TYPE": 2})


def test_fake_downloads_record_url_itself_and_blocks_a_loopback_link(b24):
    fake, server = b24
    client, _ = b24_client(fake, server, read_recording=None)
    cid = client.call("telephony.externalcall.register",
                      {"USER_ID": 1, "PHONE_NUMBER": PHONE, "TYPE": 2})["CALL_ID"]
    client.call("telephony.externalcall.finish", {"CALL_ID": cid, "USER_ID": 1})
    with pytest.raises(Rejected) as info:
        client.call("telephony.externalCall.attachRecord", {
            "CALL_ID": cid, "FILENAME": "a.mp3",
            "RECORD_URL": "http://127.0.0.1:8502/recordings/a.mp3?expires=1&sig=x"})
    assert "non-public address" in str(info.value) and info.value.permanent


def test_recording_is_uploaded_as_file_content_and_a_private_link_is_never_sent(b24):
    fake, server = b24
    client, _ = b24_client(fake, server)
    client.log_call(make_cdr("R1", recording="2026/11/26/R1.wav"), phone=PHONE, user="1",
                    contact=None, recording_url="http://127.0.0.1:8502/recordings/R1.wav?s=1",
                    progress=MemoryProgress())
    [cid] = fake.call_for("R1")
    assert fake.records[cid]["content"] == b"ID3\x03R1"
    assert fake.records[cid]["FILENAME"] == "R1.wav" and fake.records[cid]["RECORD_URL"] is None
    bare, _ = b24_client(fake, server, read_recording=None)
    bare.log_call(make_cdr("R2"), phone=PHONE, user="1", contact=None,
                  recording_url="http://127.0.0.1:8502/recordings/R2.wav?s=1",
                  progress=MemoryProgress())
    [cid2] = fake.call_for("R2")
    assert cid2 in fake.finished and cid2 not in fake.records  # finished, nothing unusable


def test_operation_time_limit_waits_for_operating_reset_at_and_error_core_is_parked(b24):
    fake, server = b24
    client, _ = b24_client(fake, server, wall=lambda: 1_773_131_000.0)
    fake.faults.add(json_reply(429, {
        "error": "OPERATION_TIME_LIMIT", "error_description": "Method is blocked due to "
        "operation time limit.", "time": {"operating_reset_at": 1_773_131_378}}))
    with pytest.raises(RateLimited) as info:
        client.find_contact(PHONE)
    assert info.value.retry_after == 378.0
    with pytest.raises(Rejected) as core:
        client.call("telephony.externalcall.register", {"PHONE_NUMBER": PHONE, "TYPE": 2})
    assert core.value.code == "ERROR_CORE"
    fake.faults.add(json_reply(403, {"error": "insufficient_scope", "error_description": ""}))
    with pytest.raises(Misconfigured):
        client.find_contact(PHONE)


def test_rest_calls_and_refreshes_follow_the_token_responses_endpoints(b24, tmp_path):
    """``client_endpoint``/``server_endpoint`` of the token response (crm-contracts.md §2.2
    [B14, B15]) name where the pair works: the portal moved (REST base) and the OAuth
    server is not oauth.bitrix.info; the configured URLs are both wrong by now."""
    fake, server = b24
    fake.add_entity("Иван", "+7 916 123-45-67", assigned=1269)
    fake.rest_path, fake.oauth_base = "b24-eu/rest", "oauth-eu/"
    settings = Settings(data_dir=tmp_path, crm_bitrix24_base_url=server.url + "/rest/",
                        crm_bitrix24_oauth_url="http://127.0.0.1:9/oauth/token/",
                        crm_bitrix24_client_id=fake.client_id,
                        crm_bitrix24_client_secret=fake.client_secret)
    store = MemoryTokenStore(Token(*fake.issue_tokens(),  # as saved from the install exchange
                                   client_endpoint=f"{server.url}/b24-eu/rest/",
                                   server_endpoint=f"{server.url}/oauth-eu/rest/"))
    client = build_client(settings, store)
    assert client.find_contact("+79161234567") is not None  # at the token's portal

    fake.rest_path = "b24-new/rest"  # the next pair belongs to the portal's new address
    fake.expire_tokens()
    assert client.find_contact("+79161234567") is not None  # refreshed at oauth-eu
    token = store.load()
    assert token.client_endpoint == f"{server.url}/b24-new/rest/"
    assert token.server_endpoint == f"{server.url}/oauth-eu/rest/"
    assert client.find_contact("+79161234567") is not None  # at the new portal address
