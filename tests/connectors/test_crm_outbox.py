"""The outbox journal: idempotent keys, replay after restart, torn tails, compaction, rejections."""

from __future__ import annotations

import json

from connectors.outbox import Outbox, list_rejections


def test_enqueue_is_idempotent_per_crm_kind_and_call(tmp_path):
    box = Outbox(tmp_path / "o.jsonl")
    assert box.enqueue("amocrm", "log", "c1", {"n": 1})
    assert not box.enqueue("amocrm", "log", "c1", {"n": 2})  # a redelivered CDR revision
    assert box.enqueue("bitrix24", "log", "c1", {"n": 1})
    assert [e.data["n"] for e in box.pending("amocrm")] == [1]


def test_state_survives_a_restart_in_order_with_progress(tmp_path):
    path = tmp_path / "o.jsonl"
    box = Outbox(path)
    for n in range(3):
        box.enqueue("amocrm", "log", f"c{n}", {"n": n})
    head = box.head("amocrm")
    box.progress(head).set("contact", {"id": "1"})
    box.mark_done(head)
    box.progress(box.head("amocrm")).set("call_logged", True)
    box.set_mark("task|amocrm|+7916", "55")
    box.close()
    again = Outbox(path)
    assert [e.call_id for e in again.pending("amocrm")] == ["c1", "c2"]
    assert again.head("amocrm").progress == {"call_logged": True}
    assert again.mark("task|amocrm|+7916") == "55"
    assert not again.enqueue("amocrm", "log", "c0", {})  # delivered keys are remembered


def test_a_torn_last_line_is_ignored(tmp_path):
    path = tmp_path / "o.jsonl"
    box = Outbox(path)
    box.enqueue("amocrm", "log", "c1", {})
    box.close()
    with open(path, "a") as journal:
        journal.write('{"op":"add","id":2,"crm":"amo')  # killed mid-write
    again = Outbox(path)
    assert [e.call_id for e in again.pending()] == ["c1"]


def test_compaction_drops_delivered_payloads_but_keeps_keys_and_rejections(tmp_path):
    path = tmp_path / "o.jsonl"
    box = Outbox(path)
    box.enqueue("amocrm", "log", "c1", {"cdr": "x" * 1000})
    box.enqueue("amocrm", "log", "c2", {"cdr": "y"})
    box.enqueue("amocrm", "log", "c3", {"cdr": "z"})
    box.mark_done(box.head("amocrm"))
    box.mark_rejected(box.head("amocrm"), "amoCRM refused", {"detail": "Entity not found"})
    box.compact()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 3 and lines[0]["data"] == {}
    box.close()
    again = Outbox(path)
    assert [e.call_id for e in again.pending()] == ["c3"]
    assert not again.enqueue("amocrm", "log", "c1", {})
    again.close()
    [rejection] = list_rejections(path)
    assert rejection["call_id"] == "c2" and rejection["body"] == {"detail": "Entity not found"}
