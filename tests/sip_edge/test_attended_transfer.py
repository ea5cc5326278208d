"""Attended transfer with three parties through the PBX edge (RFC 5589 7.1, RFC 3891).

A (101) calls B (102); B holds A, consults C (103) in a second dialog, then REFERs A
with a Refer-To carrying ``Replaces=`` that consultation dialog; A calls C with a
``Replaces`` header; C takes that call in place of the consultation and BYEs B; A and
C talk and A hangs up. A is sipp (uac_call_auth_attended.xml, then
uac_call_auth_replaces.xml); B and C hold two dialogs each at some point, which one
sipp scenario cannot, so they are the small Python UA of sip_ua.py.

The edge only relays and labels: the Tawag call of A-B continues in A-C (same call_id,
leg_id = A-C's SIP Call-ID), and the consultation B-C is a call of its own.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pytest
from edge_harness import EdgeStack, EvapiListener
from sip_ua import SipMessage, SipUa, sdp

from core.events import Event
from edge import control as edge
from edge import provision, sipp
from ingest.decode import DecodeContext, decode_evapi
from streams.folds.cdr import fold, to_cdr

pytestmark = pytest.mark.integration

EDGE_SWITCHES = (*edge.DEFAULT_SWITCHES, "WITH_AUTH", "WITH_PBX")
DOMAIN = "pbx.test"
A, B, C = "101", "102", "103"
PASSWORDS = {u: f"secret-{u}" for u in (A, B, C)}
A_CONTACT, B_PORT, C_PORT = 25070, 25071, 25072
A_FIRST_PORT, A_SECOND_PORT = 25080, 25081
A_MEDIA, A_SECOND_MEDIA = 32500, 32504
B_MEDIA, B_CONSULT_MEDIA, C_MEDIA, C_TRANSFER_MEDIA = 32510, 32512, 32520, 32522
TALK_MS = 1000
PARTY_TIMEOUT_S = 20.0

PROVISIONING = f"""
[tenant.acme]
domain = "{DOMAIN}"

[tenant.acme.extension.{A}]
password = "{PASSWORDS[A]}"

[tenant.acme.extension.{B}]
password = "{PASSWORDS[B]}"

[tenant.acme.extension.{C}]
password = "{PASSWORDS[C]}"
"""


@pytest.fixture(scope="module")
def sip(edge_stack: EdgeStack, tmp_path_factory: pytest.TempPathFactory) -> sipp.Edge:
    return sipp.Edge.from_settings(edge_stack.settings, tmp_path_factory.mktemp("sipp"))


@pytest.fixture(scope="module")
def registered(sip: sipp.Edge, evapi: EvapiListener, edge_stack: EdgeStack,
               tmp_path_factory: pytest.TempPathFactory) -> None:
    path = tmp_path_factory.mktemp("prov") / "tawag.toml"
    path.write_text(PROVISIONING)
    provision.apply(edge_stack.settings, path, publish=False)
    for user, port in ((A, A_CONTACT), (B, B_PORT), (C, C_PORT)):
        result = sipp.register(sip, user, port=port, password=PASSWORDS[user])
        assert result.ok, result.received()
        evapi.wait_for(lambda e, r=result: e.get("call_id") == r.call_id)


@pytest.fixture
def phones(sip: sipp.Edge, registered: None) -> Iterator[tuple[SipUa, SipUa]]:
    """B's and C's phones on the ports they registered."""
    edge_address = (sip.host, sip.port)
    b = SipUa(B, PASSWORDS[B], B_PORT, edge_address, DOMAIN)
    c = SipUa(C, PASSWORDS[C], C_PORT, edge_address, DOMAIN)
    yield b, c
    b.close()
    c.close()


def run_a(sip: sipp.Edge, scenario: str, port: int, media_port: int, *extra: str
          ) -> sipp.SippResult:
    """A's sipp run of a scenario of these tests (edge.sipp has no call function of its
    own for them)."""
    args = ["-s", (B if scenario == "uac_call_auth_attended.xml" else C), "-key", "caller", A,
            "-p", str(port), "-mp", str(media_port), "-au", A, "-ap", PASSWORDS[A], *extra]
    return sipp.run_scenario(sip, scenario, args, label=f"attended-{A}", expected_code=200)


def rung(evapi: EvapiListener, invite: SipMessage) -> Callable[[], object]:
    """For SipUa.answer(after_ring=...): wait until the edge has sent call.ringing for
    this INVITE, so call.answered cannot overtake it (the edge handles a 180 and a 200
    that come back to back in two workers at once)."""
    return lambda: evapi.wait_for(
        lambda e: e["event"] == "call.ringing" and e.get("leg_id", "").startswith(invite.call_id))


def target_side(c: SipUa, evapi: EvapiListener, out: dict[str, Any]) -> None:
    """C: answers B's consultation call, then the INVITE that replaces it (no ringing,
    RFC 3891 3), ends the consultation with BYE and takes A's BYE at the end."""
    try:
        invite = c.wait_request("INVITE")
        consult = c.answer(invite, sdp("127.0.0.1", C_MEDIA), after_ring=rung(evapi, invite))
        replacing = c.wait_request("INVITE", timeout=PARTY_TIMEOUT_S)
        out["replaces"] = replacing.get("Replaces")
        out["replacing_call_id"] = replacing.call_id
        c.answer(replacing, sdp("127.0.0.1", C_TRANSFER_MEDIA), ring=False)
        out["consult_bye"] = consult.request("BYE").status
        out["a_bye"] = c.wait_request("BYE", timeout=PARTY_TIMEOUT_S).call_id
    except Exception as exc:  # reported by the test thread
        out["error"] = repr(exc)


