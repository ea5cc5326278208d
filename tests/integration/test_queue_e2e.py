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

Music: a caller queued for group ``hold`` (its only member, 103, never registers) gets a
183 whose SDP is rtpengine's, and rtpengine's hold music on that address until the
overflow to 102 answers; group ``quiet`` (``music = false``) gives ringback instead.

Back in the queue: group ``retry``'s only member, 105, comes online while a caller waits,
is offered the call, rings and never answers; the caller goes back to the head of the
queue (music again) each time, until its wait is over and it overflows to 102.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, TopicPartition
from stack_harness import (
    htable_value,
    register_available,
    running_stack,
    stack_settings,
    wait_for,
)

from core.events import Event, EventType, from_json
from core.phone import normalise
from core.settings import Settings
from edge import sipp
from warehouse.client import service_client
from warehouse.queries.callbacks import open_callbacks

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sip_edge"))
from sip_ua import SipMessage, SipUa, media_address, sdp  # noqa: E402

pytestmark = pytest.mark.integration

BLOCK, RTP_MIN = 16000, 46500
TENANT, DOMAIN = "acme", "pbx.test"
CALLER_PORTS = {name: BLOCK + 110 + i for i, name in enumerate("ABCDEXMRN")}
"""The carrier's source ports, one per caller (X: the call that keeps 101 busy; M and R:
the music and ringback callers)."""
AGENTS = ("101", "102")
ABSENT = "103"
"""Provisioned, never registered: a queue of only 103 never finds anyone available."""
SLEEPY = "105"
"""Registers only once a caller waits for it, rings and never answers."""
PASSWORDS = {a: f"queue-{a}" for a in AGENTS}
CONTACT_PORTS = {a: BLOCK + int(a) for a in AGENTS}
MEDIA_PORTS = iter(range(RTP_MIN + 600, RTP_MIN + 2000, 4))
DID_QUEUE, DID_101 = "74951238001", "74951238101"
DID_HOLD, DID_QUIET, DID_RETRY = "74951238002", "74951238003", "74951238004"
HOLD_WAIT_S, RETRY_WAIT_S, RETRY_RING_S = 3, 8, 2
MAX_WAIT_S, MAX_LENGTH = 8, 3
CALLERS = {"A": "+79160000071", "B": "+79160000072", "C": "+79160000073",
           "D": "+79160000074", "X": "+79160000070", "M": "+79160000075",
           "R": "+79160000076", "N": "+79160000077"}
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

[tenant.{TENANT}.extension.{ABSENT}]
password = "queue-{ABSENT}"

[tenant.{TENANT}.group.hold]
strategy = "longest_idle"
members = ["{ABSENT}"]
queue = {{ max_wait_s = {HOLD_WAIT_S}, max_length = 2, overflow = "ext:102" }}

[tenant.{TENANT}.extension.{SLEEPY}]
password = "queue-{SLEEPY}"

[tenant.{TENANT}.group.retry]
strategy = "longest_idle"
members = ["{SLEEPY}"]
ring_timeout = {RETRY_RING_S}
queue = {{ max_wait_s = {RETRY_WAIT_S}, max_length = 2, overflow = "ext:102" }}

[tenant.{TENANT}.did."{DID_RETRY}"]
to = "group:retry"

[tenant.{TENANT}.group.quiet]
strategy = "longest_idle"
members = ["{ABSENT}"]
queue = {{ max_wait_s = {HOLD_WAIT_S}, max_length = 2, overflow = "ext:102", music = false }}

[tenant.{TENANT}.did."{DID_QUEUE}"]
to = "group:support"

[tenant.{TENANT}.did."{DID_HOLD}"]
to = "group:hold"

[tenant.{TENANT}.did."{DID_QUIET}"]
to = "group:quiet"

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
    register_available(stack, edge, DOMAIN,
                       {a: (CONTACT_PORTS[a], PASSWORDS[a]) for a in AGENTS}, PIPELINE_S)
    return edge


