"""Bitrix24 across a connectors restart: one call stays one Bitrix24 call (issue 19).

Bitrix24's register dedup key includes USER_ID (crm-contracts.md §2.4): the screen-pop
registers a call for the extension that rings first, the call log knows who answered.
Without the journalled registration a restart between the two made the log register
again for the answering user -- a second Bitrix24 call, the first left open. The fake
keeps the real key, so it shows exactly that.
"""

from __future__ import annotations

from pathlib import Path

from crm_helpers import FAST, inbound_call, sync_settings, wait_for

from connectors.bitrix24.registrations import Registrations
from connectors.outbox import Outbox
from connectors.sync import SyncWorker
from connectors.tokens import FileTokenStore, Token
from connectors.wiring import build_targets

USERS = {"102": "1270", "103": "1271"}
KNOWN = "+79161234567"


def settings_for(fake, server, tmp_path: Path):
    cfg = sync_settings(data_dir=tmp_path, crm_enabled=("bitrix24",),
                        crm_bitrix24_base_url=server.url + "/rest/",
                        crm_bitrix24_oauth_url=server.url + "/oauth/token/",
                        crm_bitrix24_client_id=fake.client_id,
                        crm_bitrix24_client_secret=fake.client_secret,
                        crm_bitrix24_users=USERS, crm_bitrix24_default_user="1")
    FileTokenStore(cfg.connectors_dir / "bitrix24-token.json").save(Token(*fake.issue_tokens()))
    return cfg


def started_worker(cfg) -> SyncWorker:
    """A connectors worker as ``tawag connectors`` builds it (a fresh process's state)."""
    worker = SyncWorker(build_targets(cfg), Outbox(cfg.connectors_dir / "outbox.jsonl"),
                        settings=cfg, backoff=FAST)
    worker.start()
    return worker


def stopped(worker: SyncWorker) -> None:
    worker.stop()
    worker.outbox.close()


def test_call_popped_for_one_user_and_answered_by_another_is_one_call_across_a_restart(
        b24, tmp_path):
    fake, server = b24
    fake.add_entity("Иван", "+7 916 123-45-67", assigned=1271)
    cfg = settings_for(fake, server, tmp_path)
    events, cdrs = inbound_call("R1", KNOWN, ring=("103",), answer="102")

    first = started_worker(cfg)
    try:
        for ev in events[:2]:  # offered, ringing 103: the card pops for 103's user
            first.handle_event(ev)
        [popped] = wait_for(lambda: list(fake.registrations), what="the screen-pop register")
    finally:
        stopped(first)  # the connectors restart before the call closes

    second = started_worker(cfg)
    try:
        second.handle_cdr(cdrs[-1])  # answered by 102 (user 1270)
        wait_for(second.idle, what="the call log after the restart")
    finally:
        stopped(second)
    assert list(fake.registrations) == [popped]  # one Bitrix24 call, not two
    assert [r["USER_ID"] for r in fake.register_requests] == [1271]
    [(b24_id, row)] = fake.finished.items()
    assert b24_id == popped and row["EXTERNAL_CALL_ID"] == "R1"
    # finished: the journal forgets the call (the next open starts from an empty file)
    assert Registrations(cfg.connectors_dir / "bitrix24-registrations.jsonl").get("R1") is None


def test_register_answer_lost_then_restart_repeats_the_same_key_and_gets_the_same_call(
        b24, tmp_path):
    fake, server = b24
    cfg = settings_for(fake, server, tmp_path)
    [target] = build_targets(cfg)
    _, cdrs = inbound_call("R2", KNOWN, ring=("103",), answer="102")
    from connectors.base import RingingCall

    target.client.screen_pop(RingingCall("R2", KNOWN, "inbound", 0.0, users=("1271",)))
    [popped] = list(fake.registrations)
    # as if the register's answer had been lost: the journal knows the user, not the CALL_ID
    Registrations(cfg.connectors_dir / "bitrix24-registrations.jsonl").record("R2", user="1271")

    worker = started_worker(cfg)
    try:
        worker.handle_cdr(cdrs[-1])
        wait_for(worker.idle, what="the call log")
    finally:
        stopped(worker)
    assert [r["USER_ID"] for r in fake.register_requests] == [1271, 1271]
    assert list(fake.registrations) == [popped] and list(fake.finished) == [popped]
