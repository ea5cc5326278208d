"""The edge's steering request (api.steering): the tenant's Zadarma-format NOTIFY_START
receiver decides where a carrier call goes, within a bounded wait, and its NOTIFY_START is
not sent a second time by the webhook worker. The API runs on uvicorn in this process,
the receiver is a local HTTP server. Fixed ports: run under ``flock /tmp/tawag-stack.lock``.
"""

from __future__ import annotations

import threading
from types import SimpleNamespace
from urllib.parse import parse_qsl

import httpx
import pytest
from api_helpers import (
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
from test_webhooks import make_hooks, zadarma_receiver_accepts

from api.app import create_app
from api.keys import KeyStore, add_key, keys_file
from api.steering import Steer, decision
from edge.control import steer_token

pytestmark = pytest.mark.integration
SECRET = "steering-secret-0123456789abcdef"
WAIT_S = 0.5


@pytest.mark.parametrize(("answer", "steer"), [
    ({"redirect": "102"}, Steer("ext:102")),
    ({"redirect": 102}, Steer("ext:102")),
    ({"redirect": "blacklist"}, Steer("refuse:webhook_blacklist")),
    ({"hangup": 1}, Steer("refuse:webhook_hangup")),
    ({"hangup": 1, "redirect": "102"}, Steer("refuse:webhook_hangup")),
    ({"caller_name": "ООО Ромашка"}, Steer(caller_name="ООО Ромашка")),
    ({"redirect": "103", "caller_name": ' "VIP"\r\nX: y '}, Steer("ext:103", "VIPX: y")),
    ({"redirect": "blacklist", "caller_name": "Spam"}, Steer("refuse:webhook_blacklist")),
    # Zadarma's scenario and menu redirects have no counterpart: routed as provisioned
    ({"redirect": "0-1"}, Steer()),
    ({"redirect": "0-main"}, Steer()),
    ({"redirect": "sip:evil@example.com"}, Steer()),
    ({"redirect": True}, Steer()),
    ({"ivr_play": "file-1"}, Steer()),
    (["redirect", "102"], Steer()),
    (None, Steer()),
])
def test_an_answer_becomes_a_steer(answer, steer):
    assert decision(answer) == steer


@pytest.fixture
def world(tmp_path):
    settings = settings_for(tmp_path, steer_wait_s=WAIT_S)
    http = httpx.Client(timeout=2)
    hooks = make_hooks(settings, http)
    app = create_app(settings, client=None, keys=KeyStore(keys_file(settings)),
                     webhooks=hooks, http=http)
    key = add_key(keys_file(settings), "acme", ("read", "webhooks:write"))
    receiver = Receiver(RECEIVER_PORT)
    receiver.up()
    with served_in_thread(app, WEBHOOK_API_PORT) as url:
        yield SimpleNamespace(settings=settings, hooks=hooks, url=url, key=key,
                              receiver=receiver, edge=("edge", steer_token(settings)))
    if receiver.hold is not None:
        receiver.hold.set()
    hooks.stop()
    receiver.down()
    http.close()


def subscribe(world, **spec) -> dict:
    resp = httpx.post(world.url + "/api/v1/webhooks", timeout=10,
                      headers={"Authorization": f"Bearer {world.key}"},
                      json={"url": world.receiver.url, "format": "zadarma",
                            "secret": SECRET, "timezone": "Europe/Moscow", **spec})
    assert resp.status_code == 201, resp.text
    return resp.json()


def ask(world, call_id: str = "s1", auth: tuple[str, str] | None = None) -> httpx.Response:
    """What route[STEER] sends (sip-edge/kamailio.cfg)."""
    return httpx.post(world.url + "/internal/steer", auth=auth or world.edge, timeout=10,
                      json={"domain": "", "call_id": call_id, "caller": "74951234567",
                            "did": "74950000001", "ts": T0.timestamp()})


def forms(receiver: Receiver) -> list[dict[str, str]]:
    return [dict(parse_qsl(body.decode(), keep_blank_values=True))
            for _, body in receiver.received()]


def test_only_the_edge_may_ask(world):
    assert ask(world, auth=("edge", "not-the-token")).status_code == 401
    assert ask(world, auth=("someone", world.edge[1])).status_code == 401
    assert httpx.post(world.url + "/internal/steer", json={}).status_code == 401
    assert ask(world).status_code == 200


def test_without_a_steering_subscription_the_call_is_routed_as_provisioned(world):
    subscribe(world, events=["NOTIFY_END"])  # a Zadarma receiver that does not steer
    assert ask(world).json() == {"steering": 0}  # the edge stops asking for a while
    assert world.receiver.received() == []


def test_the_receivers_answer_steers_and_its_notify_start_is_not_sent_twice(world):
    subscribe(world)
    world.receiver.answer = b'{"redirect": "102", "caller_name": "Acme"}'

    assert ask(world).json() == {"target": "ext:102", "caller_name": "Acme"}

    (headers, body), = world.receiver.received()
    assert zadarma_receiver_accepts(headers, body, SECRET)
    start, = forms(world.receiver)
    assert start["event"] == "NOTIFY_START" and start["caller_id"] == "74951234567"
    # then the call's events come through Kafka: offered (its NOTIFY_START was sent
    # above), answered, and the CDR; the worker delivers in order per subscription, so
    # once NOTIFY_END is in, a second NOTIFY_START would be too
    for ev in events("acme", "s1", 0):
        world.hooks.handle_event(ev)
    world.hooks.handle_cdr(cdr("acme", "s1", 0))
    wait_until("NOTIFY_END", lambda: "NOTIFY_END" in [f["event"] for f in
                                                       forms(world.receiver)], 10)
    received = forms(world.receiver)
    assert [f["event"] for f in received] == ["NOTIFY_START", "NOTIFY_ANSWER", "NOTIFY_END"]
    assert {f["call_start"] for f in received} == {start["call_start"]}


def test_a_slow_receiver_leaves_the_call_to_normal_routing_and_gets_its_start_later(world):
    subscribe(world)
    world.receiver.hold = threading.Event()
    world.receiver.answer = b'{"redirect": "102"}'

    assert ask(world).json() == {}  # the API stopped waiting after WAIT_S

    world.receiver.hold.set()
    for ev in events("acme", "s1", 0):
        world.hooks.handle_event(ev)
    # the steering attempt failed, so the worker delivers NOTIFY_START (at least once)
    wait_until("NOTIFY_START from the worker",
               lambda: [f["event"] for f in forms(world.receiver)].count("NOTIFY_START") == 2,
               10)


def test_a_receiver_that_is_down_steers_nothing(world):
    subscribe(world)
    world.receiver.down()
    assert ask(world, "s2").json() == {}