def live(settings: Settings, key: str, table: str = "live") -> Any:
    """The value of Kamailio's htable ``table`` ("live" unless said) at ``key``."""
    return htable_value(settings, table, key)


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
    # ... and there it is, read back from the warehouse: open, one missed call, opened
    # when that call came in; A, C and D (answered) are not on it
    client = service_client(stack)
    b_number = normalise(CALLERS["B"])

    def callback_items() -> list[dict[str, Any]]:
        items = open_callbacks(client, TENANT, datetime.now(UTC)).to_dict("records")
        return items if b_number in {i["client"] for i in items} else []

    items = wait_for("B on the callback list", callback_items, PIPELINE_S)
    [item] = [i for i in items if i["client"] == b_number]
    assert (item["status"], item["attempts"]) == ("open", 1)
    [b_start] = [e for e in ev["B"] if e.type is EventType.CALL_OFFERED]
    assert abs(item["opened_at"].timestamp() - b_start.ts.timestamp()) < 0.002
    assert not {normalise(CALLERS[n]) for n in "ACD"} & {i["client"] for i in items}


# --- music while waiting --------------------------------------------------------------


def _alaw_level(payload: bytes) -> int:
    """Peak magnitude of G.711 A-law samples (G.711's segment/mantissa, sign dropped):
    0-127, where a silent frame is 0 or 1."""
    return max(((b ^ 0x55) & 0x7F) for b in payload) if payload else 0


