"""Routing from the streams, end to end (issue 14): the CRM's responsible manager and
longest_idle, least_calls and round_robin groups, on the real stack with sipp.

One stack (``tawag up``'s supervisor: Kafka, rtpengine, Kamailio, ingest, streams, the
edge's live-routing applier, warehouse) on the port block 29000. Agents register with
sipp; their availability reaches the edge only through the streams (registration event
-> agent state -> routing fact -> htable "live"). The client's responsible manager is a
``tawag.crm-contacts`` record sent by the connectors' own publisher
(:class:`connectors.contacts.ContactPublisher`), as the connectors do after a CRM lookup.
Each test reads the call's events back from ``tawag.call-events`` and asserts the
``route.decided`` events and who rang.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from stack_harness import htable_value, register_available, running_stack, stack_settings, wait_for

from connectors.base import Contact
from connectors.contacts import ContactPublisher
from core.events import Event, EventType, from_json
from core.settings import Settings
from edge import sipp
from streams.folds.routing import idle_order, least_calls_order
from tawag.supervisor import read_pid, terminate

pytestmark = pytest.mark.integration

BLOCK, RTP_MIN = 29000, 44500
TENANT, DOMAIN = "acme", "pbx.test"
CARRIER_PORT = BLOCK + 110
AGENTS = ("101", "102", "103", "104")
"""104 is provisioned but never registers: an offline manager."""
PASSWORDS = {a: f"live-{a}" for a in AGENTS}
CONTACT_PORTS = {a: BLOCK + int(a) for a in AGENTS}
MEDIA_PORTS = iter(range(RTP_MIN + 600, RTP_MIN + 2000, 4))
MANAGER_TIMEOUT_S = 2
DID_SALES, DID_IDLE, DID_103 = "74951239001", "74951239002", "74951239103"
"""sales: ring-all 101, 102, 103; idle: longest_idle 103, 102, 101; 103: straight there."""
DID_LEAST, DID_RR, DID_101, DID_102 = "74951239003", "74951239004", "74951239101", "74951239102"
"""least: least_calls 101, 102, 103; rr: round_robin 101, 102, 103; 101/102: straight there."""
CLIENT, CLIENT_OF_OFFLINE, CLIENT_NO_ANSWER = "+79160000091", "+79160000092", "+79160000093"
PIPELINE_S = 30

PROVISIONING = f"""
[tenant.{TENANT}]
domain = "{DOMAIN}"
trunk_sources = ["127.0.0.1:{CARRIER_PORT}"]
manager_timeout = {MANAGER_TIMEOUT_S}
{"".join(f'''
[tenant.{TENANT}.extension.{a}]
password = "{PASSWORDS[a]}"
''' for a in AGENTS)}
[tenant.{TENANT}.group.sales]
strategy = "ring_all"
members = ["101", "102", "103"]

[tenant.{TENANT}.group.idle]
strategy = "longest_idle"
members = ["103", "102", "101"]
ring_timeout = 10

[tenant.{TENANT}.group.least]
strategy = "least_calls"
members = ["101", "102", "103"]
ring_timeout = 10

[tenant.{TENANT}.group.rr]
strategy = "round_robin"
members = ["101", "102", "103"]
ring_timeout = 10

[tenant.{TENANT}.did."{DID_LEAST}"]
to = "group:least"

[tenant.{TENANT}.did."{DID_RR}"]
to = "group:rr"

[tenant.{TENANT}.did."{DID_101}"]
to = "ext:101"

[tenant.{TENANT}.did."{DID_102}"]
to = "ext:102"

[tenant.{TENANT}.did."{DID_SALES}"]
to = "group:sales"

[tenant.{TENANT}.did."{DID_IDLE}"]
to = "group:idle"

[tenant.{TENANT}.did."{DID_103}"]
to = "ext:103"
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    settings = stack_settings(tmp_path_factory, "live", block=BLOCK, rtp_min=RTP_MIN,
                              provisioning=PROVISIONING)
    with running_stack(settings):
        yield settings


