"""The waiting queue of a longest_idle group (issue 14, item 5), end to end on the real
stack with sipp.

One stack on the port block 16000. Agent 101 is the only member of group ``support``
(queue: max_wait_s 8, max_length 3, overflow to extension 102). 101 is on a call, so the
streams' live state says nobody is available: four callers dial the group's DID one after
another. A, B and C wait (180, positions 1, 2, 3); D finds the queue full and overflows at
once; B hangs up while waiting (a missed call: it reaches the callback list); when 101's
call ends, A - the longest waiting - is offered to 101 and answers; C, still waiting when
max_wait_s is over (101 talks to A), overflows to 102. Every outcome is a
``route.decided`` event read back from ``tawag.call-events``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest
from kafka import KafkaConsumer, TopicPartition
from stack_harness import running_stack, stack_settings, wait_for

from core.events import Event, EventType, from_json
from core.settings import Settings
from edge import sipp
from edge.control import KamailioRpcError, kamailio_rpc

pytestmark = pytest.mark.integration

BLOCK, RTP_MIN = 16000, 46500
TENANT, DOMAIN = "acme", "pbx.test"
CALLER_PORTS = {name: BLOCK + 110 + i for i, name in enumerate("ABCDEX")}
"""The carrier's source ports, one per caller (X: the call that keeps 101 busy)."""
AGENTS = ("101", "102")
PASSWORDS = {a: f"queue-{a}" for a in AGENTS}
CONTACT_PORTS = {a: BLOCK + int(a) for a in AGENTS}
MEDIA_PORTS = iter(range(RTP_MIN + 600, RTP_MIN + 2000, 4))
DID_QUEUE, DID_101 = "74951238001", "74951238101"
MAX_WAIT_S, MAX_LENGTH = 8, 3
CALLERS = {"A": "+79160000071", "B": "+79160000072", "C": "+79160000073",
           "D": "+79160000074", "X": "+79160000070"}
PIPELINE_S = 30

PROVISIONING = f"""
[tenant.{TENANT}]
domain = "{DOMAIN}"
trunk_sources = [{", ".join(f'"127.0.0.1:{p}"' for p in CALLER_PORTS.values())}]
{"".join(f'''
[tenant.{TENANT}.extension.{a}]
password = "{PASSWORDS[a]}"
''' for a in AGENTS)}
[tenant.{TENANT}.group.support]
strategy = "longest_idle"
members = ["101"]
ring_timeout = 10
queue = {{ max_wait_s = {MAX_WAIT_S}, max_length = {MAX_LENGTH}, overflow = "ext:102" }}

[tenant.{TENANT}.did."{DID_QUEUE}"]
to = "group:support"

[tenant.{TENANT}.did."{DID_101}"]
to = "ext:101"
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    settings = stack_settings(tmp_path_factory, "queue", block=BLOCK, rtp_min=RTP_MIN,
                              provisioning=PROVISIONING)
    with running_stack(settings):
        yield settings


@pytest.fixture(scope="module")
def sip(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> sipp.Edge:
    """101 and 102 registered, and known available at the edge (from the streams)."""
    edge = sipp.Edge.from_settings(stack, tmp_path_factory.mktemp("sipp"))
    for agent in AGENTS:
        result = sipp.register(edge, agent, port=CONTACT_PORTS[agent],
                               password=PASSWORDS[agent])
        assert result.ok, result.received()
    for agent in AGENTS:
        wait_for(f"{agent} available at the edge",
                 lambda a=agent: live(stack, f"avail:{DOMAIN}:{a}"), PIPELINE_S)
    return edge


def live(settings: Settings, key: str) -> Any:
    """The value of htable "live" at ``key`` (None when absent)."""
    try:
        reply = kamailio_rpc(settings, "htable.get", "live", key)
    except KamailioRpcError:
        return None
    return reply["item"]["value"]


def answering(sip: sipp.Edge, agent: str) -> sipp.Uas:
    return sipp.start_uas_answer(sip, port=CONTACT_PORTS[agent], media_port=next(MEDIA_PORTS),
                                 ring_ms=300)


def events_of(settings: Settings, call_ids: list[str]) -> dict[str, list[Event]]:
    """Each call's events in ``tawag.call-events``, once its end arrived."""
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None,
                             enable_auto_commit=False)
    partitions = [TopicPartition(settings.topic_call_events, p)
                  for p in consumer.partitions_for_topic(settings.topic_call_events)]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    events: dict[str, list[Event]] = {c: [] for c in call_ids}

    def ended() -> bool:
        for batch in consumer.poll(timeout_ms=200).values():
            for m in batch:
                if m.key and m.key.decode() in events:
                    events[m.key.decode()].append(from_json(m.value))
        return all(any(e.type in (EventType.CALL_ENDED, EventType.CALL_FAILED,
                                  EventType.CALL_CANCELLED)
                       and "#" not in (e.leg_id or "") for e in evs)
                   for evs in events.values())

    try:
        wait_for(f"the ends of {call_ids}", ended, PIPELINE_S)
    except AssertionError as exc:
        seen = {c: [e.type.value for e in evs] for c, evs in events.items()}
        raise AssertionError(f"{exc}; events seen: {seen}") from exc
    finally:
        consumer.close()
    return events