class MediaPort:
    """The caller's RTP port: every datagram received, with when and from where."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.packets: list[tuple[float, tuple[str, int], bytes]] = []
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data, source = self.sock.recvfrom(2048)
            except TimeoutError:
                continue
            self.packets.append((time.monotonic(), source, data))

    def close(self) -> None:
        self._stop.set()
        self._reader.join()
        self.sock.close()


def queued_call(stack: Settings, caller: str, did: str, talk_s: float = 1.0,
                ) -> tuple[SipUa, MediaPort, dict[str, float]]:
    """A carrier call to ``did`` from its own trunk port, with an RTP port of its own;
    answered (after the queue's overflow), held ``talk_s`` and hung up. The UA (with
    every message it received), the media port, and when the 183/180 and the 200 came."""
    media = MediaPort()
    ua = SipUa(CALLERS[caller], "", CALLER_PORTS[caller], (stack.sip_host, stack.sip_port),
               DOMAIN)
    try:
        final, dialog = ua.invite(did, sdp("127.0.0.1", media.port))
        answered_at = time.monotonic()
        assert final.status == 200, final.first_line
        assert dialog is not None
        dialog.remote_sdp = final.body
        time.sleep(talk_s)  # the conversation
        assert dialog.request("BYE").status == 200
    finally:
        ua.close()
        media.close()
    return ua, media, {"answered": answered_at}


def provisional(ua: SipUa) -> list[SipMessage]:
    return [m for m in ua.received if not m.is_request and 100 < m.status < 200]


def test_a_queued_caller_hears_music_from_rtpengine_until_an_agent_answers(
        stack: Settings, sip: sipp.Edge) -> None:
    uas_102 = answering(sip, "102")
    try:
        ua, media, at = queued_call(stack, "M", DID_HOLD)
    finally:
        uas_102.stop()
    early = provisional(ua)[0]  # then 102's own 180, once the call overflowed to it
    assert (early.status, early.first_line.split(" ", 2)[2]) == (183, "Queued")
    music_from = media_address(early.body)
    assert music_from[0] == stack.sip_host and "a=sendonly" in early.body
    music = [(t, data) for t, source, data in media.packets if source == music_from]
    assert music, "no RTP from rtpengine's caller-facing address while queued"
    # RTP, PCMA (the caller offered only 8), one stream, and not silence
    assert {data[0] >> 6 for _, data in music} == {2}
    assert {data[1] & 0x7F for _, data in music} == {8}
    [ssrc] = {data[8:12] for _, data in music}
    assert max(_alaw_level(data[12:]) for _, data in music) > 64
    # it played the whole wait (20 ms packets: 50 a second; half of that is plenty to
    # tell music from a stray packet) and stopped when 102 answered
    played = [t for t, data in music if data[8:12] == ssrc]
    assert len(played) >= HOLD_WAIT_S * 25
    assert max(played) < at["answered"] + 0.2
    events = events_of(stack, [early.call_id])[early.call_id]
    assert [d[0] for d in decisions(events)] == ["queue_wait", "queue_overflow"]
    assert [e.agent for e in events if e.type is EventType.CALL_ANSWERED] == ["102"]


def test_a_queue_without_music_rings_back(stack: Settings, sip: sipp.Edge) -> None:
    uas_102 = answering(sip, "102")
    try:
        ua, media, _ = queued_call(stack, "R", DID_QUIET, talk_s=0.2)
    finally:
        uas_102.stop()
    early = provisional(ua)[0]
    assert (early.status, early.first_line.split(" ", 2)[2], early.body) == (180, "Queued", "")
    # nothing played while it waited: whatever reached the port came after the answer
    # (102 echoes what the caller sends, and this caller sends nothing)
    assert media.packets == []


# --- an offered agent who does not answer ---------------------------------------------


def never_answers(phone: SipUa, stop: threading.Event) -> list[float]:
    """Ring on every INVITE and end it with 487 when the edge cancels it; when each
    CANCEL came (monotonic)."""
    cancelled: list[float] = []
    invites: dict[str, SipMessage] = {}
    while not stop.is_set():
        request = phone.next_request(timeout=0.2)
        if request is None:
            continue
        if request.method == "INVITE":
            invites[request.call_id] = request
            phone.reply(request, 180, "Ringing", to_tag="sleepy")
        elif request.method == "CANCEL":
            cancelled.append(time.monotonic())
            phone.reply(request, 200, "OK")
            phone.reply(invites[request.call_id], 487, "Request Terminated", to_tag="sleepy")
    return cancelled


def test_a_queued_caller_the_offered_agent_does_not_answer_waits_again_with_music(
        stack: Settings, sip: sipp.Edge) -> None:
    uas_102 = answering(sip, "102")
    pool = ThreadPoolExecutor(max_workers=2)
    stop = threading.Event()
    phone: SipUa | None = None
    try:
        call = pool.submit(queued_call, stack, "N", DID_RETRY, 0.5)
        qkey = f"len:{DOMAIN}:retry"
        wait_for("N queued", lambda: live(stack, qkey, table="queue") == 1, PIPELINE_S)
        # now 105 comes online: the streams say it is available and the queue offers it
        port = BLOCK + int(SLEEPY)
        assert sipp.register(sip, SLEEPY, port=port, password=f"queue-{SLEEPY}").ok
        phone = SipUa(SLEEPY, f"queue-{SLEEPY}", port, (stack.sip_host, stack.sip_port),
                      DOMAIN)
        rings = pool.submit(never_answers, phone, stop)
        ua, media, at = call.result()
    finally:
        stop.set()
        pool.shutdown(wait=True)
        uas_102.stop()
        if phone is not None:
            phone.close()
    cancels = rings.result()
    assert cancels, "105 was never offered the call"
    early = provisional(ua)[0]
    assert early.status == 183
    events = events_of(stack, [early.call_id])[early.call_id]
    rules = [(rule, target, inputs) for rule, target, inputs, _ in decisions(events)]
    assert rules[0][0] == "queue_wait"
    assert rules[-1] == ("queue_overflow", "ext:102", "reason=timeout")
    # 105 offered, and the caller back in the queue when it did not answer, as often as
    # the wait allowed (one offer per CANCEL 105 got); a ring that outlasted the wait
    # ends in the overflow without a return
    returns = sum(rule == "queue_return" for rule, _, _ in rules)
    assert returns in (len(cancels), len(cancels) - 1) and returns >= 1, (rules, cancels)
    offer, back = ("queue_offer", "ext:105"), ("queue_return", "group:retry", "reason=no_answer")
    steps = [r[:2] if r[0] == "queue_offer" else r for r in rules[1:-1]]
    assert steps == [offer, back] * returns + [offer] * (len(cancels) - returns), rules
    assert waited_ms(events, "queue_overflow") >= RETRY_WAIT_S * 1000
    assert [e.agent for e in events if e.type is EventType.CALL_ANSWERED] == ["102"]
    # after each of 105's rings (its 180, relayed) that ended in a return, the edge's 183
    # again: the phone goes back from ringback to the music; 102's 180 last
    codes = [(m.status, m.first_line.split(" ", 2)[2]) for m in provisional(ua)]
    ring, queued = (180, "Ringing"), (183, "Queued")
    assert codes == [queued, *[ring, queued] * returns, *[ring] * (len(cancels) - returns),
                     ring], codes
    # the music played again after the first return (it had stopped when 105 was offered)
    music_from = media_address(early.body)
    again = [t for t, source, _ in media.packets
             if source == music_from and cancels[0] < t < at["answered"]]
    assert again, "no music after the caller went back to the queue"