@pytest.fixture(scope="module")
def sip(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> sipp.Edge:
    """Every agent but 104 registered, and known available at the edge (from the streams)."""
    edge = sipp.Edge.from_settings(stack, tmp_path_factory.mktemp("sipp"))
    register_available(stack, edge, DOMAIN,
                       {a: (CONTACT_PORTS[a], PASSWORDS[a]) for a in AGENTS[:3]}, PIPELINE_S)
    return edge


@pytest.fixture
def phones(sip: sipp.Edge) -> Iterator[list[sipp.Uas]]:
    """Callees a test starts; any still running at its end are stopped by PID."""
    started: list[sipp.Uas] = []
    yield started
    for one in started:
        one.stop()


def live(settings: Settings, key: str) -> Any:
    """The value of htable "live" at ``key`` (None when absent)."""
    return htable_value(settings, "live", key)


def manager_is(settings: Settings, client: str, extension: str) -> None:
    """The CRM says ``extension`` manages ``client``: the connectors' publisher sends it,
    and the edge knows it once the streams passed it on."""
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    try:
        publish = ContactPublisher(producer, tenant=TENANT, topic=settings.crm_topic_contacts)
        publish("amocrm", client, Contact("amocrm", "77", "Client", "8001"), extension)
        producer.flush()
    finally:
        producer.close()
    wait_for(f"the manager of {client} at the edge",
             lambda: live(settings, f"mgr:{DOMAIN}:{client.lstrip('+')}") == extension,
             PIPELINE_S)


def call_events(settings: Settings, call_id: str | None) -> list[Event]:
    """The call's events in ``tawag.call-events``, once its end arrived."""
    assert call_id
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None,
                             enable_auto_commit=False)
    partitions = [TopicPartition(settings.topic_call_events, p)
                  for p in consumer.partitions_for_topic(settings.topic_call_events)]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    events: list[Event] = []

    def ended() -> bool:
        for batch in consumer.poll(timeout_ms=200).values():
            events.extend(from_json(m.value) for m in batch if m.key == call_id.encode())
        return any(e.type in (EventType.CALL_ENDED, EventType.CALL_FAILED)
                   and "#" not in (e.leg_id or "") for e in events)

    try:
        wait_for(f"the end of {call_id}", ended, PIPELINE_S)
    finally:
        consumer.close()
    return events


def decisions(events: list[Event]) -> list[tuple[str, str, str, str]]:
    return [(e.extra["rule"], e.extra["target"], e.extra["default_target"],
             e.extra.get("inputs", "")) for e in events if e.type is EventType.ROUTE_DECIDED]


def rang(events: list[Event]) -> set[str]:
    return {e.agent for e in events if e.type is EventType.CALL_RINGING and e.agent}


def answering(sip: sipp.Edge, agent: str, ring_ms: int = 300) -> sipp.Uas:
    return sipp.start_uas_answer(sip, port=CONTACT_PORTS[agent], media_port=next(MEDIA_PORTS),
                                 ring_ms=ring_ms)


def carrier_call(sip: sipp.Edge, caller: str, did: str) -> sipp.SippResult:
    result = sipp.call(sip, caller, did, port=CARRIER_PORT, media_port=next(MEDIA_PORTS),
                       talk_ms=500)
    assert result.ok, result.received()
    return result


def all_available(settings: Settings) -> None:
    """The previous call's agents are available again at the edge."""
    wait_for("every registered agent available at the edge", lambda: all(
        (s := live(settings, f"avail:{DOMAIN}:{a}")) and s <= time.time()
        for a in AGENTS[:3]), PIPELINE_S)


def test_a_known_client_rings_only_their_available_manager(
        stack: Settings, sip: sipp.Edge, phones: list[sipp.Uas]) -> None:
    manager_is(stack, CLIENT, "103")
    all_available(stack)
    phones += [answering(sip, "101", 1500), answering(sip, "102", 1500), answering(sip, "103")]

    events = call_events(stack, carrier_call(sip, CLIENT, DID_SALES).call_id)

    [(rule, target, default, inputs)] = decisions(events)
    assert (rule, target, default) == ("responsible_manager", "ext:103", "group:sales")
    assert inputs.startswith("manager=103;idle_since=")
    assert rang(events) == {"103"}  # 101 and 102 of the sales group never rang
    answered = [e.agent for e in events if e.type is EventType.CALL_ANSWERED]
    assert answered == ["103"]


