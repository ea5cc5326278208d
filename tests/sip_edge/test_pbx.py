"""The PBX edge: digest auth, provisioning, DIDs, groups, forwarding, trunk, recording.

One real stack (rtpengine + Kamailio with WITH_AUTH and WITH_PBX) provisioned from
``PROVISIONING`` through edge.provision; sipp plays the extensions and a carrier (a
UAS on the trunk port for outbound legs, a UAC on a trunk source port for DID calls).
Every test asserts the SIP outcome and the exact evapi events of its call.
"""

from __future__ import annotations

import json
import threading
import time
import wave
from collections.abc import Iterator
from datetime import datetime, timedelta
from itertools import cycle
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from edge_harness import EdgeStack, EvapiListener, connect_evapi

from core.agent_records import AgentStatus
from core.events import Event
from core.records import Disposition, LegOutcome
from edge import control as edge
from edge import provision, schedules, sipp
from ingest import recording
from ingest.decode import DecodeContext, decode_evapi
from streams.folds.agent_state import AgentState, agent_keys, apply, timeline
from streams.folds.cdr import fold, to_cdr

pytestmark = pytest.mark.integration

EDGE_SWITCHES = (*edge.DEFAULT_SWITCHES, "WITH_AUTH", "WITH_PBX")

DOMAIN = "pbx.test"
TRUNK_PORT, CARRIER_UAC_PORT = 25090, 25091
COMPANY, MOBILE_104, MOBILE_105 = "+74951230000", "+79161234567", "+79167654321"
DID_SALES, DID_SUPPORT, DID_RECORDED = "74951230001", "74951230002", "74951230003"
DID_102 = "74951230102"
"""The issue's demo DID: straight to extension 102, not recorded."""
OUTSIDE_CALLER = "+79035550101"
DID_CLOSED, DID_CLOSED_REPLY, DID_OPEN = "74951230011", "74951230012", "74951230013"
"""Scheduled DIDs: on holiday today and tomorrow (to 103; a 480 reply), and open all week."""
MOSCOW_TODAY = datetime.now(ZoneInfo("Europe/Moscow")).date()
BLOCKED_CALLER, VIP_CALLER = "+79035550666", "+79035550777"
"""In the tenant's blacklist; in 103's whitelist (it skips the sales group)."""
PASSWORDS = {u: f"secret-{u}" for u in ("101", "102", "103", "104", "105")}
CONTACT_PORTS = {"101": 25070, "102": 25071, "103": 25072, "104": 25073}
UAC_PORTS = cycle(range(25080, 25090))
"""Each sipp caller has exited before the next one binds, so the ports are reused."""
CLIENT_CODE, CLIENT_NUMBER = "4501", "+79035550199"
"""A masked client: agents dial *77<code>; the number may only reach the trunk."""
SPEED_TO_102, SPEED_OUTSIDE = "7", "8"
MEDIA_PORTS = iter(range(32500, 32768, 4))
"""sipp binds media port .. +3; from 32768 on the kernel hands out ephemeral ports
(net.ipv4.ip_local_port_range), which any other process may hold at that moment."""
RING_S = 2
"""Short no-answer times of 104 and the serial group, so tests wait little."""
TIMER_SLACK_S = 1.5
TALK_MS = 3000
RING_BEFORE_ANSWER_MS = 800
"""The answering group member lets the others ring (and repeat their 180) first."""
WAV_SLACK_S = 0.5
TERMINAL = ("call.failed", "call.end")

PROVISIONING = f"""
[tenant.acme]
domain = "{DOMAIN}"
company_number = "{COMPANY}"
trunk = "127.0.0.1:{TRUNK_PORT}"
trunk_sources = ["127.0.0.1:{CARRIER_UAC_PORT}"]
blacklist = ["{BLOCKED_CALLER}"]
time_zone = "Europe/Moscow"

[tenant.acme.schedule.holiday]
hours = {{ {", ".join(f'{d} = "00:00-24:00"' for d in schedules.DAYS)} }}
holidays = ["{MOSCOW_TODAY}", "{MOSCOW_TODAY + timedelta(days=1)}"]
closed = "ext:103"

[tenant.acme.schedule.holiday-reply]
hours = {{ mon = "09:00-18:00" }}
holidays = ["{MOSCOW_TODAY}", "{MOSCOW_TODAY + timedelta(days=1)}"]
closed = "reply"

[tenant.acme.schedule.always]
hours = {{ {", ".join(f'{d} = "00:00-24:00"' for d in schedules.DAYS)} }}
closed = "reply"

[tenant.acme.did."{DID_CLOSED}"]
to = "group:sales"
schedule = "holiday"

[tenant.acme.did."{DID_CLOSED_REPLY}"]
to = "group:sales"
schedule = "holiday-reply"

[tenant.acme.did."{DID_OPEN}"]
to = "ext:102"
schedule = "always"

[tenant.acme.extension.101]
password = "{PASSWORDS['101']}"

[tenant.acme.extension.102]
password = "{PASSWORDS['102']}"

[tenant.acme.extension.103]
password = "{PASSWORDS['103']}"
forward = {{ busy = "ext:102" }}
whitelist = ["{VIP_CALLER.lstrip('+')}"]

[tenant.acme.extension.104]
password = "{PASSWORDS['104']}"
mobile = "{MOBILE_104}"
no_answer_timeout = {RING_S}
forward = {{ no_answer = "mobile" }}

[tenant.acme.extension.105]
password = "{PASSWORDS['105']}"
mobile = "{MOBILE_105}"
forward = {{ unregistered = "mobile" }}

[tenant.acme.group.sales]
strategy = "ring_all"
members = ["102", "103", "104"]
ring_timeout = 10

[tenant.acme.group.support]
strategy = "sequential"
members = ["104", "102"]
ring_timeout = {RING_S}

[tenant.acme.speed_dial]
"{SPEED_TO_102}" = "ext:102"
"{SPEED_OUTSIDE}" = "+79261110000"

[tenant.acme.mask]
"{CLIENT_CODE}" = "{CLIENT_NUMBER}"

[tenant.acme.did."{DID_SALES}"]
to = "group:sales"

[tenant.acme.did."{DID_SUPPORT}"]
to = "group:support"

[tenant.acme.did."{DID_102}"]
to = "ext:102"

[tenant.acme.did."{DID_RECORDED}"]
to = "ext:102"
record = true
"""


