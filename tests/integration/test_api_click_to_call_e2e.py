"""``POST /api/v1/calls`` through the real stack: the API rings the agent's phone, then
the client through the trunk, and the origination resolves to the call in the warehouse.

The whole stack (``tawag up``, the API among it) runs on the port block 29000
(stack_harness) with RTP on 43000-43499 and sipp media on 43600+. sipp plays the agent's
phone (registers with digest auth, answers the edge, accepts the REFER and calls the
Refer-To target through the edge) and the carrier on the trunk (port 29179). Two
tenants: acme (pbx.test) and beta (beta.test), each key sees and places only its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import stack_harness
from stack_harness import running_stack, stack_settings

from api.keys import add_key, keys_file
from core.settings import Settings
from edge import control as tawag_edge
from edge import sipp

pytestmark = pytest.mark.integration

BLOCK = 29000
AGENT_PORTS = {"101": BLOCK + 172, "103": BLOCK + 173}
TRUNK_PORT = BLOCK + 179
RTP_MIN = 43000
PASSWORDS = {u: f"api-c2c-{u}" for u in ("101", "102", "103", "201")}
COMPANY = "+74951230000"
CLIENT = "+79161234567"
NO_ANSWER_TIMEOUT_S = 3
TALK_MS = 2000
DEADLINE_S = 60
PROBLEM = "application/problem+json"

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

[tenant.beta]
domain = "beta.test"

[tenant.beta.extension.201]
password = "{PASSWORDS['201']}"
"""


def wait_for(what: str, condition: Any, timeout: float = DEADLINE_S) -> Any:
    return stack_harness.wait_for(what, condition, timeout)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, dict]]:
    settings = stack_settings(tmp_path_factory, "api-c2c", block=BLOCK, rtp_min=RTP_MIN,
                              provisioning=PROVISIONING,
                              no_answer_timeout=NO_ANSWER_TIMEOUT_S)
    path = keys_file(settings)
    keys = {"acme": add_key(path, "acme", ("read", "calls:write")),
            "acme-reader": add_key(path, "acme", ("read",)),
            "beta": add_key(path, "beta", ("read", "calls:write"))}
    with running_stack(settings) as sup:
        assert "api" in [r.name for r in sup.running]
        yield settings, keys


def api(settings: Settings, key: str) -> httpx.Client:
    return httpx.Client(base_url=f"http://127.0.0.1:{settings.api_port}/api/v1",
                        headers={"Authorization": f"Bearer {key}"}, timeout=10)


def edge_requests(settings: Settings) -> int:
    """Transactions the edge itself created (the bridge's INVITE, REFER and BYE)."""
    return int(tawag_edge.kamailio_rpc(settings, "tm.stats")["total_local"])


def message(result: sipp.SippResult, direction: str, first: str) -> sipp.SipMessage:
    found = [m for m in result.messages if m.direction == direction
             and m.first_line.startswith(first)]
    assert found, f"no {direction} {first!r} in {result.trace}"
    return found[0]


