"""The outbox across a SIGKILL: nothing lost, nothing duplicated in any CRM.

What is tried: ten closed calls are in the outbox; a worker *process* delivers them to
the three fakes. Each fake applies the K-th call (amoCRM ``POST /calls``, Bitrix24
``finish``, 1C ``POST Document_ТелефонныйЗвонок``) and then holds its answer, so the
worker is killed (SIGKILL, no cleanup) at the worst moment: the CRM has the call, the
journal does not know. A fresh worker on the same journal then finishes the job.

How it stays exactly-once: amoCRM refuses the resent ``uniq`` (counted as delivered);
Bitrix24's CALL_ID was journalled before ``finish`` and a resent finish that finds the
call already finished is accepted; 1C is asked for the document by its marker before
any second POST.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from crm_helpers import (
    AMO_USERS,
    B24_USERS,
    FAST,
    MANAGER_1,
    ONEC_USERS,
    inbound_call,
    wait_for,
)
from fakes.onec import PREFIX

from connectors.outbox import Outbox
from connectors.sync import SyncWorker
from connectors.tokens import FileTokenStore, Token
from connectors.wiring import build_targets
from core.settings import Settings, to_environ

ROOT = Path(__file__).resolve().parents[2]
K, N = 4, 10
KNOWN = "+79161234567"


def config(tmp_path: Path, amo, b24, onec) -> Settings:
    return Settings(
        data_dir=tmp_path, crm_enabled=("amocrm", "bitrix24", "onec"),
        crm_amocrm_base_url=amo[1].url, crm_amocrm_client_id=amo[0].client_id,
        crm_amocrm_client_secret=amo[0].client_secret, crm_amocrm_users=AMO_USERS,
        crm_amocrm_default_user="8000",
        crm_bitrix24_base_url=b24[1].url + "/rest/",
        crm_bitrix24_oauth_url=b24[1].url + "/oauth/token/",
        crm_bitrix24_client_id=b24[0].client_id,
        crm_bitrix24_client_secret=b24[0].client_secret,
        crm_bitrix24_users=B24_USERS, crm_bitrix24_default_user="1",
        crm_onec_base_url=onec[1].url + PREFIX, crm_onec_user=onec[0].user,
        crm_onec_password=onec[0].password, crm_onec_users=ONEC_USERS,
        crm_recording_wait_s=0.0)


def test_worker_killed_mid_batch_loses_and_duplicates_nothing(amo, b24, onec, tmp_path):
    fa, fb, fo = amo[0], b24[0], onec[0]
    fa.add_contact("Иван", "+7 916 123-45-67", responsible=504141)
    fb.add_entity("Иван", "+7 916 123-45-67", assigned=99)
    fo.add_party("ООО «Ромашка»", "79161234567", manager=MANAGER_1)
    cfg = config(tmp_path, amo, b24, onec)
    FileTokenStore(cfg.connectors_dir / "amocrm-token.json").save(Token(*fa.issue_tokens()))
    FileTokenStore(cfg.connectors_dir / "bitrix24-token.json").save(Token(*fb.issue_tokens()))
    ids = [f"K{n:02d}" for n in range(N)]
    box = Outbox(cfg.connectors_dir / "outbox.jsonl")
    enqueuer = SyncWorker(build_targets(cfg), box, settings=cfg)
    for call_id in ids:
        for cdr in inbound_call(call_id, KNOWN)[1]:
            enqueuer.handle_cdr(cdr)
    box.close()

    fa.hold = lambda req: req.path == "/api/v4/calls" and len(fa.calls) == K
    fb.hold = lambda req: req.path.lower().endswith("finish") and len(fb.finished) == K
    fo.hold = lambda req: req.method == "POST" and len(fo.documents) == K
    env = {**os.environ, **to_environ(cfg), "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, str(Path(__file__).with_name("sync_child.py"))],
                             cwd=ROOT, env=env, stdout=subprocess.PIPE)
    try:
        wait_for(lambda: len(fa.calls) == K and len(fb.finished) == K and len(fo.documents) == K,
                 timeout=30, what="the K-th call applied in every CRM")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    fa.hold = fb.hold = fo.hold = None

    box = Outbox(cfg.connectors_dir / "outbox.jsonl")
    assert len(box.pending()) == 3 * (N - K + 1)  # the in-flight K-th call is still pending
    worker = SyncWorker(build_targets(cfg), box, settings=cfg, backoff=FAST)
    worker.start()
    try:
        wait_for(worker.idle, timeout=30, what="the rest delivered after restart")
    finally:
        worker.stop()
        box.close()

    in_flight = ids[K - 1]
    assert [c["uniq"] for c in fa.calls] == ids
    # uniq deduplicates nothing: the journalled call_sent made the restart look first
    assert fa.call_posts.count(in_flight) == 1 and len(fa.notes) == N
    assert [row["EXTERNAL_CALL_ID"] for row in fb.finished.values()] == ids
    assert len(fb.register_requests) == N  # CALL_ID was journalled: no second register
    assert [d["Комментарий"] for d in fo.documents.values()] == [f"tawag:{i}" for i in ids]
    assert fo.posts == N  # the marker lookup found the K-th document: no second POST