@pytest.fixture(scope="module")
def provisioning_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("prov") / "tawag.toml"
    path.write_text(PROVISIONING)
    return path


@pytest.fixture(scope="module")
def applied(edge_stack: EdgeStack, provisioning_file: Path) -> dict[str, provision.TenantState]:
    return provision.apply(edge_stack.settings, provisioning_file, publish=False)


@pytest.fixture(scope="module")
def sip(edge_stack: EdgeStack, tmp_path_factory: pytest.TempPathFactory) -> sipp.Edge:
    return sipp.Edge.from_settings(edge_stack.settings, tmp_path_factory.mktemp("sipp"))


@pytest.fixture(scope="module")
def registered(sip: sipp.Edge, evapi: EvapiListener, applied: Any) -> None:
    for user, port in CONTACT_PORTS.items():
        result = sipp.register(sip, user, port=port, password=PASSWORDS[user])
        assert result.ok, result.received()
        evapi.wait_for(lambda e, r=result: e.get("call_id") == r.call_id)


@pytest.fixture
def uas(registered: None) -> Iterator[list[sipp.Uas]]:
    """Callees started by a test; any still running at the end are stopped by PID."""
    started: list[sipp.Uas] = []
    yield started
    for one in started:
        one.stop()


def is_leg_failure(event: dict[str, Any]) -> bool:
    """call.failed of one branch ("<Call-ID>#<branch>"): the call may go on."""
    return event["event"] == "call.failed" and "#" in event.get("leg_id", "")


def call_events(evapi: EvapiListener, result: sipp.SippResult) -> list[dict[str, Any]]:
    assert result.call_id, f"sipp trace has no Call-ID: {result.trace}"
    evapi.wait_for(lambda e: e.get("call_id") == result.call_id and e["event"] in TERMINAL
                   and not is_leg_failure(e))
    return [e for e in evapi.for_call(result.call_id) if "auth_failed" not in e["event"]]


def kinds(events: list[dict[str, Any]]) -> list[str]:
    return [e["event"] for e in events]


def decoded(events: list[dict[str, Any]]) -> list[Event]:
    """The evapi payloads as the ingest bridge turns them into schema v1 events."""
    ctx = DecodeContext(source="kamailio@test", tenant_for_domain=lambda _domain: "acme")
    out = [decode_evapi(json.dumps(e).encode(), ctx) for e in events]
    return [e for e in out if e is not None]


AGENT_SLACK_S = 0.3
"""Loopback: the edge's event times are within a few ms of sipp's messages; sipp's own
pauses (ring_ms, talk_ms) are kept to its 10 ms timer, plus scheduling on 2 cores."""
A = AgentStatus


def fresh_registrations(sip: sipp.Edge, evapi: EvapiListener,
                        *users: str) -> list[dict[str, Any]]:
    """Register ``users`` again (before their callees bind the contact ports): the
    register events start the sessions the agent fold counts from."""
    out = []
    for user in users:
        result = sipp.register(sip, user, port=CONTACT_PORTS[user], password=PASSWORDS[user])
        assert result.ok, result.received()
        out.append(evapi.wait_for(lambda e, r=result: e.get("call_id") == r.call_id))
    return out


def agent_timelines(events: list[dict[str, Any]]
                    ) -> dict[str, list[tuple[AgentStatus, float, float | None]]]:
    """Each agent's timeline (state, since, until as epoch s) folded from the edge's events
    as the streams worker routes them (agent_keys), after decoding as the bridge does."""
    rows: dict[str, AgentState] = {}
    for event in decoded(events):
        for key in agent_keys(event):
            agent = key.split(":", 1)[1]
            rows[agent] = apply(rows.get(agent, AgentState("acme", agent)), event)
    return {agent: [(s.state, s.since.timestamp(), s.until.timestamp() if s.until else None)
                    for s in timeline(row)] for agent, row in rows.items()}


def carrier_saw(result: sipp.SippResult, header: str) -> bool:
    return result.trace is not None and header in result.trace.read_text()


# --- 1. digest authentication ---------------------------------------------------------


def test_registration_with_the_right_password_is_accepted(
    registered: None, edge_stack: EdgeStack, applied: dict[str, provision.TenantState]
) -> None:
    contacts = edge.kamailio_rpc(edge_stack.settings, "ul.lookup", "location", "102")
    assert str(CONTACT_PORTS["102"]) in str(contacts)
    # only HA1 hashes are at rest in Kamailio, never the password
    dump = str(edge.kamailio_rpc(edge_stack.settings, "htable.dump", "creds"))
    assert provision.ha1("102", DOMAIN, PASSWORDS["102"]) in dump
    assert PASSWORDS["102"] not in dump


@pytest.mark.parametrize("user", ["101", "777"], ids=["wrong-password", "unknown-user"])
def test_bad_credentials_get_403_and_one_neutral_auth_failed_event(
    sip: sipp.Edge, evapi: EvapiListener, registered: None, user: str
) -> None:
    result = sipp.register(sip, user, port=25079, password="not-the-password",
                           expected_code=403)

    assert result.ok, result.received()
    failed = evapi.wait_for(lambda e: e.get("call_id") == result.call_id)
    assert failed["event"] == "register.auth_failed"
    assert (failed["user"], failed["auth_user"], failed["domain"]) == (user, user, DOMAIN)
    assert set(failed) == {"event", "ts", "user", "auth_user", "domain", "source", "call_id"}
    assert len(evapi.for_call(result.call_id)) == 1


def test_invite_without_credentials_is_challenged_and_not_relayed(
    sip: sipp.Edge, evapi: EvapiListener, registered: None
) -> None:
    result = sipp.call_expect_failure(sip, "101", "102", 407, port=next(UAC_PORTS),
                                      media_port=next(MEDIA_PORTS))

    assert result.ok, result.received()
    assert evapi.for_call(result.call_id) == []


def test_invite_with_a_wrong_password_gets_403_and_invite_auth_failed(
    sip: sipp.Edge, evapi: EvapiListener, registered: None
) -> None:
    result = sipp.call_expect_failure(sip, "101", "102", 403, port=next(UAC_PORTS),
                                      media_port=next(MEDIA_PORTS), password="wrong-one")

    assert result.ok, result.received()
    failed = evapi.wait_for(lambda e: e.get("call_id") == result.call_id)
    assert (failed["event"], failed["user"]) == ("invite.auth_failed", "101")
    assert kinds(evapi.for_call(result.call_id)) == ["invite.auth_failed"]


