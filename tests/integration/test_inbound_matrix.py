"""Inbound call matrix end to end (issue 13): calls from the carrier to the tenant's DIDs,
placed and answered by sipp on the real stack, must leave in the warehouse the CDR and
every involved agent's state timeline that sipp's own message times say.

One stack (``tawag up``'s supervisor: Kafka, rtpengine, Kamailio with digest auth and the
PBX, ingest, streams, warehouse) on the port block 18000, RTP 42000-42499, a tenant in
Europe/Moscow with a wrap-up of :data:`WRAP_UP_S`. The carrier is a trunk source (no
digest auth); the agents are sipp callees on the contact ports they registered. The
scenarios, one test each, run one after the other on the same agents:

* DID -> extension: answered after ringing, busy (486), no answer (the edge's timer);
* DID -> ring-all group: one agent answers, the other is cancelled;
* DID -> ring-all group that nobody answers in its ring timeout -> forward to 101;
* DID -> extension, picked up by a group peer with ``*8``;
* DID -> extension, which blind-transfers the caller to a busy extension;
* DID -> sequential group: the first member does not answer in its time, the second does;
* DID -> extension that nobody answers -> forward to its mobile through the trunk;
* DID -> extension, which consults a colleague and transfers the client to it (attended,
  REFER with Replaces);
* DID -> extension, the client holds the call (a=sendonly or a=inactive) and resumes it;
* and for comparison two internal calls: 101 -> 102 answered, 101 -> 104 cancelled.

And the wallboard against the ground truth: one talking DID call, then several at once in
mixed states (ringing, talking, ended).

For each: the CDR (disposition, agent, sip code, started/answered/ended within
:data:`SLACK_S` of sipp's INVITE/200/BYE, legs, forwards, transfers) and each involved
agent's segments in ``agent_states FINAL`` (states in order, each boundary within
:data:`SLACK_S` of the sipp message that caused it: the callee's 180 sent, its 200 sent,
the CANCEL it received, the BYE; wrap-up ends :data:`WRAP_UP_S` after the BYE).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from stack_harness import running_stack, stack_settings, wait_for

from core.agent_records import AgentStatus
from core.settings import Settings
from edge import sipp
from warehouse.client import HttpClient, service_client
from warehouse.queries import wallboard
from warehouse.queries.agent_stats import state_timeline

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sip_edge"))
from sip_ua import Dialog, SipMessage, SipUa, sdp  # noqa: E402

pytestmark = pytest.mark.integration

BLOCK, RTP_MIN = 18000, 42000
TENANT, DOMAIN, ZONE = "acme", "pbx.test", "Europe/Moscow"
SLACK_S = 1.0
"""The issue's bound: states and boundaries within 1 s of sipp's message times."""
WRAP_UP_S = 2
NO_ANSWER_S = 2
"""Extension 104's no-answer time and the support group's ring timeout."""
RING_MS = 1000
"""An answering agent's phone rings this long first, so its ringing state shows."""
TALK_MS = 1500
PIPELINE_S = 60
"""Edge -> Kafka -> streams -> warehouse: the deadline for a call's rows to arrive."""

CALLER = "+79160000077"
"""The client calling from outside, through the carrier."""
CARRIER_PORT = BLOCK + 110
CARRIER_PORTS = (CARRIER_PORT, BLOCK + 111, BLOCK + 112, BLOCK + 113)
"""The carrier's trunk sources: concurrent calls each come from one of them."""
TRUNK_PORT = BLOCK + 115
"""Where the edge sends outside numbers (the carrier's side answering them)."""
MOBILE = "+79161230106"
"""106's mobile number, reached through the trunk when 106 does not answer."""
DIDS = {"102": "74951238102", "103": "74951238103", "104": "74951238104",
        "105": "74951238105", "106": "74951238106", "sales": "74951238001",
        "support": "74951238002", "hunt": "74951238003"}
AGENTS = ("101", "102", "103", "104", "105", "106")
PASSWORDS = {a: f"matrix-{a}" for a in AGENTS}
CONTACT_PORTS = {a: BLOCK + int(a) for a in AGENTS}  # 18101..18106
STAR8_PORT = BLOCK + 120
INTERNAL_PORT = BLOCK + 130
"""Where extension 101 places its own calls from (its phone listens on its contact)."""
MEDIA_PORTS = iter(range(RTP_MIN + 600, RTP_MIN + 2000, 4))
"""Above rtpengine's range; sipp binds media port .. +3."""
S = AgentStatus

PROVISIONING = f"""
[tenant.{TENANT}]
domain = "{DOMAIN}"
time_zone = "{ZONE}"
trunk = "127.0.0.1:{TRUNK_PORT}"
trunk_sources = {[f"127.0.0.1:{port}" for port in CARRIER_PORTS]}

[tenant.{TENANT}.extension.101]
password = "{PASSWORDS['101']}"

[tenant.{TENANT}.extension.102]
password = "{PASSWORDS['102']}"

[tenant.{TENANT}.extension.103]
password = "{PASSWORDS['103']}"

[tenant.{TENANT}.extension.104]
password = "{PASSWORDS['104']}"
no_answer_timeout = {NO_ANSWER_S}

[tenant.{TENANT}.extension.105]
password = "{PASSWORDS['105']}"

[tenant.{TENANT}.extension.106]
password = "{PASSWORDS['106']}"
mobile = "{MOBILE}"
no_answer_timeout = {NO_ANSWER_S}
forward = {{ no_answer = "mobile" }}

[tenant.{TENANT}.group.sales]
strategy = "ring_all"
members = ["102", "103"]
ring_timeout = 20

[tenant.{TENANT}.group.support]
strategy = "ring_all"
members = ["104", "105"]
ring_timeout = {NO_ANSWER_S}
forward = {{ no_answer = "ext:101" }}

[tenant.{TENANT}.group.hunt]
strategy = "sequential"
members = ["104", "105"]
ring_timeout = {NO_ANSWER_S}

[tenant.{TENANT}.did."{DIDS['102']}"]
to = "ext:102"

[tenant.{TENANT}.did."{DIDS['103']}"]
to = "ext:103"

[tenant.{TENANT}.did."{DIDS['104']}"]
to = "ext:104"

[tenant.{TENANT}.did."{DIDS['105']}"]
to = "ext:105"

[tenant.{TENANT}.did."{DIDS['106']}"]
to = "ext:106"

[tenant.{TENANT}.did."{DIDS['hunt']}"]
to = "group:hunt"

[tenant.{TENANT}.did."{DIDS['sales']}"]
to = "group:sales"

[tenant.{TENANT}.did."{DIDS['support']}"]
to = "group:support"
"""

