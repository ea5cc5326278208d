"""Webhooks end to end: subscriptions through the API (uvicorn), events fanned out into the
durable outbox, delivered signed to a local receiver that verifies every signature.
Fixed ports: run under ``flock /tmp/tawag-stack.lock``."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections import Counter
from datetime import timedelta
from types import SimpleNamespace
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

import httpx
import pytest
from api_helpers import (
    NOTHING_PORT,
    RECEIVER_PORT,
    T0,
    WEBHOOK_API_PORT,
    Receiver,
    cdr,
    events,
    served_in_thread,
    settings_for,
    wait_until,
)

from api import signing
from api.app import create_app
from api.consume import handle_record
from api.keys import KeyStore, add_key, keys_file
from api.subscriptions import SubscriptionStore, subscriptions_file
from api.webhooks import Webhooks
from connectors.outbox import Outbox
from core.events import Direction, Event, EventType, to_json
from core.records import cdr_to_json

pytestmark = pytest.mark.integration
SECRET = "s3cret-of-the-receiver-0123456789"


def make_hooks(settings, http, **kwargs) -> Webhooks:
    return Webhooks(Outbox(settings.data_dir / "outbox.jsonl", fsync=False),
                    SubscriptionStore(subscriptions_file(settings)), http=http,
                    max_age_s=kwargs.pop("max_age_s", 60), base_s=0.05, cap_s=0.4, **kwargs)


@pytest.fixture
def world(tmp_path):
    """The API with webhooks running in this process; keys of acme and beta."""
    settings = settings_for(tmp_path)
    http = httpx.Client(timeout=2)
    hooks = make_hooks(settings, http)
    app = create_app(settings, client=None, keys=KeyStore(keys_file(settings)),
                     webhooks=hooks, http=http)
    keys = {t: add_key(keys_file(settings), t, ("read", "webhooks:write")) for t in
            ("acme", "beta")}
    receiver = Receiver(RECEIVER_PORT)
    with served_in_thread(app, WEBHOOK_API_PORT) as url:
        yield SimpleNamespace(settings=settings, hooks=hooks, url=url + "/api/v1",
                              keys=keys, receiver=receiver)
    hooks.stop()
    receiver.down()
    http.close()


def api(world, tenant: str) -> httpx.Client:
    return httpx.Client(base_url=world.url, timeout=10,
                        headers={"Authorization": f"Bearer {world.keys[tenant]}"})


def subscribe(world, tenant="acme", **spec) -> dict:
    with api(world, tenant) as http:
        resp = http.post("/webhooks", json={"url": world.receiver.url, **spec})
    assert resp.status_code == 201, resp.text
    return resp.json()


def call_events(n: int, tenant: str = "acme") -> list[Event]:
    return [e for i in range(n) for e in events(tenant, f"w{i}", i)]


def verified_ids(receiver: Receiver, secret: str) -> list[str]:
    """Event ids of the deliveries, each signature checked as a receiver would."""
    ids = []
    for headers, body in receiver.received():
        assert signing.verify(secret, headers["Tawag-Timestamp"], body,
                              headers["Tawag-Signature"], now=time.time())
        assert json.loads(body)["event_id"] == headers["Tawag-Event-Id"]
        ids.append(headers["Tawag-Event-Id"])
    return ids


def test_signed_native_events_and_the_closing_cdr(world):
    world.receiver.up()
    sub = subscribe(world, secret=SECRET, events=["call.answered", "cdr.closed"])
    assert sub["secret"] == SECRET and sub["format"] == "tawag"
    evs = call_events(2)
    for ev in evs:
        world.hooks.handle_event(ev)
    world.hooks.handle_cdr(cdr("acme", "w0", 0))
    expected = ["acme-w0-2", "acme-w1-2", "cdr.closed:w0"]
    wait_until("3 deliveries", lambda: len(world.receiver.received()) == 3, 10)
    assert verified_ids(world.receiver, SECRET) == expected
    # the body is the event's wire form, and the CDR's event carries the CDR
    assert world.receiver.received()[0][1] == to_json(evs[1])
    assert json.loads(world.receiver.received()[2][1])["cdr"]["talk_ms"] == 60000
    with api(world, "acme") as http:
        log = http.get(f"/webhooks/{sub['id']}/deliveries").json()
    assert [(d["event_id"], d["state"], d["attempts"], d["last_status"]) for d in log] == [
        (i, "done", 1, 200) for i in reversed(expected)]


def test_a_tampered_body_fails_verification():
    body = b'{"event_id":"e1"}'
    ts = int(time.time())
    good = signing.sign(SECRET, ts, body)
    assert signing.verify(SECRET, str(ts), body, good, now=time.time())
    assert not signing.verify(SECRET, str(ts), body + b" ", good, now=time.time())
    assert not signing.verify("other-secret-0123456789", str(ts), body, good, now=time.time())
    assert not signing.verify(SECRET, str(ts), body, good, now=time.time() + 3600)  # replayed


def test_receiver_down_then_back_every_event_once_in_order(world):
    sub = subscribe(world, secret=SECRET)  # every event type
    evs = call_events(10)  # 20 events, receiver down
    for ev in evs:
        world.hooks.handle_event(ev)

    def log() -> list[dict]:
        with api(world, "acme") as http:
            return http.get(f"/webhooks/{sub['id']}/deliveries", params={"limit": 1000}).json()

    # the head is retried with backoff while the receiver is down; the rest wait behind it
    head = wait_until("three failed attempts",
                      lambda: next((d for d in log() if d["attempts"] >= 3), None), 15)
    assert head["event_id"] == evs[0].event_id and head["state"] == "pending"
    assert "ConnectError" in head["last_error"] and head["last_status"] is None
    world.receiver.up()
    wait_until("all delivered", lambda: all(d["state"] == "done" for d in log()), 15)
    ids = verified_ids(world.receiver, SECRET)
    assert ids == [e.event_id for e in evs]
    assert Counter(ids).most_common(1)[0][1] == 1
    # a redelivered Kafka message (same event id) is not queued, so not sent, again
    world.hooks.handle_event(evs[3])
    assert world.hooks.outbox.pending(sub["id"]) == []
    assert len(log()) == len(evs)


def test_deliveries_survive_a_restart_of_the_worker(tmp_path):
    """The outbox is durable: what was pending when the worker stopped goes out after."""
    settings = settings_for(tmp_path)
    receiver = Receiver(RECEIVER_PORT)
    with httpx.Client(timeout=2) as http:
        first = make_hooks(settings, http)
        sub = first.subscriptions.add("acme", receiver.url, ("*",), "tawag", SECRET, "UTC")
        for ev in call_events(3):
            first.handle_event(ev)
        wait_until("a failed attempt",
                   lambda: first.deliveries(sub.id)[-1]["attempts"] >= 1, 10)
        first.stop()
        first.outbox.close()
        receiver.up()
        try:
            second = make_hooks(settings, http)
            second.start()
            wait_until("delivered after the restart",
                       lambda: len(receiver.received()) == 6, 10)
            second.stop()
        finally:
            receiver.down()
    assert verified_ids(receiver, SECRET) == [e.event_id for e in call_events(3)]


def test_subscriptions_are_per_tenant(world):
    world.receiver.up()
    sub = subscribe(world, "acme", secret=SECRET)
    with api(world, "beta") as beta:
        assert beta.get("/webhooks").json() == []
        assert beta.get(f"/webhooks/{sub['id']}").status_code == 404
        assert beta.get(f"/webhooks/{sub['id']}/deliveries").status_code == 404
        assert beta.delete(f"/webhooks/{sub['id']}").status_code == 404
    with api(world, "acme") as acme:
        listed = acme.get("/webhooks").json()
        assert [s["id"] for s in listed] == [sub["id"]] and "secret" not in listed[0]
    for ev in call_events(1, tenant="beta") + call_events(1):
        world.hooks.handle_event(ev)
    wait_until("acme's deliveries", lambda: len(world.receiver.received()) == 2, 10)
    assert verified_ids(world.receiver, SECRET) == ["acme-w0-1", "acme-w0-2"]
    assert {e.call_id for e in world.hooks.outbox.entries()} == {"acme-w0-1", "acme-w0-2"}
    with api(world, "acme") as acme:
        assert acme.delete(f"/webhooks/{sub['id']}").status_code == 204
        assert acme.get("/webhooks").json() == []


def test_bad_subscriptions_are_refused(world):
    with api(world, "acme") as http:
        for spec in ({"url": "not a url"}, {"url": world.receiver.url, "events": ["nope"]},
                     {"url": world.receiver.url, "timezone": "Mars/Olympus"},
                     {"url": world.receiver.url, "secret": "short"}):
            resp = http.post("/webhooks", json=spec)
            assert resp.status_code == 422, spec
            assert resp.headers["content-type"] == "application/problem+json"
    read_only = add_key(keys_file(world.settings), "acme", ("read",))
    with httpx.Client(base_url=world.url, headers={"Authorization": f"Bearer {read_only}"}) \
            as http:
        assert http.post("/webhooks", json={"url": world.receiver.url}).status_code == 403


def test_the_kafka_records_fan_out_once(world):
    """What the Kafka loop hands over (api.consume.handle_record): events and CDRs of both
    topics; a re-read record (a crash before the commit) enqueues nothing twice."""
    world.receiver.up()
    sub = subscribe(world, secret=SECRET)
    topic_events, topic_cdrs = world.settings.topic_call_events, world.settings.topic_cdrs
    records = [SimpleNamespace(topic=topic_events, offset=i, value=to_json(e))
               for i, e in enumerate(call_events(1))]
    records.append(SimpleNamespace(topic=topic_cdrs, offset=0,
                                   value=cdr_to_json(cdr("acme", "w0", 0))))
    records.append(SimpleNamespace(topic=topic_events, offset=9, value=b"not json"))
    for record in records + records:
        handle_record(world.hooks, world.settings, record)
    wait_until("3 deliveries", lambda: len(world.hooks.outbox.pending(sub["id"])) == 0
               and len(world.receiver.received()) == 3, 10)
    assert verified_ids(world.receiver, SECRET) == ["acme-w0-1", "acme-w0-2", "cdr.closed:w0"]


def test_a_slow_receiver_holds_up_only_its_own_deliveries(world):
    """Each subscription delivers in its own thread: while every attempt to a receiver
    that never answers waits out its timeout (2 s here), another gets all its events."""
    world.receiver.up()
    slow = subscribe(world, url="http://10.255.255.1/hook", secret=SECRET)  # unroutable
    subscribe(world, secret=SECRET)
    evs = [Event(f"x{i}", EventType.CALL_OFFERED, "acme", T0 + timedelta(seconds=i), "t",
                 call_id=f"x{i}", direction=Direction.INBOUND) for i in range(20)]
    for ev in evs:
        world.hooks.handle_event(ev)
    wait_until("the fast receiver's 20", lambda: len(world.receiver.received()) == 20, 10)
    assert verified_ids(world.receiver, SECRET) == [e.event_id for e in evs]
    assert len(world.hooks.outbox.pending(slow["id"])) == 20  # none reached it


def zadarma_receiver_accepts(headers: dict[str, str], body: bytes, secret: str) -> bool:
    """A receiver written from Zadarma's documentation only (crm-contracts.md §4.1): read
    the form ($_POST), rebuild the event's signed string, compare base64(hex(HMAC-SHA1))."""
    post = dict(parse_qsl(body.decode(), keep_blank_values=True))
    signed_fields = {"NOTIFY_START": "caller_id called_did call_start",
                     "NOTIFY_INTERNAL": "caller_id called_did call_start",
                     "NOTIFY_ANSWER": "caller_id destination call_start",
                     "NOTIFY_END": "caller_id called_did call_start",
                     "NOTIFY_OUT_START": "internal destination call_start",
                     "NOTIFY_OUT_END": "internal destination call_start",
                     "NOTIFY_RECORD": "pbx_call_id call_id_with_rec"}[post["event"]]
    signed = "".join(post[name] for name in signed_fields.split())
    hexdigest = hmac.new(secret.encode(), signed.encode(), hashlib.sha1).hexdigest()
    return headers.get("Signature") == base64.b64encode(hexdigest.encode()).decode() and \
        headers["Content-Type"] == "application/x-www-form-urlencoded"