def test_authenticated_internal_call_is_answered(
    sip: sipp.Edge, evapi: EvapiListener, uas: list[sipp.Uas]
) -> None:
    uas.append(sipp.start_uas_answer(sip, port=CONTACT_PORTS["102"],
                                     media_port=next(MEDIA_PORTS)))

    result = sipp.call(sip, "101", "102", port=next(UAC_PORTS), media_port=next(MEDIA_PORTS),
                       talk_ms=1000, password=PASSWORDS["101"])

    assert result.ok, result.received()
    assert kinds(call_events(evapi, result)) == [
        "call.start", "call.ringing", "call.answered", "call.end"]


def test_authenticated_caller_cancels_while_it_rings(
    sip: sipp.Edge, evapi: EvapiListener, uas: list[sipp.Uas]
) -> None:
    ringing = sipp.start_uas_ring(sip, port=CONTACT_PORTS["102"])
    uas.append(ringing)

    result = sipp.call_and_cancel(sip, "101", "102", ring_ms=500, port=next(UAC_PORTS),
                                  media_port=next(MEDIA_PORTS), password=PASSWORDS["101"])

    assert result.ok, result.received()
    assert ringing.wait().exit_code == 0
    events = call_events(evapi, result)
    # 102's leg ends (its agent named), then the call
    assert kinds(events) == ["call.start", "call.ringing", "call.failed", "call.failed"]
    leg, call = events[2:]
    assert (leg["leg_id"], leg["agent"], leg["code"]) == (events[1]["leg_id"], "102", 487)
    assert "agent" not in call and "leg_id" not in call
    assert (call["code"], call["origin"]) == (487, "downstream")


def test_authenticated_call_the_callee_hangs_up(
    sip: sipp.Edge, evapi: EvapiListener, uas: list[sipp.Uas]
) -> None:
    callee = sipp.start_uas_answer(sip, port=CONTACT_PORTS["102"], media_port=next(MEDIA_PORTS),
                                   hangup_after_ms=800)
    uas.append(callee)

    result = sipp.call(sip, "101", "102", port=next(UAC_PORTS), media_port=next(MEDIA_PORTS),
                       talk_ms=0, callee_hangs_up=True, password=PASSWORDS["101"])

    assert result.ok, result.received()
    events = call_events(evapi, result)
    assert kinds(events) == ["call.start", "call.ringing", "call.answered", "call.end"]
    assert events[2]["agent"] == "102"
    assert (events[-1]["reason"], events[-1]["hangup_by"]) == ("bye", "102")


# --- 3. call handling -----------------------------------------------------------------


def test_did_to_extension_answered_the_agent_rings_talks_and_is_released(
    sip: sipp.Edge, evapi: EvapiListener, uas: list[sipp.Uas]
) -> None:
    """The issue's call: trunk -> DID -> 102, answered, hung up. 102 was left on_call."""
    registrations = fresh_registrations(sip, evapi, "102")
    uas.append(sipp.start_uas_answer(sip, port=CONTACT_PORTS["102"],
                                     media_port=next(MEDIA_PORTS),
                                     ring_ms=RING_BEFORE_ANSWER_MS))

    placed = time.time()
    result = sipp.call(sip, OUTSIDE_CALLER, DID_102, port=CARRIER_UAC_PORT,
                       media_port=next(MEDIA_PORTS), talk_ms=1000)

    assert result.ok, result.received()
    events = call_events(evapi, result)
    assert kinds(events) == ["call.start", "call.ringing", "call.answered", "call.end"]
    assert events[0]["route_target"] == "ext:102" and "group" not in events[0]
    # every leg event names the agent; the caller is the client, the callee the DID
    assert [e["agent"] for e in events[1:]] == ["102", "102", "102"]
    timelines = agent_timelines([*registrations, *events])
    assert set(timelines) == {"102"}
    assert [seg[0] for seg in timelines["102"]] == [A.AVAILABLE, A.RINGING, A.ON_CALL,
                                                    A.AVAILABLE]
    _, (_, rang, _), (_, talked, hung_up), (_, free, still) = timelines["102"]
    assert placed <= rang < placed + AGENT_SLACK_S
    assert abs(talked - rang - RING_BEFORE_ANSWER_MS / 1000) < AGENT_SLACK_S
    assert abs(hung_up - talked - 1.0) < AGENT_SLACK_S
    assert (free, still) == (hung_up, None)  # not on_call after the call


def test_did_call_blind_transferred_by_the_agent_to_a_busy_extension(
    sip: sipp.Edge, evapi: EvapiListener, uas: list[sipp.Uas]
) -> None:
    """Trunk -> DID -> 102, who REFERs the client to 101 (busy; 103 would
    forward busy calls). Seen end to end
    (tests/integration/test_inbound_matrix.py): the carrier's INVITE to the Refer-To
    extension got 404 (a trunk may only call DIDs), and the transfer and the hang-up
    named the DID (the From/To of the agent's in-dialog requests), not agent 102."""
    busy = sipp.start_uas_busy(sip, port=CONTACT_PORTS["101"])
    transferor = sipp.start_uas_transferor(sip, port=CONTACT_PORTS["102"],
                                           media_port=next(MEDIA_PORTS), refer_to="101",
                                           talk_ms=800)
    uas.extend([busy, transferor])
    first = sipp.run_scenario(sip, "uac_carrier_transferred.xml", [
        "-s", DID_102, "-key", "caller", OUTSIDE_CALLER, "-p", str(CARRIER_UAC_PORT),
        "-mp", str(next(MEDIA_PORTS))], label="carrier-xfer", expected_code=200)
    assert first.ok, first.received()
    assert transferor.wait().exit_code == 0
    second = sipp.run_scenario(sip, "uac_carrier_fail_referred.xml", [
        "-s", "101", "-key", "caller", OUTSIDE_CALLER, "-p", str(CARRIER_UAC_PORT),
        "-mp", str(next(MEDIA_PORTS)), "-key", "referred_by", "102"],
        label="carrier-xfer-busy", expected_code=486)
    assert second.ok, second.received()
    assert busy.wait().exit_code == 0

    evapi.wait_for(lambda e: e["event"] == "call.failed" and e.get("leg_id") == second.call_id)
    events = evapi.for_call(first.call_id)
    transferred = next(e for e in events if e["event"] == "call.transferred")
    assert (transferred["from"], transferred["to"]) == ("102", "101")
    end = next(e for e in events if e["event"] == "call.end")
    assert (end["reason"], end["hangup_by"], end["agent"]) == ("bye", "102", "102")
    offer = next(e for e in events if e["event"] == "call.start"
                 and e.get("leg_id") == second.call_id)
    assert (offer["route_target"], offer["domain"]) == ("ext:101", DOMAIN)
    assert "did" not in offer  # the DID was the first dialog's
    # the refused attempt is the first call's, not a call of its own
    assert evapi.for_call(second.call_id) == []


