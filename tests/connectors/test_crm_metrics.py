"""The connectors' metrics endpoint after real deliveries to the amoCRM fake: calls
delivered per CRM and step, the outbox's depth while the CRM is down, 429s, retries,
a permanent rejection, and screen-pops."""

from __future__ import annotations

from crm_helpers import FAST, inbound_call, make_cdr, sync_settings, targets_for, wait_for
from fakes.server import Reply
from metrics_scrape import scrape, total, value

from connectors.outbox import Outbox
from connectors.sync import SyncWorker
from core.metrics import serve

KNOWN = "+79161234567"  # a contact of the fakes


def feed(worker, events, cdrs):
    for ev in events:
        worker.handle_event(ev)
    for cdr in cdrs:
        worker.handle_cdr(cdr)


def test_deliveries_failures_retries_429s_and_outbox_depth_are_scraped(amo, tmp_path):
    fake, server = amo
    fake.add_contact("Иван", KNOWN, responsible=504141)
    box = Outbox(tmp_path / "outbox.jsonl")
    worker = SyncWorker(targets_for(amo=amo), box, settings=sync_settings(), backoff=FAST)
    metrics = serve("127.0.0.1", 0, "connectors")
    before = scrape(metrics.url)
    worker.start()
    try:
        server.stop()  # the CRM is down: deliveries wait in the outbox
        for call_id in ("M1", "M2"):
            feed(worker, *inbound_call(call_id, KNOWN))
        wait_for(lambda: len(box.pending("amocrm")) == 2, what="queued while down")
        down = scrape(metrics.url)
        fake.faults.add(Reply(429), 3)
        server.start()
        wait_for(worker.idle, timeout=30, what="deliveries after the outage")
        # an outbound call to a number amoCRM has no contact for: rejected for good
        worker.handle_cdr(make_cdr("X", direction="outbound", caller="101",
                                   callee="+74990000000", agent="101"))
        wait_for(worker.idle, timeout=30, what="the rejection")
        after = scrape(metrics.url)
    finally:
        worker.stop()
        box.close()
        metrics.stop()

    def delta(name, **labels):
        return total(after, name, **labels) - total(before, name, **labels)

    assert value(down, "tawag_crm_outbox_depth", crm="amocrm") == 2
    assert value(after, "tawag_crm_outbox_depth", crm="amocrm") == 0
    assert delta("tawag_crm_deliveries_total", crm="amocrm", step="log") == 2
    assert delta("tawag_crm_delivery_failures_total", crm="amocrm", step="log",
                 reason="rejected") == 1
    assert delta("tawag_crm_delivery_failures_total", crm="amocrm",
                 reason="unavailable") >= 1  # connection refused while down
    assert delta("tawag_crm_rate_limited_total", crm="amocrm") == 3
    assert delta("tawag_crm_retries_total", crm="amocrm") == delta(
        "tawag_crm_delivery_failures_total", crm="amocrm") - 1  # all but the rejection
    assert delta("tawag_crm_screen_pops_total", crm="amocrm") >= 1
    assert [c["uniq"] for c in fake.calls] == ["M1", "M2"]