WRAP_UPS: list[float] = [0.0]
"""Ends (epoch s) of the wrap-ups the scenarios so far expect (see ``agents_available``)."""
DEVIATIONS: list[float] = []
"""Every |warehouse boundary - sipp time| checked, for the report at the end."""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    settings = stack_settings(tmp_path_factory, "matrix", block=BLOCK, rtp_min=RTP_MIN,
                              provisioning=PROVISIONING, agent_wrap_up_s=WRAP_UP_S)
    with running_stack(settings):
        yield settings
    if DEVIATIONS:
        mean = sum(DEVIATIONS) / len(DEVIATIONS)
        print(f"\nmatrix: {len(DEVIATIONS)} boundaries, max deviation from sipp "
              f"{max(DEVIATIONS) * 1000:.0f} ms, mean {mean * 1000:.0f} ms")


@pytest.fixture(scope="module")
def sip(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> sipp.Edge:
    """The edge as sipp sees it, every agent registered from its contact port."""
    edge = sipp.Edge.from_settings(stack, tmp_path_factory.mktemp("sipp"))
    for agent in AGENTS:
        result = sipp.register(edge, agent, port=CONTACT_PORTS[agent],
                               password=PASSWORDS[agent])
        assert result.ok, result.received()
    return edge


@pytest.fixture(scope="module")
def warehouse(stack: Settings) -> HttpClient:
    return service_client(stack)


@pytest.fixture(autouse=True)
def agents_available() -> None:
    """Each scenario starts with every agent available: after the wrap-up the previous
    one ended with (a call offered in wrap-up is another scenario)."""
    # + 0.1 s: the edge stamps a BYE a few ms after sipp sends it
    wait_for("the previous scenario's wrap-ups to end",
             lambda: time.time() > max(WRAP_UPS) + 0.1, WRAP_UP_S + SLACK_S)


@pytest.fixture
def phones(sip: sipp.Edge) -> Iterator[list[sipp.Uas]]:
    """Callees a test starts; any still running at its end are stopped by PID."""
    started: list[sipp.Uas] = []
    yield started
    for one in started:
        one.stop()


# --- sipp's times -------------------------------------------------------------------------


def at(result: sipp.SippResult, direction: str, first_line: str,
       cseq: str | None = None) -> float:
    """When sipp sent/received the first message whose start line begins so (for a
    response: of the ``cseq`` method)."""
    found = next((m.at for m in result.messages if m.direction == direction
                  and m.first_line.startswith(first_line)
                  and (cseq is None or m.cseq_method == cseq)), None)
    assert found is not None, (direction, first_line, result.received(), result.trace)
    return found


def every(result: sipp.SippResult, direction: str, first_line: str,
          cseq: str | None = None) -> list[float]:
    """When sipp sent/received each message whose start line begins so, in order."""
    return [m.at for m in result.messages if m.direction == direction and m.at is not None
            and m.first_line.startswith(first_line) and (cseq is None or m.cseq_method == cseq)]


def sent(result: sipp.SippResult, first_line: str, cseq: str | None = None) -> float:
    return at(result, "sent", first_line, cseq)


def received(result: sipp.SippResult, first_line: str, cseq: str | None = None) -> float:
    return at(result, "received", first_line, cseq)


def carrier_call(sip: sipp.Edge, did: str, *, talk_ms: int = TALK_MS) -> sipp.SippResult:
    result = sipp.call(sip, CALLER, did, port=CARRIER_PORT, media_port=next(MEDIA_PORTS),
                       talk_ms=talk_ms)
    assert result.ok, result.received()
    return result


def answering(sip: sipp.Edge, agent: str, ring_ms: int = RING_MS) -> sipp.Uas:
    return sipp.start_uas_answer(sip, port=CONTACT_PORTS[agent], media_port=next(MEDIA_PORTS),
                                 ring_ms=ring_ms)


# --- the warehouse ------------------------------------------------------------------------


CDR_SQL = (
    "SELECT disposition, agent, direction, did, sip_code, hangup_by, route_group, closed, "
    "toUnixTimestamp64Milli(started_at) / 1000 AS started, "
    "toUnixTimestamp64Milli(answered_at) / 1000 AS answered, "
    "toUnixTimestamp64Milli(ended_at) / 1000 AS ended, ring_ms, talk_ms, hold_ms, "
    "arrayMap(l -> (tupleElement(l, 'target'), tupleElement(l, 'outcome')), legs) AS legs, "
    "arrayMap(f -> (tupleElement(f, 'forwarded_from'), tupleElement(f, 'forwarded_to'), "
    "  tupleElement(f, 'reason')), forwards) AS forwards, "
    "arrayMap(t -> (tupleElement(t, 'transferred_from'), tupleElement(t, 'transferred_to'), "
    "  tupleElement(t, 'kind')), transfers) AS transfers "
    "FROM cdrs FINAL WHERE tenant = {tenant:String} AND call_id = {call_id:String}")


def closed_cdr(client: HttpClient, call_id: str | None) -> dict[str, Any]:
    """The call's one CDR row, once closed."""
    def closed() -> dict[str, Any] | None:
        rows = client.query(CDR_SQL, {"tenant": TENANT, "call_id": call_id or ""})
        assert len(rows) <= 1, rows
        if not rows or not rows[0]["closed"]:
            return None
        # JSON gives a tuple as an object {"1": .., "2": ..}
        return {**rows[0], **{name: [tuple(item.values()) for item in rows[0][name]]
                              for name in ("legs", "forwards", "transfers")}}
    return wait_for(f"the closed CDR of {call_id}", closed, PIPELINE_S)


Line = list[tuple[str, float, float | None]]


def segments(client: HttpClient, agent: str, start: float) -> Line:
    """The agent's segments reaching past ``start`` (epoch s): state, since, until."""
    frame = state_timeline(client, TENANT, _utc(start), _utc(time.time() + 3600), agent)
    return [(row.state, row.since.timestamp(),
             None if row.until is None or row.until != row.until else row.until.timestamp())
            for row in frame.itertuples()]


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


@dataclass(frozen=True)
class Expected:
    """One segment as sipp says it must be: ``since``/``until`` None = not checked
    (the available segment before the call began earlier; the last one is open)."""

    state: AgentStatus
    since: float | None
    until: float | None


def assert_timeline(client: HttpClient, agent: str, start: float,
                    *options: list[Expected]) -> None:
    """The agent's segments from the one in force at ``start`` equal one of ``options``
    (usually one): same states, each checked boundary within SLACK_S; the last one open."""
    wanted = {tuple(e.state.value for e in option): option for option in options}
    seen: list[Line] = []

    def arrived() -> Line | None:
        line = segments(client, agent, start)
        seen.append(line)
        shape = tuple(s for s, _, _ in line)
        return line if shape in wanted and line[-1][2] is None else None

    try:
        line = wait_for(f"{agent}'s timeline {list(wanted)}", arrived, PIPELINE_S)
    except AssertionError:
        raise AssertionError(f"{agent}: expected {list(wanted)}, warehouse has {seen[-1]}"
                             ) from None
    expected = wanted[tuple(s for s, _, _ in line)]
    for want, (state, since, until) in zip(expected, line, strict=True):
        for sipp_time, edge_time in ((want.since, since), (want.until, until)):
            if sipp_time is not None:
                assert edge_time is not None, (agent, state, line)
                deviation = abs(edge_time - sipp_time)
                DEVIATIONS.append(deviation)
                assert deviation <= SLACK_S, (agent, state, edge_time, sipp_time, line)


def assert_near(name: str, edge_time: float | None, sipp_time: float) -> None:
    assert edge_time is not None, name
    deviation = abs(edge_time - sipp_time)
    DEVIATIONS.append(deviation)
    assert deviation <= SLACK_S, (name, edge_time, sipp_time)


def talked(answered: float, bye: float) -> list[Expected]:
    """On a call from the answer to the BYE, wrap-up, then available again."""
    WRAP_UPS.append(bye + WRAP_UP_S)
    return [Expected(S.ON_CALL, answered, bye),
            Expected(S.WRAP_UP, bye, bye + WRAP_UP_S),
            Expected(S.AVAILABLE, bye + WRAP_UP_S, None)]


BEFORE = Expected(S.AVAILABLE, None, None)
"""Available until the call: its start is some earlier call's or registration's."""


def rang(rang_at: float, stopped: float) -> list[Expected]:
    return [Expected(S.AVAILABLE, None, rang_at), Expected(S.RINGING, rang_at, stopped)]


def assert_call_times(cdr: dict[str, Any], caller: sipp.SippResult, *,
                      answered: bool) -> None:
    """Started at the carrier's INVITE, answered at its 200 (ring_ms the wait between),
    ended at its final response or BYE."""
    assert_near("started_at", cdr["started"], sent(caller, "INVITE"))
    if answered:
        answer = received(caller, "SIP/2.0 200", "INVITE")
        bye = sent(caller, "BYE")
        assert_near("answered_at", cdr["answered"], answer)
        assert_near("ended_at", cdr["ended"], bye)
        assert abs(cdr["talk_ms"] / 1000 - (bye - answer)) <= SLACK_S, cdr
        # the wait (ASA, service level): offer to answer, whoever rang before
        assert abs(cdr["ring_ms"] / 1000 - (answer - sent(caller, "INVITE"))) <= SLACK_S, cdr
    else:
        assert cdr["answered"] is None, cdr
        final = next(m.at for m in caller.messages if m.direction == "received"
                     and m.cseq_method == "INVITE" and (m.status or 0) >= 300)
        assert final is not None
        assert_near("ended_at", cdr["ended"], final)


def assert_inbound(cdr: dict[str, Any], did: str) -> None:
    assert (cdr["direction"], cdr["did"], cdr["closed"]) == ("inbound", f"+{did}", True), cdr


# --- DID -> extension -------------------------------------------------------------------------


def test_did_to_extension_answered(sip: sipp.Edge, warehouse: HttpClient,
                                   phones: list[sipp.Uas]) -> None:
    start = time.time()
    phone = answering(sip, "102")
    phones.append(phone)
    caller = carrier_call(sip, DIDS["102"])
    agent = phone.wait()
    assert agent.call_id == caller.call_id

    cdr = closed_cdr(warehouse, caller.call_id)
    assert_inbound(cdr, DIDS["102"])
    assert (cdr["disposition"], cdr["agent"], cdr["sip_code"]) == ("answered", "102", 200), cdr
    assert cdr["hangup_by"] == CALLER, cdr
    assert cdr["legs"] == [("102", "answered")], cdr
    assert_call_times(cdr, caller, answered=True)
    assert_timeline(warehouse, "102", start, [
        *rang(sent(agent, "SIP/2.0 180"), sent(agent, "SIP/2.0 200", "INVITE")),
        *talked(sent(agent, "SIP/2.0 200", "INVITE"), received(agent, "BYE"))])


def test_did_to_extension_busy(sip: sipp.Edge, warehouse: HttpClient,
                               phones: list[sipp.Uas]) -> None:
    start = time.time()
    phone = sipp.start_uas_busy(sip, port=CONTACT_PORTS["103"])
    phones.append(phone)
    caller = sipp.call_expect_failure(sip, CALLER, DIDS["103"], 486, port=CARRIER_PORT,
                                      media_port=next(MEDIA_PORTS))
    assert caller.ok, caller.received()
    assert phone.wait().exit_code == 0

    cdr = closed_cdr(warehouse, caller.call_id)
    assert_inbound(cdr, DIDS["103"])
    # Cdr.agent is who handled the call: nobody did; the leg names the agent refused
    assert (cdr["disposition"], cdr["agent"], cdr["sip_code"]) == ("busy", None, 486), cdr
    assert cdr["legs"] == [("103", "busy")], cdr
    assert_call_times(cdr, caller, answered=False)
    # busy on the phone: it never rang for this call, the agent stays available
    assert_timeline(warehouse, "103", start, [BEFORE])


def test_did_to_extension_no_answer(sip: sipp.Edge, warehouse: HttpClient,
                                    phones: list[sipp.Uas]) -> None:
    start = time.time()
    phone = sipp.start_uas_ring(sip, port=CONTACT_PORTS["104"])
    phones.append(phone)
    caller = sipp.call_expect_failure(sip, CALLER, DIDS["104"], 408, port=CARRIER_PORT,
                                      media_port=next(MEDIA_PORTS))
    assert caller.ok, caller.received()
    agent = phone.wait()
    assert agent.exit_code == 0, agent.received()

    cdr = closed_cdr(warehouse, caller.call_id)
    assert_inbound(cdr, DIDS["104"])
    assert (cdr["disposition"], cdr["agent"]) == ("no_answer", None), cdr
    assert cdr["legs"] == [("104", "no_answer")], cdr
    assert_call_times(cdr, caller, answered=False)
    cancelled = received(agent, "CANCEL")
    assert abs(cancelled - sent(agent, "SIP/2.0 180") - NO_ANSWER_S) <= SLACK_S
    assert_timeline(warehouse, "104", start, [
        *rang(sent(agent, "SIP/2.0 180"), cancelled), Expected(S.AVAILABLE, cancelled, None)])


# --- DID -> groups ------------------------------------------------------------------------


def test_did_to_ring_all_group_one_answers_the_other_is_cancelled(
    sip: sipp.Edge, warehouse: HttpClient, phones: list[sipp.Uas]
) -> None:
    start = time.time()
    winner, loser = answering(sip, "102"), sipp.start_uas_ring(sip, port=CONTACT_PORTS["103"])
    phones.extend([winner, loser])
    caller = carrier_call(sip, DIDS["sales"])
    a, b = winner.wait(), loser.wait()
    assert b.exit_code == 0, b.received()

    cdr = closed_cdr(warehouse, caller.call_id)
    assert_inbound(cdr, DIDS["sales"])
    assert (cdr["disposition"], cdr["agent"], cdr["route_group"]) == (
        "answered", "102", "sales"), cdr
    assert sorted(cdr["legs"]) == [("102", "answered"), ("103", "cancelled")], cdr
    assert_call_times(cdr, caller, answered=True)
    answer = sent(a, "SIP/2.0 200", "INVITE")
    assert_timeline(warehouse, "102", start, [
        *rang(sent(a, "SIP/2.0 180"), answer), *talked(answer, received(a, "BYE"))])
    cancelled = received(b, "CANCEL")
    assert_near("103 cancelled at 102's answer", cancelled, answer)
    assert_timeline(warehouse, "103", start, [
        *rang(sent(b, "SIP/2.0 180"), cancelled), Expected(S.AVAILABLE, cancelled, None)])


def test_group_no_answer_forwards_to_an_extension(
    sip: sipp.Edge, warehouse: HttpClient, phones: list[sipp.Uas]
) -> None:
    start = time.time()
    members = [sipp.start_uas_ring(sip, port=CONTACT_PORTS[a]) for a in ("104", "105")]
    target = answering(sip, "101")
    phones.extend([*members, target])
    caller = carrier_call(sip, DIDS["support"])
    rung = [m.wait() for m in members]
    c = target.wait()
    assert all(r.exit_code == 0 for r in rung), [r.received() for r in rung]

    cdr = closed_cdr(warehouse, caller.call_id)
    assert_inbound(cdr, DIDS["support"])
    assert (cdr["disposition"], cdr["agent"]) == ("answered", "101"), cdr
    assert sorted(cdr["legs"]) == [("101", "answered"), ("104", "no_answer"),
                                   ("105", "no_answer")], cdr
    assert [(to, reason) for _, to, reason in cdr["forwards"]] == [("ext:101", "no_answer")], cdr
    assert_call_times(cdr, caller, answered=True)
    for agent, member in zip(("104", "105"), rung, strict=True):
        cancelled = received(member, "CANCEL")
        assert abs(cancelled - sent(member, "SIP/2.0 180") - NO_ANSWER_S) <= SLACK_S
        assert_timeline(warehouse, agent, start, [
            *rang(sent(member, "SIP/2.0 180"), cancelled),
            Expected(S.AVAILABLE, cancelled, None)])
    answer = sent(c, "SIP/2.0 200", "INVITE")
    assert_timeline(warehouse, "101", start, [
        *rang(sent(c, "SIP/2.0 180"), answer), *talked(answer, received(c, "BYE"))])


# --- pickup and transfer --------------------------------------------------------------------


def test_pickup_of_a_did_call_by_a_group_peer(
    sip: sipp.Edge, warehouse: HttpClient, phones: list[sipp.Uas]
) -> None:
    start = time.time()
    ringing = sipp.start_uas_ring(sip, port=CONTACT_PORTS["102"])
    picker = answering(sip, "103", ring_ms=500)
    phones.extend([ringing, picker])
    outcome: dict[str, sipp.SippResult] = {}
    thread = threading.Thread(target=lambda: outcome.update(
        call=sipp.call(sip, CALLER, DIDS["102"], port=CARRIER_PORT,
                       media_port=next(MEDIA_PORTS), talk_ms=TALK_MS)))
    thread.start()
    try:
        # uas_ring.xml takes a CANCEL only once it has sent its second 180
        wait_for("102 ringing twice", lambda: ringing.trace.exists()
                 and ringing.trace.read_text().count("SIP/2.0 180") >= 2, 10)
        star8 = sipp.call_expect_failure(sip, "103", "*8", 480, port=STAR8_PORT,
                                         media_port=next(MEDIA_PORTS),
                                         password=PASSWORDS["103"])
    finally:
        thread.join(30)
    assert star8.ok, star8.received()
    caller = outcome["call"]
    assert caller.ok, caller.received()
    rung, c = ringing.wait(), picker.wait()
    assert rung.exit_code == 0 and c.call_id == caller.call_id

    cdr = closed_cdr(warehouse, caller.call_id)
    assert_inbound(cdr, DIDS["102"])
    assert (cdr["disposition"], cdr["agent"]) == ("answered", "103"), cdr
    assert cdr["legs"] == [("102", "picked_up"), ("103", "answered")], cdr
    assert_call_times(cdr, caller, answered=True)
    cancelled = received(rung, "CANCEL")
    assert_timeline(warehouse, "102", start, [
        *rang(sent(rung, "SIP/2.0 180"), cancelled), Expected(S.AVAILABLE, cancelled, None)])
    answer = sent(c, "SIP/2.0 200", "INVITE")
    assert_timeline(warehouse, "103", start, [
        *rang(sent(c, "SIP/2.0 180"), answer), *talked(answer, received(c, "BYE"))])


def test_blind_transfer_of_a_did_call_to_a_busy_extension(
    sip: sipp.Edge, warehouse: HttpClient, phones: list[sipp.Uas], tmp_path: Path
) -> None:
    start = time.time()
    busy = sipp.start_uas_busy(sip, port=CONTACT_PORTS["103"])
    transferor = sipp.start_uas_transferor(sip, port=CONTACT_PORTS["102"],
                                           media_port=next(MEDIA_PORTS), refer_to="103",
                                           talk_ms=TALK_MS)
    phones.extend([busy, transferor])
    first = sipp.run_scenario(sip, "uac_carrier_transferred.xml", [
        "-s", DIDS["102"], "-key", "caller", CALLER, "-p", str(CARRIER_PORT),
        "-mp", str(next(MEDIA_PORTS))], label="carrier-xfer", expected_code=200)
    assert first.ok, first.received()
    b = transferor.wait()
    assert b.exit_code == 0, b.received()
    # the client's side follows the REFER: it calls the Refer-To target, which is busy
    second = sipp.run_scenario(sip, "uac_carrier_fail_referred.xml", [
        "-s", "103", "-key", "caller", CALLER, "-p", str(CARRIER_PORT),
        "-mp", str(next(MEDIA_PORTS)), "-key", "referred_by", "102"],
        label="carrier-xfer-busy", expected_code=486)
    assert second.ok, second.received()
    assert busy.wait().exit_code == 0

    cdr = closed_cdr(warehouse, first.call_id)
    assert_inbound(cdr, DIDS["102"])
    assert (cdr["disposition"], cdr["agent"], cdr["sip_code"], cdr["hangup_by"]) == (
        "answered", "102", 200, "102"), cdr
    assert cdr["legs"] == [("102", "answered"), ("103", "busy")], cdr
    assert cdr["transfers"] == [("102", "103", "blind")], cdr
    answer, bye = sent(b, "SIP/2.0 200", "INVITE"), sent(b, "BYE")
    assert_near("answered_at", cdr["answered"], received(first, "SIP/2.0 200", "INVITE"))
    # the talk ended when 102 hung up after the REFER, not when the target refused
    assert_near("ended_at", cdr["ended"], bye)
    assert abs(cdr["talk_ms"] / 1000 - (bye - answer)) <= SLACK_S, cdr
    # the transferor's phone answers as it rings (180 and 200 back to back): the edge
    # may stamp them in either order, so a ringing state shows or not
    assert_timeline(warehouse, "102", start,
                    [*rang(sent(b, "SIP/2.0 180"), answer), *talked(answer, bye)],
                    [Expected(S.AVAILABLE, None, answer), *talked(answer, bye)])
    assert_timeline(warehouse, "103", start, [BEFORE])


# --- sequential group, forward to a mobile --------------------------------------------------


def test_did_to_sequential_group_first_times_out_second_answers(
    sip: sipp.Edge, warehouse: HttpClient, phones: list[sipp.Uas]
) -> None:
    start = time.time()
    first, second = sipp.start_uas_ring(sip, port=CONTACT_PORTS["104"]), answering(sip, "105")
    phones.extend([first, second])
    caller = carrier_call(sip, DIDS["hunt"])
    a, b = first.wait(), second.wait()
    assert a.exit_code == 0, a.received()
    assert b.call_id == caller.call_id

    cdr = closed_cdr(warehouse, caller.call_id)
    assert_inbound(cdr, DIDS["hunt"])
    assert (cdr["disposition"], cdr["agent"], cdr["route_group"]) == (
        "answered", "105", "hunt"), cdr
    assert cdr["legs"] == [("104", "no_answer"), ("105", "answered")], cdr
    assert cdr["forwards"] == [], cdr
    assert_call_times(cdr, caller, answered=True)
    timed_out = received(a, "CANCEL")
    assert abs(timed_out - sent(a, "SIP/2.0 180") - NO_ANSWER_S) <= SLACK_S
    assert_timeline(warehouse, "104", start, [
        *rang(sent(a, "SIP/2.0 180"), timed_out), Expected(S.AVAILABLE, timed_out, None)])
    # the second member rings only once the first one's time is over
    rang_at, answer = sent(b, "SIP/2.0 180"), sent(b, "SIP/2.0 200", "INVITE")
    assert rang_at >= timed_out - SLACK_S
    assert_timeline(warehouse, "105", start, [
        *rang(rang_at, answer), *talked(answer, received(b, "BYE"))])


def test_did_to_extension_no_answer_forwards_to_its_mobile(
    sip: sipp.Edge, warehouse: HttpClient, phones: list[sipp.Uas]
) -> None:
    start = time.time()
    extension = sipp.start_uas_ring(sip, port=CONTACT_PORTS["106"])
    mobile = sipp.start_uas_carrier(sip, port=TRUNK_PORT, media_port=next(MEDIA_PORTS),
                                    number=MOBILE)
    phones.extend([extension, mobile])
    caller = carrier_call(sip, DIDS["106"])
    rung, outside = extension.wait(), mobile.wait()
    assert rung.exit_code == 0, rung.received()
    assert outside.call_id == caller.call_id, outside.received()
    assert outside.messages[0].first_line.startswith(f"INVITE sip:{MOBILE}@127.0.0.1:{TRUNK_PORT}")

    cdr = closed_cdr(warehouse, caller.call_id)
    assert_inbound(cdr, DIDS["106"])
    # answered by the outside number: no agent of the tenant talked
    assert (cdr["disposition"], cdr["agent"], cdr["hangup_by"]) == (
        "answered", MOBILE, CALLER), cdr
    assert cdr["legs"] == [("106", "no_answer"), (MOBILE, "answered")], cdr
    assert cdr["forwards"] == [("ext:106", f"tel:{MOBILE}", "no_answer")], cdr
    assert_call_times(cdr, caller, answered=True)
    timed_out = received(rung, "CANCEL")
    assert abs(timed_out - sent(rung, "SIP/2.0 180") - NO_ANSWER_S) <= SLACK_S
    assert_timeline(warehouse, "106", start, [
        *rang(sent(rung, "SIP/2.0 180"), timed_out), Expected(S.AVAILABLE, timed_out, None)])


# --- attended transfer ----------------------------------------------------------------------


@dataclass
class Phone:
    """An agent's phone as a small SIP UA (tests/sip_edge/sip_ua.py), for the parties of
    an attended transfer that hold two dialogs at once (one sipp scenario cannot), with
    the times of what it did."""

    ua: SipUa
    times: dict[str, float]

    def answer(self, invite: SipMessage, media_port: int, *, ring: bool = True) -> Dialog:
        """Ring RING_MS (the person picking up), then answer; times ``ring`` and
        ``answer`` (a second answer: ``answer_again``)."""
        key = "answer" if "answer" not in self.times else "answer_again"
        if ring:
            self.times["ring"] = time.time()
        dialog = self.ua.answer(invite, sdp("127.0.0.1", media_port), ring=ring,
                                after_ring=lambda: time.sleep(RING_MS / 1000))
        self.times[key] = time.time()
        return dialog


@pytest.fixture
def ua_phones(sip: sipp.Edge) -> Iterator[dict[str, Phone]]:
    """102's and 103's phones as SIP UAs on the contact ports they registered."""
    out = {a: Phone(SipUa(a, PASSWORDS[a], CONTACT_PORTS[a], (sip.host, sip.port), DOMAIN), {})
           for a in ("102", "103")}
    yield out
    for phone in out.values():
        phone.ua.close()


def consulted_side(c: Phone, out: dict[str, Any]) -> None:
    """103: answers 102's consultation, then the client's INVITE that replaces it (no
    ringing, RFC 3891 3), ends the consultation with BYE and takes the client's BYE."""
    try:
        consult = c.answer(c.ua.wait_request("INVITE"), next(MEDIA_PORTS))
        replacing = c.ua.wait_request("INVITE", timeout=PIPELINE_S)
        out["replaces"] = replacing.get("Replaces")
        c.answer(replacing, next(MEDIA_PORTS), ring=False)
        c.times["consult_bye"] = time.time()
        out["consult_bye"] = consult.request("BYE").status
        out["client_bye"] = c.ua.wait_request("BYE", timeout=PIPELINE_S).call_id
        c.times["client_bye"] = time.time()
    except Exception as exc:  # reported by the test thread
        out["error"] = repr(exc)


def test_attended_transfer_of_a_did_call(
    sip: sipp.Edge, warehouse: HttpClient, ua_phones: dict[str, Phone]
) -> None:
    """The client calls 102's DID; 102 answers, holds the client, consults 103 in a call
    of its own and REFERs the client with Replaces; the client calls 103, which takes
    that call in place of the consultation; the client talks to 103 and hangs up."""
    start = time.time()
    b, c = ua_phones["102"], ua_phones["103"]
    runs: dict[str, sipp.SippResult] = {}
    client = threading.Thread(target=lambda: runs.update(first=sipp.run_scenario(
        sip, "uac_carrier_attended.xml", ["-s", DIDS["102"], "-key", "caller", CALLER,
                                          "-p", str(CARRIER_PORT), "-mp", str(next(MEDIA_PORTS))],
        label="carrier-attended", expected_code=200)))
    client.start()
    target: dict[str, Any] = {}
    consulted = threading.Thread(target=consulted_side, args=(c, target))
    try:
        ab = b.answer(b.ua.wait_request("INVITE"), next(MEDIA_PORTS))
        held = ab.request("INVITE", body=sdp("127.0.0.1", next(MEDIA_PORTS), "sendonly",
                                             session=2))
        assert held.status == 200, held.first_line
        b.times["held"] = time.time()
        consulted.start()
        answer, bc = b.ua.invite("103", sdp("127.0.0.1", next(MEDIA_PORTS)))
        assert answer.status == 200 and bc is not None, answer.first_line
        replaces = f"{bc.call_id};to-tag={bc.remote_tag};from-tag={bc.local_tag}"
        refer = ab.request("REFER", headers=[
            ("Refer-To", f"<sip:103@{DOMAIN}?Replaces={quote(replaces, safe='')}>"),
            ("Referred-By", f"<sip:102@{DOMAIN}>")])
        assert refer.status == 202, refer.first_line
        b.ua.wait_request("NOTIFY")
        b.times["bye"] = time.time()
        assert ab.request("BYE").status == 200
    finally:
        client.join(PIPELINE_S)
    first = runs["first"]
    assert first.ok, first.received()
    second = sipp.run_scenario(sip, "uac_carrier_replaces.xml", [
        "-s", "103", "-key", "caller", CALLER, "-p", str(CARRIER_PORT),
        "-mp", str(next(MEDIA_PORTS)), "-d", str(TALK_MS), "-key", "referred_by", "102",
        "-key", "replaces", replaces], label="carrier-replaces", expected_code=200)
    consulted.join(PIPELINE_S)
    assert second.ok, second.received()
    assert "error" not in target, target["error"]
    assert target["replaces"] == replaces and target["consult_bye"] == 200, target
    assert b.ua.wait_request("BYE").call_id == bc.call_id  # 103 ended the consultation

    cdr = closed_cdr(warehouse, first.call_id)
    assert_inbound(cdr, DIDS["102"])
    assert (cdr["disposition"], cdr["agent"], cdr["hangup_by"]) == (
        "answered", "102", CALLER), cdr
    assert cdr["legs"] == [("102", "answered"), ("103", "answered")], cdr
    assert cdr["transfers"] == [("102", "103", "attended")], cdr
    assert_near("answered_at", cdr["answered"], received(first, "SIP/2.0 200", "INVITE"))
    # the client's talk goes on with 103 until its BYE on the new dialog
    assert_near("ended_at", cdr["ended"], sent(second, "BYE"))
    # 102 held the client until its BYE: a hold open at its dialog's end ends there, not
    # at the end of the call, which goes on in the client's new dialog with 103
    assert abs(cdr["hold_ms"] / 1000 - (b.times["bye"] - b.times["held"])) <= SLACK_S, cdr
    consult = closed_cdr(warehouse, bc.call_id)
    assert (consult["direction"], consult["disposition"], consult["agent"],
            consult["hangup_by"]) == ("internal", "answered", "103", "103"), consult
    assert_near("consultation ended_at", consult["ended"], c.times["consult_bye"])

    # 102: on a call from its answer until the consultation ended (its BYE to the
    # client came first); 103: from the consultation's answer to the client's BYE
    assert_timeline(warehouse, "102", start, [
        *rang(b.times["ring"], b.times["answer"]),
        *talked(b.times["answer"], c.times["consult_bye"])])
    assert_timeline(warehouse, "103", start, [
        *rang(c.times["ring"], c.times["answer"]),
        *talked(c.times["answer"], sent(second, "BYE"))])


# --- hold -----------------------------------------------------------------------------------

HOLD_MS = 2000


@pytest.mark.parametrize("direction", ["sendonly", "inactive"])
def test_hold_of_a_did_call_counts_in_the_cdr(
    sip: sipp.Edge, warehouse: HttpClient, phones: list[sipp.Uas], direction: str
) -> None:
    """The client holds the call (re-INVITE a=sendonly, or a=inactive) and resumes it:
    hold_ms is the time between the two accepted re-INVITEs, and talk_ms, answer to
    end, includes it (glossary: AHT/ACD count hold as talk)."""
    start = time.time()
    phone = sipp.start_uas_answer(sip, port=CONTACT_PORTS["102"], media_port=next(MEDIA_PORTS),
                                  accept_reinvites=True)
    phones.append(phone)
    caller = sipp.run_scenario(sip, "uac_carrier_hold.xml", [
        "-s", DIDS["102"], "-key", "caller", CALLER, "-p", str(CARRIER_PORT),
        "-mp", str(next(MEDIA_PORTS)), "-d", str(HOLD_MS), "-key", "hold", direction],
        label=f"carrier-hold-{direction}", expected_code=200)
    assert caller.ok, caller.received()
    agent = phone.wait()
    assert agent.exit_code == 0, agent.received()

    cdr = closed_cdr(warehouse, caller.call_id)
    assert_inbound(cdr, DIDS["102"])
    assert (cdr["disposition"], cdr["agent"], cdr["hangup_by"]) == ("answered", "102", CALLER)
    assert_call_times(cdr, caller, answered=True)
    _, held, resumed = every(caller, "received", "SIP/2.0 200", "INVITE")
    assert abs(cdr["hold_ms"] / 1000 - (resumed - held)) <= SLACK_S, (cdr, resumed - held)
    assert cdr["hold_ms"] < cdr["talk_ms"], cdr
    answer, bye = sent(agent, "SIP/2.0 200", "INVITE"), received(agent, "BYE")
    # on hold is still on a call; the phone answers as it rings (see the blind transfer)
    assert_timeline(warehouse, "102", start,
                    [*rang(sent(agent, "SIP/2.0 180"), answer), *talked(answer, bye)],
                    [Expected(S.AVAILABLE, None, answer), *talked(answer, bye)])


# --- internal calls, for comparison ---------------------------------------------------------


def test_internal_call_answered_both_agents_talk(
    sip: sipp.Edge, warehouse: HttpClient, phones: list[sipp.Uas]
) -> None:
    start = time.time()
    phone = answering(sip, "102")
    phones.append(phone)
    caller = sipp.call(sip, "101", "102", port=INTERNAL_PORT, media_port=next(MEDIA_PORTS),
                       talk_ms=TALK_MS, password=PASSWORDS["101"])
    assert caller.ok, caller.received()
    agent = phone.wait()

    cdr = closed_cdr(warehouse, caller.call_id)
    assert (cdr["direction"], cdr["disposition"], cdr["agent"], cdr["hangup_by"]) == (
        "internal", "answered", "102", "101"), cdr
    assert cdr["legs"] == [("102", "answered")], cdr
    # the edge's call starts at the INVITE it accepted: the one after the 407
    assert_near("started_at", cdr["started"], [m.at for m in caller.messages
                                               if m.method == "INVITE"][-1] or 0.0)
    answer, bye = sent(agent, "SIP/2.0 200", "INVITE"), received(agent, "BYE")
    assert_near("answered_at", cdr["answered"], received(caller, "SIP/2.0 200", "INVITE"))
    assert_near("ended_at", cdr["ended"], sent(caller, "BYE"))
    assert_timeline(warehouse, "102", start, [*rang(sent(agent, "SIP/2.0 180"), answer),
                                              *talked(answer, bye)])
    # the caller: on the call from the answer it received to its BYE
    assert_timeline(warehouse, "101", start, [
        Expected(S.AVAILABLE, None, received(caller, "SIP/2.0 200", "INVITE")),
        *talked(received(caller, "SIP/2.0 200", "INVITE"), sent(caller, "BYE"))])


def test_internal_call_cancelled_by_the_caller(
    sip: sipp.Edge, warehouse: HttpClient, phones: list[sipp.Uas]
) -> None:
    start = time.time()
    phone = sipp.start_uas_ring(sip, port=CONTACT_PORTS["105"])
    phones.append(phone)
    caller = sipp.call_and_cancel(sip, "101", "105", ring_ms=RING_MS, port=INTERNAL_PORT,
                                  media_port=next(MEDIA_PORTS), password=PASSWORDS["101"])
    assert caller.ok, caller.received()
    agent = phone.wait()
    assert agent.exit_code == 0, agent.received()

    cdr = closed_cdr(warehouse, caller.call_id)
    assert (cdr["direction"], cdr["disposition"], cdr["agent"]) == (
        "internal", "cancelled", None), cdr
    assert cdr["legs"] == [("105", "cancelled")], cdr
    assert cdr["answered"] is None, cdr
    assert_near("ended_at", cdr["ended"], sent(caller, "CANCEL"))
    cancelled = received(agent, "CANCEL")
    assert_timeline(warehouse, "105", start, [
        *rang(sent(agent, "SIP/2.0 180"), cancelled), Expected(S.AVAILABLE, cancelled, None)])
    assert_timeline(warehouse, "101", start, [BEFORE])  # it never talked


# --- the wallboard against the live call ---------------------------------------------------

WALLBOARD_TALK_MS = 10_000
"""Long enough for the wallboard to show the call while it still talks (the pipeline takes
a second or two from the edge's event to the warehouse)."""


def test_the_wallboard_shows_the_talking_did_call_and_its_agent_then_neither(
        sip: sipp.Edge, warehouse: HttpClient, phones: list[sipp.Uas]) -> None:
    """What the wallboard page reads (warehouse.queries.wallboard), while a DID call to 102
    talks: one talking call, answered by 102, and one agent on a call; once it ended and
    102's wrap-up is over: no live call and nobody on a call."""
    since = _utc(time.time() - 60)
    phone = answering(sip, "102")
    phones.append(phone)
    done: dict[str, sipp.SippResult] = {}
    call = threading.Thread(target=lambda: done.update(
        caller=carrier_call(sip, DIDS["102"], talk_ms=WALLBOARD_TALK_MS)))
    call.start()
    try:
        def talking() -> bool:
            summary = wallboard.live_summary(warehouse, TENANT, since)
            states = wallboard.agents_by_state(warehouse, TENANT)
            return summary == {"ringing": 0, "talking": 1} and states["on_call"] == 1
        wait_for("the wallboard to show the call talking", talking,
                 WALLBOARD_TALK_MS / 1000)
        assert call.is_alive(), "the call ended before the wallboard showed it"
        live = wallboard.live_calls(warehouse, TENANT, since)
        assert list(live["agent"]) == ["102"] and list(live["state"]) == ["talking"]
    finally:
        call.join()
    assert phone.wait().call_id == done["caller"].call_id
    WRAP_UPS.append(time.time() + WRAP_UP_S)

    def quiet() -> bool:
        summary = wallboard.live_summary(warehouse, TENANT, since)
        return summary == {"ringing": 0, "talking": 0} and \
            wallboard.agents_by_state(warehouse, TENANT)["on_call"] == 0
    wait_for("the wallboard to show no live call and nobody on a call", quiet, PIPELINE_S)


MIXED_MS = 12_000
"""How long the talking call talks and the ringing call rings in the mixed-traffic test:
long enough for the ended call's wrap-up to pass and the wallboard to catch up."""


def test_the_wallboard_agrees_with_mixed_live_did_calls_then_shows_none(
        sip: sipp.Edge, warehouse: HttpClient, phones: list[sipp.Uas]) -> None:
    """Demo-like traffic, four DID calls at once from four trunk sources: 106 answers and
    talks; 103 and 105 ring unanswered until their clients give up; 104 answers and its
    client hangs up at once. While the first three are still live and 104's wrap-up is
    over, the wallboard must show exactly what sipp does: two ringing and one talking
    call, two agents ringing, one on a call, the others available; once all ended, no
    live call and every agent available.

    (The ringing calls are direct: a ring-all group's second 180, from another branch,
    aborts sipp's cancelling caller while it pauses; the group's ringing agents have
    their own timeline test above.)"""
    since = _utc(time.time() - 60)
    talker, short = answering(sip, "106", ring_ms=200), answering(sip, "104", ring_ms=200)
    ringers = [sipp.start_uas_ring(sip, port=CONTACT_PORTS[a]) for a in ("103", "105")]
    phones.extend([talker, short, *ringers])
    done: dict[str, sipp.SippResult] = {}
    calls = {
        "talking": lambda: sipp.call(sip, CALLER, DIDS["106"], port=CARRIER_PORTS[0],
                                     media_port=next(MEDIA_PORTS), talk_ms=MIXED_MS),
        "ringing": lambda: sipp.call_and_cancel(sip, CALLER, DIDS["103"], ring_ms=MIXED_MS,
                                                port=CARRIER_PORTS[1],
                                                media_port=next(MEDIA_PORTS)),
        "ringing too": lambda: sipp.call_and_cancel(sip, CALLER, DIDS["105"],
                                                    ring_ms=MIXED_MS, port=CARRIER_PORTS[3],
                                                    media_port=next(MEDIA_PORTS)),
        "ended": lambda: sipp.call(sip, CALLER, DIDS["104"], port=CARRIER_PORTS[2],
                                   media_port=next(MEDIA_PORTS), talk_ms=300)}
    threads = {name: threading.Thread(target=lambda n=name, f=run: done.update({n: f()}))
               for name, run in calls.items()}
    for thread in threads.values():
        thread.start()
    expected_agents = {"available": len(AGENTS) - 3, "ringing": 2, "on_call": 1,
                       "wrap_up": 0, "offline": 0}
    try:
        threads["ended"].join(30)
        ended_at = sent(done["ended"], "BYE")
        wait_for("104's wrap-up to end", lambda: time.time() > ended_at + WRAP_UP_S + 0.1,
                 WRAP_UP_S + SLACK_S)

        def agrees() -> float | None:
            moment = time.time()
            summary = wallboard.live_summary(warehouse, TENANT, since)
            states = wallboard.agents_by_state(warehouse, TENANT)
            seen.append((summary, states))
            live = summary == {"ringing": 2, "talking": 1} and states == expected_agents
            return moment if live else None
        seen: list[tuple[dict[str, int], dict[str, Any]]] = []
        try:
            moment = wait_for("the wallboard to agree with the mixed calls", agrees,
                              MIXED_MS / 1000)
        except AssertionError:
            raise AssertionError(f"wallboard saw {seen[-1]}") from None
    finally:
        for thread in threads.values():
            thread.join(30)
    results = {name: done[name] for name in calls}
    assert all(r.ok for r in results.values()), {n: r.received() for n, r in results.items()}
    # sipp's ground truth at that moment: talking, ringing, and ended with its wrap-up over
    talking, ended = results["talking"], results["ended"]
    assert received(talking, "SIP/2.0 200", "INVITE") < moment < sent(talking, "BYE")
    for ringing, phone in zip((results["ringing"], results["ringing too"]), ringers,
                              strict=True):
        rung = phone.wait()
        assert rung.call_id == ringing.call_id, rung.received()
        assert sent(rung, "SIP/2.0 180") < moment < sent(ringing, "CANCEL")
    assert sent(ended, "BYE") + WRAP_UP_S < moment
    assert talker.wait().call_id == talking.call_id
    WRAP_UPS.append(sent(talking, "BYE") + WRAP_UP_S)

    def quiet() -> bool:
        return wallboard.live_summary(warehouse, TENANT, since) == {
            "ringing": 0, "talking": 0} and wallboard.agents_by_state(warehouse, TENANT) == {
            **expected_agents, "available": len(AGENTS), "ringing": 0, "on_call": 0}
    wait_for("the wallboard to show no live call and every agent available", quiet,
             PIPELINE_S)