def test_did_to_ring_all_group_one_answers_the_others_stop_ringing(
    sip: sipp.Edge, evapi: EvapiListener, uas: list[sipp.Uas]
) -> None:
    registrations = fresh_registrations(sip, evapi, "102", "103", "104")
    answers = sipp.start_uas_answer(sip, port=CONTACT_PORTS["102"], media_port=next(MEDIA_PORTS),
                                    ring_ms=RING_BEFORE_ANSWER_MS)
    rings = [sipp.start_uas_ring(sip, port=CONTACT_PORTS[u]) for u in ("103", "104")]
    uas.extend([answers, *rings])

    placed = time.time()
    result = sipp.call(sip, OUTSIDE_CALLER, DID_SALES, port=CARRIER_UAC_PORT,
                       media_port=next(MEDIA_PORTS), talk_ms=1000)

    assert result.ok, result.received()
    # the edge CANCELled the members that lost the race (they end with 487)
    for ringing in rings:
        side = ringing.wait()
        assert side.exit_code == 0, side.received()
        assert side.call_id == result.call_id
    events = call_events(evapi, result)
    assert kinds(events) == ["call.start", "call.ringing", "call.ringing", "call.ringing",
                             "call.failed", "call.failed", "call.answered", "call.end"]
    start = events[0]
    assert (start["from"], start["did"], start["domain"]) == (OUTSIDE_CALLER, DID_SALES, DOMAIN)
    assert (start["route_target"], start["group"]) == ("group:sales", "sales")
    answered, end = events[6:]
    assert answered["agent"] == end["agent"] == "102"  # the member who answered, not the DID
    legs = events[1:4]
    assert sorted(e["leg_to"] for e in legs) == ["102", "103", "104"]
    assert all(e["agent"] == e["leg_to"] and e["group"] == "sales" for e in legs)
    assert len({e["leg_id"] for e in legs}) == 3
    assert all(e["leg_id"].startswith(result.call_id + "#") for e in legs)
    # the losers' legs end when 102 answers, each naming its agent
    lost = {e["agent"]: e for e in events[4:6]}
    assert set(lost) == {"103", "104"}
    assert all(e["code"] == 487 and e["group"] == "sales" for e in lost.values())
    ring_leg = {e["agent"]: e["leg_id"] for e in legs}
    assert all(e["leg_id"] == ring_leg[a] for a, e in lost.items())
    # each agent's timeline: 102 rang, talked, is free; 103 and 104 rang until 102 answered
    timelines = agent_timelines([*registrations, *events])
    assert set(timelines) == {"102", "103", "104"}
    assert [seg[0] for seg in timelines["102"]] == [A.AVAILABLE, A.RINGING, A.ON_CALL,
                                                    A.AVAILABLE]
    _, (_, rang, _), (_, talked, hung_up), (_, _, still) = timelines["102"]
    assert placed <= rang < placed + AGENT_SLACK_S
    assert abs(talked - rang - RING_BEFORE_ANSWER_MS / 1000) < AGENT_SLACK_S
    assert abs(hung_up - talked - 1.0) < AGENT_SLACK_S
    assert still is None
    for loser in ("103", "104"):
        states = timelines[loser]
        assert [seg[0] for seg in states] == [A.AVAILABLE, A.RINGING, A.AVAILABLE], states
        assert placed <= states[1][1] < placed + AGENT_SLACK_S
        assert abs(states[1][2] - talked) <= 0.005  # stops ringing when 102 answers
        assert states[-1][2] is None


def test_did_to_sequential_group_rings_members_one_after_another(
    sip: sipp.Edge, evapi: EvapiListener, uas: list[sipp.Uas]
) -> None:
    first = sipp.start_uas_ring(sip, port=CONTACT_PORTS["104"])
    second = sipp.start_uas_answer(sip, port=CONTACT_PORTS["102"], media_port=next(MEDIA_PORTS))
    uas.extend([first, second])

    result = sipp.call(sip, OUTSIDE_CALLER, DID_SUPPORT, port=CARRIER_UAC_PORT,
                       media_port=next(MEDIA_PORTS), talk_ms=1000)

    assert result.ok, result.received()
    assert first.wait().exit_code == 0
    events = call_events(evapi, result)
    assert kinds(events) == ["call.start", "call.ringing", "call.failed", "call.ringing",
                             "call.answered", "call.end"]
    ring_104, timeout_104, ring_102 = events[1:4]
    assert (ring_104["agent"], ring_102["agent"]) == ("104", "102")
    assert (timeout_104["agent"], timeout_104["code"], timeout_104["leg_id"]) == (
        "104", 408, ring_104["leg_id"])
    assert abs(ring_102["ts"] - ring_104["ts"] - RING_S) < TIMER_SLACK_S
    assert events[4]["group"] == events[5]["group"] == "support"


def test_no_answer_forwards_to_the_mobile_through_the_trunk(
    sip: sipp.Edge, evapi: EvapiListener, uas: list[sipp.Uas]
) -> None:
    ringing = sipp.start_uas_ring(sip, port=CONTACT_PORTS["104"])
    carrier = sipp.start_uas_answer(sip, port=TRUNK_PORT, media_port=next(MEDIA_PORTS))
    uas.extend([ringing, carrier])

    result = sipp.call(sip, "101", "104", port=next(UAC_PORTS), media_port=next(MEDIA_PORTS),
                       talk_ms=1000, password=PASSWORDS["101"])

    assert result.ok, result.received()
    assert ringing.wait().exit_code == 0
    carrier_side = carrier.wait()
    assert carrier_side.call_id == result.call_id  # one call id across all legs
    assert carrier_saw(carrier_side, f"INVITE sip:{MOBILE_104}@127.0.0.1:{TRUNK_PORT}")
    events = call_events(evapi, result)
    assert kinds(events) == ["call.start", "call.ringing", "call.failed", "call.forwarded",
                             "call.ringing", "call.answered", "call.end"]
    start, _, timeout_104, forwarded, ring_mobile, _, end = events
    assert (timeout_104["agent"], timeout_104["code"]) == ("104", 408)
    assert ring_mobile["agent"] == end["agent"] == MOBILE_104
    assert (forwarded["reason"], forwarded["forwarded_from"], forwarded["forwarded_to"]) == (
        "no_answer", "ext:104", f"tel:{MOBILE_104}")
    assert abs(forwarded["ts"] - start["ts"] - RING_S) < TIMER_SLACK_S


