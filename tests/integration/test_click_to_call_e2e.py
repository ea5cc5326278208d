"""Bitrix24 click-to-call through the real stack: ONEXTERNALCALLSTART rings the agent,
then the client through the trunk, and the Bitrix24 call it came with is finished.

The whole stack (``tawag up``: Kafka, rtpengine, Kamailio, ingest, streams, warehouse,
dashboard, connectors) runs on the port block 23000 (stack_harness) with RTP on
39000-39499 and sipp media on 39600+. The fake Bitrix24 (in this process, port 23180)
plays the portal: a user clicks a number, the portal registers the outgoing call itself
and posts ONEXTERNALCALLSTART to the connectors worker (port 23169). sipp plays the
agent's phone (registers with digest auth, answers the edge, accepts the REFER and calls
the Refer-To target through the edge) and the carrier on the trunk (port 23179).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import stack_harness
from stack_harness import running_stack, stack_settings

from connectors.tokens import FileTokenStore, Token
from core.settings import Settings
from edge import control as tawag_edge
from edge import sipp

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "connectors"))
from fakes.bitrix24 import FakeBitrix24  # noqa: E402
from fakes.server import FakeServer  # noqa: E402

pytestmark = pytest.mark.integration

BLOCK = 23000
HTTP_PORT, B24_PORT = BLOCK + 169, BLOCK + 180
AGENT_PORTS = {"101": BLOCK + 172, "103": BLOCK + 173}
TRUNK_PORT = BLOCK + 179
RTP_MIN = 39000
PASSWORDS = {u: f"c2c-{u}" for u in ("101", "102", "103")}
B24_USERS = {"101": "1269", "102": "1270", "103": "1271", "199": "1299"}
COMPANY = "+74951230000"
CLIENT = "+79161234567"
TOKEN = "c2c-application-token"
NO_ANSWER_TIMEOUT_S = 3
TALK_MS = 2000
DEADLINE_S = 60
FORM = {"Content-Type": "application/x-www-form-urlencoded"}

PROVISIONING = f"""
[tenant.acme]
domain = "pbx.test"
company_number = "{COMPANY}"
trunk = "127.0.0.1:{TRUNK_PORT}"

[tenant.acme.extension.101]
password = "{PASSWORDS['101']}"

[tenant.acme.extension.102]
password = "{PASSWORDS['102']}"