def decisions(events: list[Event]) -> list[tuple[str, str, str, int | None]]:
    """(rule, target, inputs, position) of each route.decided, in order."""
    return [(e.extra["rule"], e.extra["target"], e.extra.get("inputs", ""),
             e.extra.get("position")) for e in events if e.type is EventType.ROUTE_DECIDED]


def waited_ms(events: list[Event], rule: str) -> int:
    [wait] = [e.extra["wait_ms"] for e in events
              if e.type is EventType.ROUTE_DECIDED and e.extra["rule"] == rule]
    return wait


def test_three_callers_wait_in_order_one_overflows_one_hangs_up_and_is_a_missed_call(
        stack: Settings, sip: sipp.Edge) -> None:
    uas_101 = answering(sip, "101")
    uas_102 = answering(sip, "102")
    pool = ThreadPoolExecutor(max_workers=6)
    try:
        busy: Future[sipp.SippResult] = pool.submit(
            sipp.call, sip, CALLERS["X"], DID_101, port=CALLER_PORTS["X"],
            media_port=next(MEDIA_PORTS), talk_ms=5000)
        wait_for("101 busy at the edge",
                 lambda: live(stack, f"avail:{DOMAIN}:101") is None, PIPELINE_S)

        def caller(name: str, talk_ms: int = 8000) -> Future[sipp.SippResult]:
            return pool.submit(sipp.call, sip, CALLERS[name], DID_QUEUE,
                               port=CALLER_PORTS[name], media_port=next(MEDIA_PORTS),
                               talk_ms=talk_ms)

        a = caller("A")
        time.sleep(0.4)
        b = pool.submit(sipp.call_and_cancel, sip, CALLERS["B"], DID_QUEUE, ring_ms=1500,
                        port=CALLER_PORTS["B"], media_port=next(MEDIA_PORTS))
        time.sleep(0.4)
        c = caller("C")
        time.sleep(0.4)
        d = caller("D", talk_ms=1000)  # the queue holds A, B and C: full
        assert d.result().ok, d.result().received()
        uas_102.wait()
        uas_102 = answering(sip, "102")  # for C, when its wait is over
        assert busy.result().ok, busy.result().received()
        uas_101.wait()
        uas_101 = answering(sip, "101")  # 101 is free again: it takes the next caller
        results = {"A": a.result(), "B": b.result(), "C": c.result(), "D": d.result()}
    finally:
        pool.shutdown(wait=True)
        uas_101.stop()
        uas_102.stop()
    for name, result in results.items():
        assert result.ok, (name, result.received())
    ids = {name: result.call_id for name, result in results.items()}
    events = events_of(stack, list(ids.values()))
    ev = {name: events[call_id] for name, call_id in ids.items()}

    wait = f"live=none_available;max_wait_s={MAX_WAIT_S};max_length={MAX_LENGTH}"
    queued = ("queue_wait", "group:support", wait)
    assert [d[:3] for d in decisions(ev["A"])][:1] == [queued]
    assert decisions(ev["A"])[0][3] == 1
    [(rule, target, inputs, position)] = decisions(ev["A"])[1:]
    assert (rule, target, position) == ("queue_offer", "ext:101", 1)
    assert inputs.startswith("idle_since=")
    assert decisions(ev["B"]) == [(*queued, 2),
                                  ("queue_abandon", "group:support", "reason=caller_hung_up", 2)]
    assert decisions(ev["C"]) == [(*queued, 3),
                                  ("queue_overflow", "ext:102", "reason=timeout", 3)]
    assert decisions(ev["D"]) == [("queue_overflow", "ext:102", "reason=full", 4)]
    # order kept: A, the longest waiting, was offered 101 before C's wait was over; C
    # overflowed after max_wait_s; D never waited
    assert waited_ms(ev["A"], "queue_offer") < MAX_WAIT_S * 1000
    assert MAX_WAIT_S * 1000 <= waited_ms(ev["C"], "queue_overflow") < MAX_WAIT_S * 1000 + 1000
    assert waited_ms(ev["D"], "queue_overflow") == 0
    answered = {n: [e.agent for e in ev[n] if e.type is EventType.CALL_ANSWERED] for n in ev}
    assert answered == {"A": ["101"], "B": [], "C": ["102"], "D": ["102"]}
    # B's end: the caller cancelled (487) while waiting, no agent ever rang: a missed
    # call for the CDR fold, hence an item of the callback list
    [cancelled] = [e for e in ev["B"] if e.type is EventType.CALL_CANCELLED]
    assert cancelled.extra["origin"] == "caller"
    assert not [e for e in ev["B"] if e.type is EventType.CALL_RINGING]