def test_an_offline_manager_falls_back_to_the_did_target_at_once(
        stack: Settings, sip: sipp.Edge, phones: list[sipp.Uas]) -> None:
    manager_is(stack, CLIENT_OF_OFFLINE, "104")  # 104 never registered
    all_available(stack)
    phones += [answering(sip, "101"), answering(sip, "102", 1500), answering(sip, "103", 1500)]

    events = call_events(stack, carrier_call(sip, CLIENT_OF_OFFLINE, DID_SALES).call_id)

    assert decisions(events) == [
        ("responsible_manager_unavailable", "group:sales", "group:sales", "manager=104")]
    assert "104" not in rang(events) and rang(events) <= {"101", "102", "103"}


def test_a_manager_who_does_not_answer_in_the_timeout_falls_back(
        stack: Settings, sip: sipp.Edge, phones: list[sipp.Uas]) -> None:
    manager_is(stack, CLIENT_NO_ANSWER, "102")
    all_available(stack)
    phones += [sipp.start_uas_ring(sip, port=CONTACT_PORTS["102"]), answering(sip, "103")]
    started = time.monotonic()

    events = call_events(stack, carrier_call(sip, CLIENT_NO_ANSWER, DID_103).call_id)

    assert [d[:3] for d in decisions(events)] == [
        ("responsible_manager", "ext:102", "ext:103"),
        ("responsible_manager_fallback", "ext:103", "ext:103")]
    assert decisions(events)[1][3] == "manager=102;reason=no_answer"
    assert time.monotonic() - started >= MANAGER_TIMEOUT_S


def test_a_manager_changed_in_the_crm_takes_the_next_call(
        stack: Settings, sip: sipp.Edge, phones: list[sipp.Uas]) -> None:
    manager_is(stack, CLIENT, "101")  # was 103 (first test)
    all_available(stack)
    phones += [answering(sip, "101")]

    events = call_events(stack, carrier_call(sip, CLIENT, DID_103).call_id)

    assert [d[:3] for d in decisions(events)] == [("responsible_manager", "ext:101", "ext:103")]
    assert rang(events) == {"101"}


def test_longest_idle_rings_the_agent_idle_the_longest(
        stack: Settings, sip: sipp.Edge, phones: list[sipp.Uas]) -> None:
    talk = answering(sip, "103")  # 103, first in the group's order, becomes the newest idle
    call_events(stack, carrier_call(sip, "+79160000098", DID_103).call_id)
    talk.stop()
    all_available(stack)
    since = {a: live(stack, f"avail:{DOMAIN}:{a}") for a in AGENTS[:3]}
    members = ["103", "102", "101"]
    expected = idle_order(members, since, int(time.time()))[0]
    assert expected != members[0], f"103 talked last, it is not the longest idle: {since}"
    phones += [answering(sip, a) for a in AGENTS[:3]]

    events = call_events(stack, carrier_call(sip, "+79160000099", DID_IDLE).call_id)

    assert decisions(events) == [
        ("longest_idle", f"ext:{expected}", "group:idle", f"idle_since={since[expected]}")]
    assert rang(events) == {expected}


def calls_today(settings: Settings, agent: str) -> int:
    """The agent's calls answered today as the edge knows them (0: none known yet)."""
    return live(settings, f"calls:{DOMAIN}:{agent}") or 0


def answered_directly(settings: Settings, sip: sipp.Edge, agent: str, did: str,
                      caller: str) -> None:
    """One more call answered by ``agent``, known at the edge when this returns."""
    before = calls_today(settings, agent)
    talk = answering(sip, agent)
    try:
        call_events(settings, carrier_call(sip, caller, did).call_id)
    finally:
        talk.stop()
    wait_for(f"{agent}'s calls today at the edge",
             lambda: calls_today(settings, agent) > before, PIPELINE_S)


