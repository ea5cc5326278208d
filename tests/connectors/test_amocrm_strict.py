"""amoCRM against a fake as strict as a real account (issue 19, items 3, 4, 5).

Sources: Kommo call-logging docs ("our API does not regulate the identity of calls":
``uniq`` deduplicates nothing), Kommo incoming-leads docs (an incoming lead's contact takes
nothing until accepted; a second incoming lead for a pending number is refused), amoCRM's
error reference (403 no rights, 402 unpaid; crm-contracts.md [A17]) and the Limitations
page (repeated 429s escalate to a 403 block, [A6]).
"""

from __future__ import annotations

import httpx
import pytest
from crm_helpers import FAST, amo_client, make_cdr, sync_settings, targets_for, wait_for
from metrics_scrape import scrape, value

from connectors.amocrm import AmoCrmClient
from connectors.base import MemoryProgress, Misconfigured, RateLimited, Rejected, Unavailable
from connectors.outbox import Outbox, list_rejections
from connectors.sync import SyncWorker
from core.metrics import serve
from core.records import Disposition

PHONE = "+79161234567"


def test_fake_adds_a_second_call_for_a_repeated_uniq(amo):
    """The invented "Call with this uniq already exists" is gone: a plain resend doubles."""
    fake, server = amo
    fake.add_contact("Иван", PHONE, responsible=504141)
    client, _ = amo_client(fake, server)
    for _ in range(2):
        client.log_call(make_cdr("u-1"), phone=PHONE, user=None, contact=None,
                        recording_url=None, progress=MemoryProgress())
    assert [c["uniq"] for c in fake.calls] == ["u-1", "u-1"] and len(fake.notes) == 2


def test_resend_after_a_timeout_gives_one_call_note(amo):
    fake, server = amo
    fake.add_contact("Иван", PHONE, responsible=504141, lead_ids=(9774766,))
    held: list[str] = []

    def hold(req) -> bool:  # amoCRM applies the call, its answer never arrives in time
        if req.path == "/api/v4/calls" and not held:
            held.append(req.path)
            return True
        return False

    fake.hold = hold
    client, _ = amo_client(fake, server)
    client._http.timeout = httpx.Timeout(1.0)
    contact = client.find_contact(PHONE)
    progress = MemoryProgress()
    with pytest.raises(Unavailable):
        client.log_call(make_cdr("t-1"), phone=PHONE, user=None, contact=contact,
                        recording_url=None, progress=progress)
    client.log_call(make_cdr("t-1"), phone=PHONE, user=None, contact=contact,
                    recording_url=None, progress=progress)
    assert fake.call_posts == ["t-1"] and len(fake.notes) == 1
    assert progress["call_id"] == str(fake.notes[0]["id"])


def test_incoming_lead_carries_the_call_and_a_second_one_is_refused_and_parked(amo):
    fake, server = amo
    client, _ = amo_client(fake, server)
    first = make_cdr("in-1", disposition=Disposition.NO_ANSWER)
    lead = client.create_lead_for_unknown(first, phone=PHONE, user=None, recording_url=None)
    client.log_call(first, phone=PHONE, user=None, contact=lead, recording_url=None,
                    progress=MemoryProgress())
    assert fake.calls == [] and fake.unsorted[0]["metadata"]["uniq"] == "in-1"
    assert client.find_contact(PHONE) is None  # the unsorted contact is not usable
    with pytest.raises(Rejected) as info:
        client.create_lead_for_unknown(make_cdr("in-2"), phone=PHONE, user=None,
                                       recording_url=None)
    assert info.value.permanent and info.value.status == 400
    fake.accept_unsorted(int(lead.id))
    assert client.find_contact(PHONE).id == lead.id


def test_403_without_429s_is_parked_and_the_queue_moves_on_visible_in_metrics(amo, tmp_path):
    fake, server = amo
    fake.add_contact("Иван", PHONE, responsible=504141)
    fake.add_contact("Пётр", "+79160000001", responsible=504141)
    fake.forbidden.add("9160000001")
    path = tmp_path / "outbox.jsonl"
    box = Outbox(path)
    worker = SyncWorker(targets_for(amo=amo), box, settings=sync_settings(), backoff=FAST)
    metrics = serve("127.0.0.1", 0, "connectors")
    worker.start()
    try:
        worker.handle_cdr(make_cdr("F1", caller="+79160000001"))
        worker.handle_cdr(make_cdr("F2", caller=PHONE))
        wait_for(worker.idle, timeout=30, what="deliveries")
        scraped = scrape(metrics.url)
    finally:
        worker.stop()
        box.close()
        metrics.stop()
    assert [c["uniq"] for c in fake.calls] == ["F2"]
    [parked] = list_rejections(path)
    assert parked["call_id"] == "F1" and parked["code"] == "403"
    assert "Access denied" in parked["error"]
    assert value(scraped, "tawag_crm_parked", crm="amocrm", code="403") == 1


def unit(status: int) -> AmoCrmClient:
    from test_crm_clients_unit import amo

    return amo(lambda r: httpx.Response(status, json={"status": status, "detail": "x"}))[0]


def test_403_after_a_429_is_the_account_block_and_402_waits_for_an_operator():
    from test_crm_clients_unit import amo

    answers = iter([httpx.Response(429), httpx.Response(403, json={"detail": "blocked"})])
    client = amo(lambda r: next(answers))[0]
    with pytest.raises(RateLimited):
        client.find_contact(PHONE)
    with pytest.raises(RateLimited) as info:
        client.find_contact(PHONE)
    assert info.value.retry_after == 60.0
    with pytest.raises(Rejected):
        unit(403).find_contact(PHONE)
    with pytest.raises(Misconfigured):
        unit(402).find_contact(PHONE)