def header(message: sipp.SipMessage, name: str) -> str:
    return SipMessage.parse(message.text.replace("\n", "\r\n").encode()).get(name) or ""


def decoded(events: list[dict[str, Any]]) -> list[Event]:
    ctx = DecodeContext(source="kamailio@test", tenant_for_domain=lambda _domain: "acme")
    out = [decode_evapi(json.dumps(e).encode(), ctx) for e in events]
    return [e for e in out if e is not None]


def test_attended_transfer_a_ends_up_talking_to_c_in_the_same_tawag_call(
    sip: sipp.Edge, evapi: EvapiListener, phones: tuple[SipUa, SipUa], tmp_path: Path
) -> None:
    b, c = phones
    runs: dict[str, sipp.SippResult] = {}
    a_first = threading.Thread(target=lambda: runs.update(first=run_a(
        sip, "uac_call_auth_attended.xml", A_FIRST_PORT, A_MEDIA)))
    a_first.start()
    target: dict[str, Any] = {}
    c_thread = threading.Thread(target=target_side, args=(c, evapi, target))
    try:
        # B answers A (once the edge reported the ringing), then puts A on hold
        invite = b.wait_request("INVITE")
        ab = b.answer(invite, sdp("127.0.0.1", B_MEDIA), after_ring=rung(evapi, invite))
        held = ab.request("INVITE", body=sdp("127.0.0.1", B_MEDIA, "sendonly", session=2))
        assert held.status == 200 and "a=recvonly" in held.body
        # B consults C in a dialog of its own
        c_thread.start()
        consulted, bc = b.invite(C, sdp("127.0.0.1", B_CONSULT_MEDIA))
        assert consulted.status == 200 and bc is not None
        replaces = f"{bc.call_id};to-tag={bc.remote_tag};from-tag={bc.local_tag}"
        refer = ab.request("REFER", headers=[
            ("Refer-To", f"<sip:{C}@{DOMAIN}?Replaces={quote(replaces, safe='')}>"),
            ("Referred-By", f"<sip:{B}@{DOMAIN}>")])
        assert refer.status == 202
        assert "SIP/2.0 100 Trying" in b.wait_request("NOTIFY").body
        assert ab.request("BYE").status == 200
    finally:
        a_first.join(PARTY_TIMEOUT_S)
    first = runs["first"]
    assert first.ok, first.received()

    # A calls C with the Replaces it found in the REFER's Refer-To
    refer_to = header(next(m for m in first.messages if m.method == "REFER"), "Refer-To")
    replaces_seen = unquote(refer_to.split("?Replaces=", 1)[1].rstrip(">"))
    assert replaces_seen == replaces
    second = run_a(sip, "uac_call_auth_replaces.xml", A_SECOND_PORT, A_SECOND_MEDIA,
                   "-d", str(TALK_MS), "-key", "referred_by", B, "-key", "replaces",
                   replaces_seen)
    c_thread.join(PARTY_TIMEOUT_S)

    assert second.ok, second.received()
    assert "error" not in target, target["error"]
    assert (target["replaces"], target["replacing_call_id"]) == (replaces, second.call_id)
    assert target["consult_bye"] == 200 and target["a_bye"] == second.call_id
    assert b.wait_request("BYE").call_id == bc.call_id  # C ended the consultation

    # the events: A-B and A-C are one Tawag call, B-C a call of its own
    x, y, z = first.call_id, bc.call_id, second.call_id
    evapi.wait_for(lambda e: e["event"] == "call.end" and e.get("leg_id") == z)
    evapi.wait_for(lambda e: e["event"] == "call.end" and e["call_id"] == y)
    assert evapi.for_call(z) == []
    events = evapi.for_call(x)
    old = [e for e in events if e.get("leg_id", x).startswith(x)]
    new = [e for e in events if e.get("leg_id", "").startswith(z)]
    assert len(old) + len(new) == len(events)
    assert [e["event"] for e in old] == ["call.start", "call.ringing", "call.answered",
                                         "call.held", "call.transferred", "call.end"]
    assert old[3]["held_by"] == B
    transferred = old[4]
    assert {k: transferred[k] for k in ("from", "to", "transferee", "kind")} == {
        "from": B, "to": C, "transferee": A, "kind": "attended"}
    assert (old[-1]["reason"], old[-1]["hangup_by"]) == ("bye", B)
    assert [e["event"] for e in new] == ["call.start", "call.answered", "call.end"]
    assert all(e["leg_id"] == z for e in new)
    start = new[0]
    assert (start["from"], start["to"], start["transferred_from"], start["referred_by"],
            start["replaces"]) == (A, C, x, B, y)
    assert (new[1]["agent"], new[2]["reason"], new[2]["hangup_by"]) == (C, "bye", A)
    consultation = evapi.for_call(y)
    assert [e["event"] for e in consultation] == ["call.start", "call.ringing",
                                                  "call.answered", "call.end"]
    assert [e.get("leg_id") for e in consultation] == [None, f"{y}#0", None, None]
    assert (consultation[0]["from"], consultation[0]["to"]) == (B, C)
    assert (consultation[-1]["reason"], consultation[-1]["hangup_by"]) == ("bye", C)
    # the stream fold makes one CDR of A's call: answered by B, transferred to C
    cdr = to_cdr(fold(x, decoded(events)))
    assert (cdr.closed, cdr.agent, cdr.hangup_by) == (True, B, A)
    assert [(t.transferred_from, t.transferred_to, t.kind) for t in cdr.transfers] == [
        (B, C, "attended")]