def test_busy_forwards_to_the_next_extension(
    sip: sipp.Edge, evapi: EvapiListener, uas: list[sipp.Uas]
) -> None:
    uas.append(sipp.start_uas_busy(sip, port=CONTACT_PORTS["103"]))
    uas.append(sipp.start_uas_answer(sip, port=CONTACT_PORTS["102"],
                                     media_port=next(MEDIA_PORTS)))

    result = sipp.call(sip, "101", "103", port=next(UAC_PORTS), media_port=next(MEDIA_PORTS),
                       talk_ms=1000, password=PASSWORDS["101"])

    assert result.ok, result.received()
    events = call_events(evapi, result)
    assert kinds(events) == ["call.start", "call.failed", "call.forwarded", "call.ringing",
                             "call.answered", "call.end"]
    assert (events[1]["agent"], events[1]["code"]) == ("103", 486)
    forwarded = events[2]
    assert (forwarded["reason"], forwarded["forwarded_to"]) == ("busy", "ext:102")
    assert events[3]["leg_to"] == events[3]["agent"] == "102"


def test_unregistered_extension_forwards_to_its_mobile(
    sip: sipp.Edge, evapi: EvapiListener, uas: list[sipp.Uas]
) -> None:
    carrier = sipp.start_uas_answer(sip, port=TRUNK_PORT, media_port=next(MEDIA_PORTS))
    uas.append(carrier)

    result = sipp.call(sip, "101", "105", port=next(UAC_PORTS), media_port=next(MEDIA_PORTS),
                       talk_ms=1000, password=PASSWORDS["101"])

    assert result.ok, result.received()
    events = call_events(evapi, result)
    assert kinds(events) == ["call.start", "call.forwarded", "call.ringing", "call.answered",
                             "call.end"]
    assert (events[1]["reason"], events[1]["forwarded_to"]) == ("unregistered",
                                                                f"tel:{MOBILE_105}")


def test_outbound_call_goes_through_the_trunk_with_the_company_number(
    sip: sipp.Edge, evapi: EvapiListener, uas: list[sipp.Uas]
) -> None:
    carrier = sipp.start_uas_answer(sip, port=TRUNK_PORT, media_port=next(MEDIA_PORTS))
    uas.append(carrier)
    outside = "+79261112233"

    result = sipp.call(sip, "101", outside, port=next(UAC_PORTS), media_port=next(MEDIA_PORTS),
                       talk_ms=1000, password=PASSWORDS["101"])

    assert result.ok, result.received()
    carrier_side = carrier.wait()
    assert carrier_saw(carrier_side, f"From: <sip:{COMPANY}@{DOMAIN}>")
    events = call_events(evapi, result)
    assert kinds(events) == ["call.start", "call.ringing", "call.answered", "call.end"]
    assert (events[0]["from"], events[0]["to"]) == ("101", outside)
    # the caller's own dialog still shows its own From (uac restores it)
    assert not carrier_saw(result, f"sip:{COMPANY}@")


def test_unknown_did_from_the_trunk_gets_404(
    sip: sipp.Edge, evapi: EvapiListener, registered: None
) -> None:
    result = sipp.call_expect_failure(sip, OUTSIDE_CALLER, "74959999999", 404,
                                      port=CARRIER_UAC_PORT, media_port=next(MEDIA_PORTS))

    assert result.ok, result.received()
    assert kinds(call_events(evapi, result)) == ["call.start", "call.failed"]


def test_black_listed_caller_is_refused_603_and_route_decided_says_why(
    sip: sipp.Edge, evapi: EvapiListener, registered: None
) -> None:
    result = sipp.call_expect_failure(sip, BLOCKED_CALLER, DID_SALES, 603,
                                      port=CARRIER_UAC_PORT, media_port=next(MEDIA_PORTS))

    assert result.ok, result.received()
    events = call_events(evapi, result)
    assert kinds(events) == ["call.start", "route.decided", "call.failed"]  # nobody rang
    start, decided, failed = events
    assert start["route_target"] == "refuse:blacklist"
    assert (decided["rule"], decided["target"], decided["default_target"]) == (
        "blacklist", "refuse:blacklist", "group:sales")
    assert 0 <= decided["decision_us"] < 1_000_000
    assert failed["code"] == 603
    [ev] = [e for e in decoded(events) if e.type.value == "route.decided"]
    assert (ev.call_id, ev.caller, ev.did, ev.key) == (
        result.call_id, BLOCKED_CALLER, f"+{DID_SALES}", result.call_id)


def test_white_listed_caller_goes_straight_to_its_extension_skipping_the_group(
    sip: sipp.Edge, evapi: EvapiListener, uas: list[sipp.Uas]
) -> None:
    uas.append(sipp.start_uas_answer(sip, port=CONTACT_PORTS["103"],
                                     media_port=next(MEDIA_PORTS)))

    result = sipp.call(sip, VIP_CALLER, f"+{DID_SALES}", port=CARRIER_UAC_PORT,
                       media_port=next(MEDIA_PORTS), talk_ms=500)

    assert result.ok, result.received()
    events = call_events(evapi, result)
    assert kinds(events) == ["call.start", "route.decided", "call.ringing", "call.answered",
                             "call.end"]  # 102 and 104 of the sales group never rang
    start, decided = events[:2]
    assert start["route_target"] == "ext:103" and "group" not in start
    assert (decided["rule"], decided["target"], decided["default_target"]) == (
        "whitelist", "ext:103", "group:sales")
    assert [e["agent"] for e in events[2:]] == ["103", "103", "103"]