def test_post_calls_rings_the_agent_then_the_client_and_resolves_to_the_cdr(
        stack: tuple[Settings, dict], tmp_path: Path):
    settings, keys = stack
    edge = sipp.Edge.from_settings(settings, tmp_path)
    port = AGENT_PORTS["101"]
    assert sipp.register(edge, "101", port=port, password=PASSWORDS["101"]).ok
    carrier = sipp.start_uas_carrier(edge, port=TRUNK_PORT, media_port=43700, number=CLIENT)
    agent = sipp._spawn_uas(edge, "uas_click_to_call_agent.xml", port, [
        "-mp", "43610", "-key", "agent", "101", "-au", "101", "-ap", PASSWORDS["101"],
        "-d", str(TALK_MS)])
    try:
        with api(settings, keys["acme"]) as http:
            placed = http.post("/calls", json={"extension": "101",
                                               "number": "8 916 123-45-67"})
        phone = agent.wait()
        trunk = carrier.wait()
    finally:
        agent.stop()
        carrier.stop()
    assert placed.status_code == 202, placed.text
    origination = placed.json()
    assert (origination["state"], origination["extension"], origination["number"],
            origination["call_id"]) == ("pending", "101", CLIENT, None)
    assert placed.headers["location"] == f"/api/v1/calls/originations/{origination['id']}"
    assert phone.ok, phone.received()
    assert trunk.ok, trunk.received()
    assert "click-to-call@pbx.test" in message(phone, "received", "INVITE ").text
    invite = message(trunk, "received", "INVITE ")
    assert invite.first_line.startswith(f"INVITE sip:{CLIENT}@127.0.0.1:{TRUNK_PORT}")

    # the origination resolves to the call the carrier got ...
    with api(settings, keys["acme"]) as http:
        def connected() -> dict[str, Any] | None:
            row = http.get(placed.headers["location"].removeprefix("/api/v1")).json()
            return row if row["state"] != "pending" else None

        resolved = wait_for("the origination's call", connected)
        assert (resolved["state"], resolved["call_id"]) == ("connected", invite.call_id)

        # ... and that call's CDR, closed in the warehouse, is the answered outbound call
        def closed() -> dict[str, Any] | None:
            resp = http.get(f"/calls/{resolved['call_id']}")
            return resp.json() if resp.status_code == 200 and resp.json()["closed"] else None

        cdr = wait_for("the call's closed CDR", closed)
    assert (cdr["call_id"], cdr["direction"], cdr["caller"], cdr["callee"],
            cdr["disposition"]) == (invite.call_id, "outbound", "101", CLIENT, "answered")
    assert trunk.talk_s is not None and abs(cdr["talk_ms"] / 1000 - trunk.talk_s) <= 1


def test_refusals_scopes_and_tenants(stack: tuple[Settings, dict]):
    settings, keys = stack
    before = edge_requests(settings)
    cases = [("acme", "102", 409, "not registered"),  # provisioned, no phone registered
             ("acme", "199", 404, "not provisioned"),
             ("beta", "101", 404, "not provisioned"),  # acme's extension, beta's key
             ("acme", "201", 404, "not provisioned"),  # and the other way round
             ("acme-reader", "101", 403, "calls:write")]
    for key, extension, status, text in cases:
        with api(settings, keys[key]) as http:
            resp = http.post("/calls", json={"extension": extension, "number": CLIENT})
        assert resp.status_code == status and text in resp.json()["detail"], (key, resp.text)
        assert resp.headers["content-type"] == PROBLEM
    assert edge_requests(settings) == before  # the edge placed nothing


def test_an_origination_the_agent_rejects_expires_and_stays_the_tenants(
        stack: tuple[Settings, dict], tmp_path: Path):
    settings, keys = stack
    edge = sipp.Edge.from_settings(settings, tmp_path)
    port = AGENT_PORTS["103"]
    assert sipp.register(edge, "103", port=port, password=PASSWORDS["103"]).ok
    busy = sipp.start_uas_busy(edge, port=port)
    try:
        with api(settings, keys["acme"]) as http:
            placed = http.post("/calls", json={"extension": "103", "number": CLIENT})
        rejected = busy.wait()
    finally:
        busy.stop()
    assert placed.status_code == 202, placed.text
    assert rejected.ok, rejected.received()
    path = f"/calls/originations/{placed.json()['id']}"
    with api(settings, keys["beta"]) as other:
        assert other.get(path).status_code == 404  # another tenant's origination
    with api(settings, keys["acme"]) as http:
        row = wait_for("the origination's expiry",
                       lambda: (r := http.get(path).json())["state"] != "pending" and r,
                       timeout=NO_ANSWER_TIMEOUT_S + 15 + DEADLINE_S)
    assert (row["state"], row["call_id"]) == ("expired", None)