def test_a_zadarma_subscription_is_verified_and_gets_signed_notifications(world):
    world.receiver.up()
    sub = subscribe(world, format="zadarma", secret=SECRET, timezone="Europe/Moscow")
    assert sub["format"] == "zadarma"
    for ev in call_events(1):  # offered, answered
        world.hooks.handle_event(ev)
    world.hooks.handle_cdr(cdr("acme", "w0", 0))
    wait_until("3 notifications", lambda: len(world.receiver.received()) == 3, 10)
    received = world.receiver.received()
    assert all(zadarma_receiver_accepts(h, b, SECRET) for h, b in received)
    forms = [dict(parse_qsl(b.decode(), keep_blank_values=True)) for _, b in received]
    assert [f["event"] for f in forms] == ["NOTIFY_START", "NOTIFY_ANSWER", "NOTIFY_END"]
    local = T0.astimezone(ZoneInfo("Europe/Moscow")).strftime("%Y-%m-%d %H:%M:%S")
    assert {f["call_start"] for f in forms} == {local}
    assert not zadarma_receiver_accepts(received[0][0], received[0][1], "another-secret")


def test_a_zadarma_url_that_does_not_echo_is_refused(world):
    with api(world, "acme") as http:
        resp = http.post("/webhooks", json={"url": f"http://127.0.0.1:{NOTHING_PORT}/hook",
                                            "format": "zadarma"})
    assert resp.status_code == 422
    assert resp.json()["type"].endswith("/url-verification-failed")
    assert "zd_echo" in resp.json()["detail"]