def test_out_of_hours_a_scheduled_did_goes_to_its_closed_target(
    sip: sipp.Edge, evapi: EvapiListener, uas: list[sipp.Uas]
) -> None:
    """Today is a holiday of DID_CLOSED's schedule (in Moscow): 103, not the sales group."""
    uas.append(sipp.start_uas_answer(sip, port=CONTACT_PORTS["103"],
                                     media_port=next(MEDIA_PORTS)))

    result = sipp.call(sip, OUTSIDE_CALLER, DID_CLOSED, port=CARRIER_UAC_PORT,
                       media_port=next(MEDIA_PORTS), talk_ms=500)

    assert result.ok, result.received()
    events = call_events(evapi, result)
    assert kinds(events) == ["call.start", "route.decided", "call.ringing", "call.answered",
                             "call.end"]
    decided = events[1]
    assert (decided["rule"], decided["target"], decided["default_target"]) == (
        "schedule", "ext:103", "group:sales")
    assert events[2]["agent"] == "103"


def test_out_of_hours_with_a_reply_the_carrier_gets_480_closed(
    sip: sipp.Edge, evapi: EvapiListener, registered: None
) -> None:
    result = sipp.call_expect_failure(sip, OUTSIDE_CALLER, DID_CLOSED_REPLY, 480,
                                      port=CARRIER_UAC_PORT, media_port=next(MEDIA_PORTS))

    assert result.ok, result.received()
    events = call_events(evapi, result)
    assert kinds(events) == ["call.start", "route.decided", "call.failed"]
    assert (events[1]["rule"], events[1]["target"]) == ("schedule", "refuse:closed")
    assert (events[2]["code"], events[2]["reason"]) == (480, "Closed")


def test_in_hours_a_scheduled_did_routes_as_usual_with_no_decision(
    sip: sipp.Edge, evapi: EvapiListener, uas: list[sipp.Uas]
) -> None:
    uas.append(sipp.start_uas_answer(sip, port=CONTACT_PORTS["102"],
                                     media_port=next(MEDIA_PORTS)))

    result = sipp.call(sip, OUTSIDE_CALLER, DID_OPEN, port=CARRIER_UAC_PORT,
                       media_port=next(MEDIA_PORTS), talk_ms=500)

    assert result.ok, result.received()
    assert kinds(call_events(evapi, result)) == ["call.start", "call.ringing", "call.answered",
                                                 "call.end"]


# --- 4./5. recording and media quality ------------------------------------------------


def test_recorded_did_call_gives_a_wav_as_long_as_the_talk_and_media_stats(
    sip: sipp.Edge, evapi: EvapiListener, uas: list[sipp.Uas], edge_stack: EdgeStack,
    tmp_path: Path,
) -> None:
    uas.append(sipp.start_uas_answer(sip, port=CONTACT_PORTS["102"],
                                     media_port=next(MEDIA_PORTS)))

    result = sipp.call(sip, OUTSIDE_CALLER, DID_RECORDED, port=CARRIER_UAC_PORT,
                       media_port=next(MEDIA_PORTS), talk_ms=TALK_MS)

    assert result.ok, result.received()
    end = call_events(evapi, result)[-1]
    assert end["event"] == "call.end" and end["recorded"] is True
    assert end["media"]["packets"] >= TALK_MS // 20  # 20 ms PCMA packets, both ways
    assert end["media"]["errors"] == 0
    # rtpengine closes the pcap when the BYE deletes the media session
    assert edge.wait_until(
        lambda: recording.recording_closed(edge_stack.settings, end["call_id"]), timeout=5)
    ready = recording.on_call_end(end, edge_stack.settings.recordings_dir, tmp_path)
    assert ready is not None
    assert ready["event"] == "call.recording_ready" and ready["call_id"] == result.call_id
    with wave.open(ready["file"]) as wav:
        seconds = wav.getnframes() / wav.getframerate()
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 8000)
    assert abs(seconds - TALK_MS / 1000) < WAV_SLACK_S
    assert abs(ready["duration"] - seconds) < 0.01 and ready["size"] > 0


def test_unrecorded_call_leaves_no_recording_flag(
    sip: sipp.Edge, evapi: EvapiListener, uas: list[sipp.Uas]
) -> None:
    uas.append(sipp.start_uas_answer(sip, port=CONTACT_PORTS["102"],
                                     media_port=next(MEDIA_PORTS)))

    result = sipp.call(sip, "101", "102", port=next(UAC_PORTS), media_port=next(MEDIA_PORTS),
                       talk_ms=1000, password=PASSWORDS["101"])

    assert result.ok, result.received()
    end = call_events(evapi, result)[-1]
    assert "recorded" not in end and end["media"]["packets"] > 0


# --- transfers, short numbers, number masking -------------------------------------------


def test_speed_dial_rings_what_the_short_number_stands_for(
    sip: sipp.Edge, evapi: EvapiListener, uas: list[sipp.Uas]
) -> None:
    uas.append(sipp.start_uas_answer(sip, port=CONTACT_PORTS["102"],
                                     media_port=next(MEDIA_PORTS)))

    result = sipp.call(sip, "101", SPEED_TO_102, port=next(UAC_PORTS),
                       media_port=next(MEDIA_PORTS), talk_ms=500, password=PASSWORDS["101"])

    assert result.ok, result.received()
    events = call_events(evapi, result)
    assert kinds(events) == ["call.start", "call.ringing", "call.answered", "call.end"]
    start = events[0]
    assert (start["to"], start["speed_dial"]) == (SPEED_TO_102, SPEED_TO_102)
    assert (events[1]["leg_to"], events[2]["agent"]) == ("102", "102")


def test_speed_dial_to_an_outside_number_goes_through_the_trunk(
    sip: sipp.Edge, evapi: EvapiListener, uas: list[sipp.Uas]
) -> None:
    carrier = sipp.start_uas_answer(sip, port=TRUNK_PORT, media_port=next(MEDIA_PORTS))
    uas.append(carrier)

    result = sipp.call(sip, "101", SPEED_OUTSIDE, port=next(UAC_PORTS),
                       media_port=next(MEDIA_PORTS), talk_ms=500, password=PASSWORDS["101"])

    assert result.ok, result.received()
    assert carrier_saw(carrier.wait(), f"INVITE sip:+79261110000@127.0.0.1:{TRUNK_PORT}")
    events = call_events(evapi, result)
    assert kinds(events) == ["call.start", "call.ringing", "call.answered", "call.end"]
    assert events[0]["speed_dial"] == SPEED_OUTSIDE