[tenant.acme.extension.103]
password = "{PASSWORDS['103']}"
"""


def wait_for(what: str, condition: Callable[[], Any], timeout: float = DEADLINE_S) -> Any:
    return stack_harness.wait_for(what, condition, timeout)


@pytest.fixture(scope="module")
def b24() -> Iterator[FakeBitrix24]:
    fake = FakeBitrix24()
    fake.add_entity("Иван Петров", CLIENT, assigned=1269)
    server = FakeServer(fake)
    server.port = B24_PORT
    server.start()
    fake.url = server.url  # type: ignore[attr-defined]
    yield fake
    server.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, b24: FakeBitrix24) -> Iterator[Settings]:
    settings = stack_settings(
        tmp_path_factory, "c2c", block=BLOCK, rtp_min=RTP_MIN, provisioning=PROVISIONING,
        no_answer_timeout=NO_ANSWER_TIMEOUT_S,
        crm_enabled=("bitrix24",),
        crm_bitrix24_base_url=b24.url + "/rest/",  # type: ignore[attr-defined]
        crm_bitrix24_oauth_url=b24.url + "/oauth/token/",  # type: ignore[attr-defined]
        crm_bitrix24_client_id=b24.client_id, crm_bitrix24_client_secret=b24.client_secret,
        crm_bitrix24_users=B24_USERS, crm_bitrix24_default_user="1",
        crm_bitrix24_application_token=TOKEN,
        recordings_http_port=HTTP_PORT,
    )
    FileTokenStore(settings.data_dir / "connectors" / "bitrix24-token.json").save(
        Token(*b24.issue_tokens()))
    with running_stack(settings) as sup:
        assert "connectors" in [r.name for r in sup.running]
        yield settings


def click(b24: FakeBitrix24, user: int, phone: str) -> tuple[str, httpx.Response]:
    """The user clicks ``phone`` in Bitrix24: the portal registers and posts the event."""
    call_id, body = b24.click_to_call(user, phone, token=TOKEN)
    reply = httpx.post(f"http://127.0.0.1:{HTTP_PORT}/bitrix24/events", content=body,
                       headers=FORM, timeout=10)
    return call_id, reply


def call_events(settings: Settings, call_id: str) -> list[dict[str, Any]]:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(settings.topic_call_events,
                             bootstrap_servers=settings.kafka_bootstrap,
                             auto_offset_reset="earliest", consumer_timeout_ms=2000)
    try:
        return [e for e in (json.loads(r.value) for r in consumer) if e.get("call_id") == call_id]
    finally:
        consumer.close()


def edge_requests(settings: Settings) -> int:
    """Transactions the edge itself created (tm ``total_local``: the bridge's INVITE,
    REFER and BYE; the phones' requests are relayed, not local)."""
    return int(tawag_edge.kamailio_rpc(settings, "tm.stats")["total_local"])


def message(result: sipp.SippResult, direction: str, first: str) -> sipp.SipMessage:
    found = [m for m in result.messages if m.direction == direction
             and m.first_line.startswith(first)]
    assert found, f"no {direction} {first!r} in {result.trace}"
    return found[0]


def header(msg: sipp.SipMessage, name: str) -> str:
    lines = [ln for ln in msg.text.splitlines() if ln.lower().startswith(name.lower() + ":")]
    return lines[0].split(":", 1)[1].strip() if lines else ""


def test_click_to_call_rings_the_agent_then_the_client_and_finishes_the_bitrix24_call(
        stack: Settings, b24: FakeBitrix24, tmp_path: Path):
    edge = sipp.Edge.from_settings(stack, tmp_path)
    port = AGENT_PORTS["101"]
    assert sipp.register(edge, "101", port=port, password=PASSWORDS["101"]).ok
    carrier = sipp.start_uas_carrier(edge, port=TRUNK_PORT, media_port=39700, number=CLIENT)
    # the agent's phone (sipp.start_uas_* has no click-to-call callee: same spawner)
    agent = sipp._spawn_uas(edge, "uas_click_to_call_agent.xml", port, [
        "-mp", "39610", "-key", "agent", "101", "-au", "101", "-ap", PASSWORDS["101"],
        "-d", str(TALK_MS)])
    try:
        b24_call, reply = click(b24, 1269, CLIENT)
        assert (reply.status_code, reply.text) == (200, "ok")
        phone = agent.wait()
        trunk = carrier.wait()
    finally:
        agent.stop()
        carrier.stop()
    assert phone.ok, phone.received()
    assert trunk.ok, trunk.received()

    # SIP: the edge rang the agent as the click-to-call controller, contact = the edge
    ring = message(phone, "received", "INVITE ")
    assert "click-to-call@pbx.test" in header(ring, "From")
    assert header(ring, "Contact") == f"<sip:click-to-call@127.0.0.1:{stack.sip_port}>"
    refer = message(phone, "received", "REFER ")
    assert f"sip:{CLIENT}@pbx.test" in header(refer, "Refer-To")
    # ... and the carrier got the client's number with the company caller ID
    invite = message(trunk, "received", "INVITE ")
    assert invite.first_line.startswith(f"INVITE sip:{CLIENT}@127.0.0.1:{TRUNK_PORT}")
    caller_id = header(invite, "From").split(">")[0]  # the URI, not sipp's tag
    assert caller_id.endswith(f"sip:{COMPANY}@pbx.test") and "sip:101@" not in caller_id
    call_id = invite.call_id
    assert call_id

    # Tawag: an ordinary outbound call from 101 to the client, answered, ended
    def ended() -> list[dict[str, Any]] | None:
        events = call_events(stack, call_id)
        return events if any(e["type"] == "call.ended" for e in events) else None

    events = wait_for("the call's events", ended)
    offered = next(e for e in events if e["type"] == "call.offered")
    assert (offered["direction"], offered["caller"], offered["callee"]) == (
        "outbound", "101", CLIENT)
    assert any(e["type"] == "call.answered" for e in events)

    # Bitrix24: finish on the CALL_ID the portal sent, in the clicking user's name,
    # and no second registration of the call
    done = wait_for("Bitrix24 finish", lambda: b24.finished.get(b24_call))
    assert done["PORTAL_USER_ID"] == 1269 and done["CALL_STATUS"] == 1
    talk_s = trunk.talk_s
    assert talk_s is not None and abs(done["CALL_DURATION"] - talk_s) <= 1
    assert b24.register_requests == []
    assert list(b24.finished) == [b24_call]


def test_bad_click_to_calls_get_a_clear_answer_nothing_placed_and_are_finished(
        stack: Settings, b24: FakeBitrix24):
    before = edge_requests(stack)
    refused = {
        "unknown user": (*click(b24, 4242, CLIENT), 404, "has no extension"),
        "no extension on the edge": (*click(b24, 1299, CLIENT), 404, "not provisioned"),
        "unregistered extension": (*click(b24, 1270, CLIENT), 409, "not registered"),
        "bad number": (*click(b24, 1269, "12"), 400, "not an outside number"),
    }
    for case, (_, reply, status, text) in refused.items():
        assert reply.status_code == status and text in reply.text, (case, reply.text)
    assert edge_requests(stack) == before  # the edge sent no INVITE of its own
    # each was registered by the portal before it asked us: finish it there, not connected
    for case, (b24_call, *_) in refused.items():
        done = wait_for(f"the refused call's finish ({case})",
                        lambda c=b24_call: b24.finished.get(c))
        assert done["CALL_STATUS"] == 0 and done["CALL_FAILED_CODE"] == "603-S", case
    assert b24.register_requests == []


def test_a_click_to_call_the_agent_rejects_is_finished_as_not_connected(
        stack: Settings, b24: FakeBitrix24, tmp_path: Path):
    edge = sipp.Edge.from_settings(stack, tmp_path)
    port = AGENT_PORTS["103"]
    assert sipp.register(edge, "103", port=port, password=PASSWORDS["103"]).ok
    busy = sipp.start_uas_busy(edge, port=port)
    sent = edge_requests(stack)
    try:
        b24_call, reply = click(b24, 1271, CLIENT)
        assert (reply.status_code, reply.text) == (200, "ok")
        rejected = busy.wait()
    finally:
        busy.stop()
    assert rejected.ok, rejected.received()
    assert "click-to-call@pbx.test" in header(message(rejected, "received", "INVITE "), "From")
    assert edge_requests(stack) > sent  # the counter the refusals test relies on moves
    # no call follows; once the claim window (ring time + margin) is over, Bitrix24 hears
    done = wait_for("the unplaced call's finish", lambda: b24.finished.get(b24_call),
                    timeout=NO_ANSWER_TIMEOUT_S + 15 + DEADLINE_S)
    assert done["CALL_STATUS"] == 0 and done["CALL_FAILED_CODE"] == "603-S"
    assert done["PORTAL_USER_ID"] == 1271
    assert b24.register_requests == []
