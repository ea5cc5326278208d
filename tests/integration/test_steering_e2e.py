"""A Zadarma integration steers real carrier calls (issue 16 §3): its NOTIFY_START
receiver's answer redirects the call, black-lists the caller or names it, and when the
receiver is down the call is routed as provisioned.

The stack (``tawag up``'s supervisor, the API included) runs on the port block 17000 with
RTP on 45500+. The tenant's DID goes to extension 101 by provisioning; 101 and 102 are
sipp callees registered with digest auth; the carrier is a trunk source. The receiver
(tests/api's Receiver, port 17190) is subscribed through the public API in Zadarma
format, after answering its ``zd_echo`` check.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qsl

import httpx
import pytest
from stack_harness import running_stack, stack_settings, wait_for

from api.keys import add_key, keys_file
from edge import sipp
from warehouse.client import HttpClient, service_client
from warehouse.queries.routing import call_decisions

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))
from api_helpers import Receiver  # noqa: E402

pytestmark = pytest.mark.integration

BLOCK, RTP_MIN = 17000, 45500
TENANT, DOMAIN = "acme", "pbx.test"
DID = "74951239001"
CALLER = "+79160000088"
CARRIER_PORT, RECEIVER_PORT = BLOCK + 110, BLOCK + 190
PASSWORDS = {"101": "steer-101", "102": "steer-102"}
CONTACT_PORTS = {"101": BLOCK + 101, "102": BLOCK + 102}
MEDIA_PORTS = iter(range(RTP_MIN + 600, RTP_MIN + 2000, 4))
SECRET = "zadarma-account-secret-0123456789"
PIPELINE_S = 60

PROVISIONING = f"""
[tenant.{TENANT}]
domain = "{DOMAIN}"
time_zone = "Europe/Moscow"
trunk_sources = ["127.0.0.1:{CARRIER_PORT}"]

[tenant.{TENANT}.extension.101]
password = "{PASSWORDS['101']}"

[tenant.{TENANT}.extension.102]
password = "{PASSWORDS['102']}"

[tenant.{TENANT}.did."{DID}"]
to = "ext:101"
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    settings = stack_settings(tmp_path_factory, "steer", block=BLOCK, rtp_min=RTP_MIN,
                              provisioning=PROVISIONING)
    receiver = Receiver(RECEIVER_PORT)
    receiver.up()
    with running_stack(settings):
        key = add_key(keys_file(settings), TENANT, ("read", "webhooks:write"))
        resp = httpx.post(f"http://127.0.0.1:{settings.api_port}/api/v1/webhooks",
                          headers={"Authorization": f"Bearer {key}"}, timeout=10,
                          json={"url": receiver.url, "format": "zadarma", "secret": SECRET,
                                "timezone": "Europe/Moscow"})
        assert resp.status_code == 201, resp.text
        edge = sipp.Edge.from_settings(settings, tmp_path_factory.mktemp("sipp"))
        for agent, port in CONTACT_PORTS.items():
            registered = sipp.register(edge, agent, port=port, password=PASSWORDS[agent])
            assert registered.ok, registered.received()
        yield SimpleNamespace(settings=settings, sip=edge, receiver=receiver,
                              warehouse=service_client(settings))
    receiver.down()


@pytest.fixture
def phones() -> Iterator[list[sipp.Uas]]:
    started: list[sipp.Uas] = []
    yield started
    for one in started:
        one.stop()


def answering(world: SimpleNamespace, agent: str) -> sipp.Uas:
    return sipp.start_uas_answer(world.sip, port=CONTACT_PORTS[agent],
                                 media_port=next(MEDIA_PORTS), ring_ms=200)


def notifications(receiver: Receiver, event: str) -> list[dict[str, str]]:
    forms = [dict(parse_qsl(body.decode(), keep_blank_values=True))
             for _, body in receiver.received()]
    return [f for f in forms if f["event"] == event]


def closed(client: HttpClient, call_id: str | None) -> dict:
    def row() -> dict | None:
        rows = client.query("SELECT disposition, agent, sip_code, closed FROM cdrs FINAL "
                            "WHERE tenant = {t:String} AND call_id = {c:String}",
                            {"t": TENANT, "c": call_id or ""})
        return rows[0] if rows and rows[0]["closed"] else None
    return wait_for(f"the closed CDR of {call_id}", row, PIPELINE_S)


def decisions(client: HttpClient, call_id: str | None) -> list[tuple[str, str, str]]:
    frame = call_decisions(client, TENANT, call_id or "")
    return [(r.rule, r.target, r.default_target) for r in frame.itertuples()]


def test_the_receiver_redirects_the_call_and_names_the_caller(world, phones) -> None:
    world.receiver.answer = b'{"redirect": "102", "caller_name": "Acme Ltd"}'
    agent = answering(world, "102")
    phones.append(agent)

    caller = sipp.call(world.sip, CALLER, DID, port=CARRIER_PORT,
                       media_port=next(MEDIA_PORTS), talk_ms=1000)
    assert caller.ok, caller.received()
    rung = agent.wait()
    assert rung.call_id == caller.call_id  # 102 took it, not 101 as provisioned
    invite = next(m for m in rung.messages if m.direction == "received"
                  and m.method == "INVITE")
    from_header = next(line for line in invite.text.splitlines()
                       if line.lower().startswith(("from:", "f:")))
    assert "Acme Ltd" in from_header, from_header

    cdr = closed(world.warehouse, caller.call_id)
    assert (cdr["disposition"], cdr["agent"]) == ("answered", "102"), cdr
    assert decisions(world.warehouse, caller.call_id) == [("webhook", "ext:102", "ext:101")]
    # NOTIFY_START went out once, from the steering request; the worker sent the rest
    wait_for("NOTIFY_END", lambda: notifications(world.receiver, "NOTIFY_END"), PIPELINE_S)
    starts = notifications(world.receiver, "NOTIFY_START")
    assert [s["caller_id"] for s in starts] == [CALLER.lstrip("+")], starts


def test_a_black_listed_caller_gets_busy(world) -> None:
    world.receiver.answer = b'{"redirect": "blacklist"}'
    caller = sipp.call_expect_failure(world.sip, CALLER, DID, 486, port=CARRIER_PORT,
                                      media_port=next(MEDIA_PORTS))
    assert caller.ok, caller.received()

    cdr = closed(world.warehouse, caller.call_id)
    assert (cdr["disposition"], cdr["agent"], cdr["sip_code"]) == ("busy", None, 486), cdr
    assert decisions(world.warehouse, caller.call_id) == [
        ("webhook", "refuse:webhook_blacklist", "ext:101")]


def test_with_the_receiver_down_the_call_is_routed_as_provisioned(world, phones) -> None:
    world.receiver.down()
    try:
        agent = answering(world, "101")
        phones.append(agent)
        caller = sipp.call(world.sip, CALLER, DID, port=CARRIER_PORT,
                           media_port=next(MEDIA_PORTS), talk_ms=500)
        assert caller.ok, caller.received()
        assert agent.wait().call_id == caller.call_id

        cdr = closed(world.warehouse, caller.call_id)
        assert (cdr["disposition"], cdr["agent"]) == ("answered", "101"), cdr
        assert decisions(world.warehouse, caller.call_id) == []
    finally:
        world.receiver.up()