def test_blind_transfer_keeps_one_call_id_across_both_dialogs(
    sip: sipp.Edge, evapi: EvapiListener, uas: list[sipp.Uas]
) -> None:
    target = sipp.start_uas_answer(sip, port=CONTACT_PORTS["103"], media_port=next(MEDIA_PORTS))
    transferor = sipp.start_uas_transferor(sip, port=CONTACT_PORTS["102"],
                                           media_port=next(MEDIA_PORTS), refer_to="103",
                                           talk_ms=500)
    uas.extend([target, transferor])

    first = sipp.call_transferred(sip, "101", "102", port=next(UAC_PORTS),
                                  media_port=next(MEDIA_PORTS), password=PASSWORDS["101"])
    assert first.ok, first.received()
    assert transferor.wait().exit_code == 0
    # the transferee (a phone) now calls the Refer-To target: a new dialog, a new Call-ID
    second = sipp.call(sip, "101", "103", port=next(UAC_PORTS), media_port=next(MEDIA_PORTS),
                       talk_ms=500, password=PASSWORDS["101"], referred_by="102")

    assert second.ok, second.received()
    assert second.call_id != first.call_id
    assert target.wait().call_id == second.call_id
    evapi.wait_for(lambda e: e["event"] == "call.end" and e.get("leg_id") == second.call_id)
    # every event of both dialogs names the original call; leg_id tells the dialogs apart
    assert evapi.for_call(second.call_id) == []
    events = evapi.for_call(first.call_id)
    old = [e for e in events if e.get("leg_id", first.call_id).startswith(first.call_id)]
    new = [e for e in events if e.get("leg_id", "").startswith(second.call_id)]
    assert len(old) + len(new) == len(events)
    assert kinds(old) == ["call.start", "call.ringing", "call.answered", "call.transferred",
                          "call.end"]
    assert kinds(new) == ["call.start", "call.ringing", "call.answered", "call.end"]
    transferred = old[3]
    assert {k: transferred[k] for k in ("from", "to", "transferee", "kind")} == {
        "from": "102", "to": "103", "transferee": "101", "kind": "blind"}
    assert old[-1]["hangup_by"] == "102"
    assert (new[0]["transferred_from"], new[0]["referred_by"]) == (first.call_id, "102")
    assert [e["leg_id"] for e in new] == [second.call_id, f"{second.call_id}#0",
                                          second.call_id, second.call_id]
    assert (new[2]["agent"], new[3]["hangup_by"]) == ("103", "101")
    # the stream fold makes one CDR of it
    cdr = to_cdr(fold(first.call_id, decoded(events)))
    assert (cdr.disposition, cdr.closed, cdr.agent, cdr.hangup_by) == (
        Disposition.ANSWERED, True, "102", "101")
    assert [(t.transferred_from, t.transferred_to, t.kind) for t in cdr.transfers] == [
        ("102", "103", "blind")]
    assert [(leg.target, leg.outcome) for leg in cdr.legs] == [
        ("102", LegOutcome.ANSWERED), ("103", LegOutcome.ANSWERED)]
    # event times are kept to the millisecond: 1 ms of rounding either way
    assert abs(cdr.talk_ms - (new[-1]["ts"] - old[2]["ts"]) * 1000) <= 1


HOLD_MS = 1500
HOLD_SLACK_MS = 300
"""The 200 to each re-INVITE comes back in a few ms on loopback."""


def test_reinvite_hold_and_resume_give_held_and_resumed_and_the_cdr_hold_time(
    sip: sipp.Edge, evapi: EvapiListener, uas: list[sipp.Uas]
) -> None:
    callee = sipp.start_uas_answer(sip, port=CONTACT_PORTS["102"], media_port=next(MEDIA_PORTS),
                                   accept_reinvites=True)
    uas.append(callee)

    result = sipp.call_with_hold(sip, "101", "102", port=next(UAC_PORTS),
                                 media_port=next(MEDIA_PORTS), hold_ms=HOLD_MS,
                                 password=PASSWORDS["101"])

    assert result.ok, result.received()
    # 200 to the INVITE and to both re-INVITEs, and the callee answered both
    assert [m.first_line for m in result.messages if m.direction == "received"
            and m.cseq_method == "INVITE" and m.status == 200] == ["SIP/2.0 200 OK"] * 3
    callee_side = callee.wait()
    assert callee_side.exit_code == 0, callee_side.received()
    offers = [m.text for m in callee_side.messages
              if m.direction == "received" and m.method == "INVITE"]
    assert ["a=sendonly" in o for o in offers] == [False, True, False]
    events = call_events(evapi, result)
    assert kinds(events) == ["call.start", "call.ringing", "call.answered", "call.held",
                             "call.resumed", "call.end"]
    held, resumed = events[3:5]
    assert (held["held_by"], held["from"], held["to"]) == ("101", "101", "102")
    assert resumed["held_by"] == "101"
    assert abs((resumed["ts"] - held["ts"]) * 1000 - HOLD_MS) < HOLD_SLACK_MS
    # media went on through rtpengine across both re-INVITEs (20 ms PCMA packets)
    talk_s = events[-1]["ts"] - events[2]["ts"]
    assert events[-1]["media"]["packets"] >= talk_s * 50 and events[-1]["media"]["errors"] == 0
    cdr = to_cdr(fold(result.call_id, decoded(events)))
    assert cdr.closed and cdr.disposition is Disposition.ANSWERED
    assert abs(cdr.hold_ms - HOLD_MS) < HOLD_SLACK_MS
    assert abs(cdr.hold_ms - (resumed["ts"] - held["ts"]) * 1000) <= 1