def test_least_calls_rings_the_agent_with_the_fewest_calls_today(
        stack: Settings, sip: sipp.Edge, phones: list[sipp.Uas]) -> None:
    """102 is given the fewest calls answered today and then made the newest idle (a call
    that rang it and was cancelled: offered, not answered), so the longest-idle rule
    would not pick it and least_calls must."""
    all_available(stack)
    for agent, did in (("101", DID_101), ("103", DID_103)):
        while calls_today(stack, agent) <= calls_today(stack, "102"):
            answered_directly(stack, sip, agent, did, f"+7916000011{agent[-1]}")
    ring = sipp.start_uas_ring(sip, port=CONTACT_PORTS["102"])
    cancelled = sipp.call_and_cancel(sip, "+79160000120", DID_102, ring_ms=300,
                                     port=CARRIER_PORT, media_port=next(MEDIA_PORTS))
    assert cancelled.ok, cancelled.received()
    ring.stop()
    all_available(stack)
    members = ["101", "102", "103"]
    since = {a: live(stack, f"avail:{DOMAIN}:{a}") for a in members}
    calls = {a: calls_today(stack, a) for a in members}
    now = int(time.time())
    assert least_calls_order(members, since, calls, now)[0] == "102", (since, calls)
    assert idle_order(members, since, now)[0] != "102", (since, calls)
    phones += [answering(sip, a) for a in members]

    events = call_events(stack, carrier_call(sip, "+79160000121", DID_LEAST).call_id)

    assert decisions(events) == [
        ("least_calls", "ext:102", "group:least",
         f"calls_today={calls['102']};idle_since={since['102']}")]
    assert rang(events) == {"102"}
    answered = [e.agent for e in events if e.type is EventType.CALL_ANSWERED]
    assert answered == ["102"]


def test_round_robin_rotates_and_skips_a_busy_member(
        stack: Settings, sip: sipp.Edge, phones: list[sipp.Uas]) -> None:
    """Three calls to the round_robin group: 101 (nobody rung before), 102 (after 101),
    then, while 103 talks on another call, 101 again (after 102, 103 skipped)."""
    picked: list[tuple[str, str, str, str]] = []
    for n, busy in enumerate((False, False, True)):
        all_available(stack)
        if busy:
            talk_103 = answering(sip, "103")
            other = threading.Thread(target=lambda: sipp.call(
                sip, "104", "103", port=CONTACT_PORTS["104"], media_port=next(MEDIA_PORTS),
                talk_ms=8000, password=PASSWORDS["104"]))
            other.start()
            wait_for("103 busy at the edge",
                     lambda: live(stack, f"avail:{DOMAIN}:103") is None, PIPELINE_S)
        group = [answering(sip, a) for a in ("101", "102") + (() if busy else ("103",))]
        events = call_events(stack, carrier_call(sip, f"+7916000013{n}", DID_RR).call_id)
        for phone in group:
            phone.stop()
        [decision] = decisions(events)
        picked.append(decision)
        assert rang(events) == {decision[1].removeprefix("ext:")}
        if busy:
            other.join(timeout=PIPELINE_S)
            talk_103.stop()

    assert [(rule, target, default) for rule, target, default, _ in picked] == [
        ("round_robin", "ext:101", "group:rr"), ("round_robin", "ext:102", "group:rr"),
        ("round_robin", "ext:101", "group:rr")]
    assert [inputs.split(";")[0] for *_, inputs in picked] == [
        "after=none", "after=101", "after=102"]


def test_with_the_streams_down_the_edge_routes_on_its_own(
        stack: Settings, sip: sipp.Edge, phones: list[sipp.Uas]) -> None:
    """Last of the module: it stops the Faust worker. Its heartbeats stop, the live facts
    go stale at the edge, and a longest_idle group rings in its provisioned order while a
    known client's call goes to the DID's own target."""
    worker = read_pid(stack, "streams")
    assert worker is not None
    terminate(stack, worker)
    wait_for("the edge's live facts to go stale", lambda: time.time() - (
        live(stack, "beat") or 0) > stack.routing_stale_s + 1, PIPELINE_S)
    group = [answering(sip, a) for a in AGENTS[:3]]
    phones += group

    events = call_events(stack, carrier_call(sip, "+79160000097", DID_IDLE).call_id)

    assert decisions(events) == [("static_order", "group:idle", "group:idle", "live=stale")]
    assert rang(events) == {"103"}  # the first member in the group's order
    for phone in group:  # 103's callee may still hold its port after the BYE
        phone.stop()
    for did, name in ((DID_LEAST, "least"), (DID_RR, "rr")):  # 101 first in both
        group = [answering(sip, a) for a in AGENTS[:3]]
        events = call_events(stack, carrier_call(sip, f"+7916000014{len(name)}", did).call_id)
        for phone in group:
            phone.stop()
        assert decisions(events) == [
            ("static_order", f"group:{name}", f"group:{name}", "live=stale")]
        assert rang(events) == {"101"}
    phones += [answering(sip, "103")]
    events = call_events(stack, carrier_call(sip, CLIENT, DID_103).call_id)
    assert decisions(events) == []  # 101 manages CLIENT, but the edge no longer trusts it