def test_masked_client_number_reaches_only_the_trunk_and_the_call_is_recorded(
    sip: sipp.Edge, evapi: EvapiListener, uas: list[sipp.Uas]
) -> None:
    carrier = sipp.start_uas_carrier(sip, port=TRUNK_PORT, media_port=next(MEDIA_PORTS),
                                     number=CLIENT_NUMBER)
    uas.append(carrier)

    result = sipp.call(sip, "101", f"*77{CLIENT_CODE}", port=next(UAC_PORTS),
                       media_port=next(MEDIA_PORTS), talk_ms=1000, password=PASSWORDS["101"])

    assert result.ok, result.received()
    carrier_side = carrier.wait()
    # toward the trunk: the real number, with the company's caller ID
    assert carrier_saw(carrier_side, f"INVITE sip:{CLIENT_NUMBER}@127.0.0.1:{TRUNK_PORT}")
    assert carrier_saw(carrier_side, f"From: <sip:{COMPANY}@{DOMAIN}>")
    digits = CLIENT_NUMBER.lstrip("+")[1:]  # any spelling of the number: +7..., 8..., 7...
    received = [m for m in result.messages if m.direction == "received"]
    assert {m.first_line.split()[1] for m in received if m.status} >= {"407", "180", "200"}
    assert [m.first_line for m in received if digits in m.text] == []
    events = call_events(evapi, result)
    assert kinds(events) == ["call.start", "call.ringing", "call.answered", "call.end"]
    assert [e["event"] for e in events if digits in json.dumps(e)] == []
    shown = provision.masked_number(CLIENT_NUMBER)
    start = events[0]
    assert (start["to"], start["mask_code"], start["masked_to"]) == (
        f"*77{CLIENT_CODE}", CLIENT_CODE, shown)
    assert (events[1]["leg_to"], events[2]["agent"]) == (shown, shown)
    assert events[-1]["recorded"] is True


def test_group_pickup_star8_takes_a_call_ringing_a_group_peer(
    sip: sipp.Edge, evapi: EvapiListener, uas: list[sipp.Uas]
) -> None:
    ringing = sipp.start_uas_ring(sip, port=CONTACT_PORTS["102"])
    picker_phone = sipp.start_uas_answer(sip, port=CONTACT_PORTS["103"],
                                         media_port=next(MEDIA_PORTS))
    uas.extend([ringing, picker_phone])
    outcome: dict[str, sipp.SippResult] = {}
    caller = threading.Thread(target=lambda: outcome.update(call=sipp.call(
        sip, "101", "102", port=next(UAC_PORTS), media_port=next(MEDIA_PORTS), talk_ms=1000,
        password=PASSWORDS["101"])))
    started = time.time()
    caller.start()
    try:
        first_ring = evapi.wait_for(lambda e: e["event"] == "call.ringing"
                                    and e["leg_to"] == "102" and e["ts"] >= started)
        # uas_ring.xml takes a CANCEL only once it has sent its second 180
        assert edge.wait_until(lambda: ringing.trace.exists()
                               and ringing.trace.read_text().count("SIP/2.0 180") >= 2,
                               timeout=5)
        # 103 shares the sales group with 102: *8 takes the call to 103's phone
        star8 = sipp.call_expect_failure(sip, "103", "*8", 480, port=25092,
                                         media_port=next(MEDIA_PORTS), password=PASSWORDS["103"])
    finally:
        caller.join(30)

    assert star8.ok, star8.received()
    result = outcome["call"]
    assert result.ok, result.received()
    assert result.call_id == first_ring["call_id"]
    assert ringing.wait().exit_code == 0  # 102's branch was cancelled (487)
    assert picker_phone.wait().call_id == result.call_id  # one call id: a new branch
    events = call_events(evapi, result)
    assert kinds(events) == ["call.start", "call.ringing", "call.ringing", "call.picked_up",
                             "call.failed", "call.answered", "call.end"]
    assert [e["agent"] for e in events[1:3]] == ["102", "103"]
    assert (events[3]["picked_up_by"], events[3]["to"]) == ("103", "102")
    # 102's leg ends as 103 answers
    assert (events[4]["agent"], events[4]["code"], events[4]["leg_id"]) == (
        "102", 487, events[1]["leg_id"])
    assert events[5]["agent"] == events[6]["agent"] == "103"
    assert evapi.for_call(star8.call_id) == []


def test_star8_with_nothing_ringing_gets_404(sip: sipp.Edge, registered: None) -> None:
    result = sipp.call_expect_failure(sip, "103", "*8", 404, port=25092,
                                      media_port=next(MEDIA_PORTS), password=PASSWORDS["103"])
    assert result.ok, result.received()


# --- 2. provisioning live, and restored after a restart --------------------------------


def test_provisioning_change_applies_live_and_stale_entries_go(
    edge_stack: EdgeStack, provisioning_file: Path, tmp_path: Path
) -> None:
    changed = tmp_path / "changed.toml"
    changed.write_text(PROVISIONING.replace('password = "secret-103"', 'password = "new-103"')
                       .replace(f'[tenant.acme.did."{DID_SUPPORT}"]\nto = "group:support"\n', ""))
    settings = edge_stack.settings
    try:
        provision.apply(settings, changed, publish=False)
        creds = edge.kamailio_rpc(settings, "htable.get", "creds", f"103@{DOMAIN}")
        assert provision.ha1("103", DOMAIN, "new-103") in str(creds)
        with pytest.raises(edge.KamailioRpcError):
            edge.kamailio_rpc(settings, "htable.get", "pbx", f"did:{DID_SUPPORT}:to")
    finally:
        provision.apply(settings, provisioning_file, publish=False)
    assert "group:support" in str(
        edge.kamailio_rpc(settings, "htable.get", "pbx", f"did:{DID_SUPPORT}:to"))


def test_restore_after_a_kamailio_restart_serves_the_same_provisioning(
    edge_stack: EdgeStack, sip: sipp.Edge, applied: dict[str, provision.TenantState],
    evapi: EvapiListener,
) -> None:
    settings = edge_stack.settings
    evapi.close()  # the restart drops the evapi connection
    edge_stack.restart_kamailio()
    refused = sipp.register(sip, "102", port=CONTACT_PORTS["102"], password=PASSWORDS["102"],
                            expected_code=403)
    assert refused.ok, refused.received()  # a restarted edge knows no credentials

    calls = provision.restore(settings, reader=lambda _settings: applied)

    assert calls >= len(applied["acme"].entries())
    again = sipp.register(sip, "102", port=CONTACT_PORTS["102"], password=PASSWORDS["102"])
    assert again.ok, again.received()
    assert "group:sales" in str(
        edge.kamailio_rpc(settings, "htable.get", "pbx", f"did:{DID_SALES}:to"))
    listener = connect_evapi(settings.sip_host, settings.evapi_port)
    try:
        listener.wait_for(lambda e: e["event"] == "evapi.connected")
    finally:
        listener.close()
    assert edge_stack.alive()

