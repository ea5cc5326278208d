"""End to end through the real SIP edge: sipp -> Kamailio -> rtpengine -> sipp.

Every call is matched to its evapi events by the Call-ID sipp used, and the test
asserts the exact event sequence the ingest bridge decodes (see sip-edge/kamailio.cfg).
The tests share one stack and run in file order; the last ones check what all calls
left behind.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from edge_harness import NO_ANSWER_TIMEOUT_S, EdgeStack, EvapiListener

from edge import control as edge
from edge import sipp

pytestmark = pytest.mark.integration

CALLER, ANSWERS, BUSY, RINGS, UNKNOWN = "101", "102", "103", "104", "199"
CONTACT_PORTS = {CALLER: 25070, ANSWERS: 25071, BUSY: 25072, RINGS: 25073}
UAC_PORTS = iter(range(25080, 25090))
RAW_SIP_PORT = 25095
MEDIA_PORTS = iter(range(32500, 32768, 4))
"""sipp binds media port .. +3; from 32768 on the kernel hands out ephemeral ports
(net.ipv4.ip_local_port_range), which any other process may hold at that moment."""
TALK_MS = 2000
PTIME_MS = 20
MIN_RELAYED_PACKETS = TALK_MS // PTIME_MS // 2
"""At least half of one direction's 20 ms PCMA packets must pass through rtpengine."""
RING_BEFORE_CANCEL_MS = 500
DURATION_SLACK_S = 1
"""call.end duration is whole seconds since the answer, so it may be one off."""
TIMER_SLACK_S = 1.5
TERMINAL = ("call.failed", "call.end")
UDP_MAX_PAYLOAD = 65507
HUGE_HEADER_BYTES = 60000
REPLY_TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def sip(edge_stack: EdgeStack, tmp_path_factory: pytest.TempPathFactory) -> sipp.Edge:
    return sipp.Edge.from_settings(edge_stack.settings, tmp_path_factory.mktemp("sipp"))


@pytest.fixture(scope="module")
def registered(sip: sipp.Edge, evapi: EvapiListener) -> dict[str, sipp.SippResult]:
    """Extensions 101-104 registered, each with a contact on its own port."""
    results = {user: sipp.register(sip, user, port=port) for user, port in CONTACT_PORTS.items()}
    for result in results.values():
        evapi.wait_for(lambda e, r=result: e.get("call_id") == r.call_id)
    return results


@pytest.fixture
def callee(sip: sipp.Edge, registered: dict[str, sipp.SippResult]) -> Iterator[list[sipp.Uas]]:
    """Callees started by a test; any still running at the end are stopped by PID."""
    started: list[sipp.Uas] = []
    yield started
    for uas in started:
        uas.stop()


def call_events(evapi: EvapiListener, result: sipp.SippResult) -> list[dict[str, Any]]:
    """The events of one call, once its terminal event has arrived."""
    assert result.call_id, f"sipp trace has no Call-ID: {result.trace}"
    evapi.wait_for(lambda e: e.get("call_id") == result.call_id and e["event"] in TERMINAL)
    return evapi.for_call(result.call_id)


def kinds(events: list[dict[str, Any]]) -> list[str]:
    return [e["event"] for e in events]


def test_registrations_publish_register_events(
    registered: dict[str, sipp.SippResult], evapi: EvapiListener, edge_stack: EdgeStack
) -> None:
    for user, result in registered.items():
        assert result.ok, result.received()
        [event] = evapi.for_call(result.call_id)
        assert event["event"] == "register"
        assert event["aor"] == f"sip:{user}@{edge_stack.settings.sip_domain}"
        assert (event["user"], event["domain"]) == (user, edge_stack.settings.sip_domain)
        assert event["expires"] == sipp.REGISTER_EXPIRES_S
        assert event["source"] == f"udp:127.0.0.1:{CONTACT_PORTS[user]}"
        assert f"127.0.0.1:{CONTACT_PORTS[user]}" in event["contact"]
        assert isinstance(event["ts"], float)
    contacts = edge.kamailio_rpc(edge_stack.settings, "ul.lookup", "location", ANSWERS)
    assert str(CONTACT_PORTS[ANSWERS]) in str(contacts)


def test_answered_call_reports_start_ringing_answer_and_end(
    sip: sipp.Edge, callee: list[sipp.Uas], evapi: EvapiListener, edge_stack: EdgeStack
) -> None:
    uas = sipp.start_uas_answer(sip, port=CONTACT_PORTS[ANSWERS], media_port=next(MEDIA_PORTS))
    callee.append(uas)
    packets_before = _relayed_packets(edge_stack)

    port = next(UAC_PORTS)
    result = sipp.call(
        sip, CALLER, ANSWERS, port=port, media_port=next(MEDIA_PORTS), talk_ms=TALK_MS
    )

    assert result.ok, result.received()
    assert uas.wait().exit_code == 0
    events = call_events(evapi, result)
    assert kinds(events) == ["call.start", "call.ringing", "call.answered", "call.end"]
    start, ringing, answered, end = events
    assert all((e["from"], e["to"]) == (CALLER, ANSWERS) for e in events)
    assert (start["ruri_user"], start["domain"]) == (ANSWERS, sip.domain)
    assert start["source"] == f"udp:127.0.0.1:{port}"
    assert (ringing["code"], ringing["reason"]) == (180, "Ringing")
    assert answered["code"] == 200
    assert (end["reason"], end["hangup_by"]) == ("bye", CALLER)
    assert abs(end["duration"] - TALK_MS / 1000) <= DURATION_SLACK_S
    assert abs(end["ts"] - end["answered_ts"] - TALK_MS / 1000) < TIMER_SLACK_S
    assert start["ts"] <= ringing["ts"] <= answered["ts"] <= end["ts"]
    # the media really was anchored: rtpengine relayed the call's RTP
    assert _relayed_packets(edge_stack) - packets_before >= MIN_RELAYED_PACKETS


def test_callee_hangup_is_reported_as_hangup_by_callee(
    sip: sipp.Edge, callee: list[sipp.Uas], evapi: EvapiListener
) -> None:
    uas = sipp.start_uas_answer(
        sip, port=CONTACT_PORTS[ANSWERS], media_port=next(MEDIA_PORTS), hangup_after_ms=TALK_MS
    )
    callee.append(uas)

    result = sipp.call(
        sip,
        CALLER,
        ANSWERS,
        port=next(UAC_PORTS),
        media_port=next(MEDIA_PORTS),
        talk_ms=TALK_MS,
        callee_hangs_up=True,
    )

    assert result.ok, result.received()
    assert uas.wait().exit_code == 0
    events = call_events(evapi, result)
    assert kinds(events) == ["call.start", "call.ringing", "call.answered", "call.end"]
    end = events[-1]
    # From/To of the callee's BYE are swapped; the event still names the call's parties
    assert (end["from"], end["to"]) == (CALLER, ANSWERS)
    assert (end["reason"], end["hangup_by"]) == ("bye", ANSWERS)
    assert abs(end["duration"] - TALK_MS / 1000) <= DURATION_SLACK_S


def test_busy_callee_gives_486_from_downstream(
    sip: sipp.Edge, callee: list[sipp.Uas], evapi: EvapiListener
) -> None:
    callee.append(sipp.start_uas_busy(sip, port=CONTACT_PORTS[BUSY]))

    result = sipp.call_expect_failure(
        sip, CALLER, BUSY, 486, port=next(UAC_PORTS), media_port=next(MEDIA_PORTS)
    )

    assert result.ok, result.received()
    events = call_events(evapi, result)
    assert kinds(events) == ["call.start", "call.failed"]
    failed = events[-1]
    assert (failed["code"], failed["reason"], failed["origin"]) == (486, "Busy Here", "downstream")
    assert (failed["from"], failed["to"]) == (CALLER, BUSY)


def test_unregistered_number_gives_404_from_the_proxy(
    sip: sipp.Edge, registered: dict[str, sipp.SippResult], evapi: EvapiListener
) -> None:
    result = sipp.call_expect_failure(
        sip, CALLER, UNKNOWN, 404, port=next(UAC_PORTS), media_port=next(MEDIA_PORTS)
    )

    assert result.ok, result.received()
    events = call_events(evapi, result)
    # call.start first even for a local reject, so the CDR exists
    assert kinds(events) == ["call.start", "call.failed"]
    failed = events[-1]
    assert (failed["code"], failed["reason"], failed["origin"]) == (404, "Not Found", "proxy")
    assert (failed["from"], failed["to"]) == (CALLER, UNKNOWN)


def test_nobody_answers_gives_408_after_the_no_answer_timeout(
    sip: sipp.Edge, callee: list[sipp.Uas], evapi: EvapiListener
) -> None:
    uas = sipp.start_uas_ring(sip, port=CONTACT_PORTS[RINGS])
    callee.append(uas)

    result = sipp.call_expect_failure(
        sip, CALLER, RINGS, 408, port=next(UAC_PORTS), media_port=next(MEDIA_PORTS)
    )

    assert result.ok, result.received()
    # the edge cancelled the ringing branch; the callee saw a proper CANCEL/487/ACK
    callee_side = uas.wait()
    assert callee_side.exit_code == 0, callee_side.received()
    assert callee_side.call_id == result.call_id
    events = call_events(evapi, result)
    # the callee repeats its 180: still exactly one call.ringing
    assert kinds(events) == ["call.start", "call.ringing", "call.failed"]
    start, _, failed = events
    assert (failed["code"], failed["origin"]) == (408, "proxy")
    assert abs(failed["ts"] - start["ts"] - NO_ANSWER_TIMEOUT_S) < TIMER_SLACK_S


def test_caller_cancel_while_ringing_gives_487(
    sip: sipp.Edge, callee: list[sipp.Uas], evapi: EvapiListener
) -> None:
    uas = sipp.start_uas_ring(sip, port=CONTACT_PORTS[RINGS])
    callee.append(uas)

    result = sipp.call_and_cancel(
        sip,
        CALLER,
        RINGS,
        ring_ms=RING_BEFORE_CANCEL_MS,
        port=next(UAC_PORTS),
        media_port=next(MEDIA_PORTS),
    )

    assert result.ok, result.received()
    assert uas.wait().exit_code == 0
    events = call_events(evapi, result)
    assert kinds(events) == ["call.start", "call.ringing", "call.failed"]
    failed = events[-1]
    assert (failed["code"], failed["reason"]) == (487, "Request Terminated")
    assert failed["ts"] - events[0]["ts"] < NO_ANSWER_TIMEOUT_S


def test_malformed_sip_is_dropped_and_the_edge_keeps_serving(
    sip: sipp.Edge,
    registered: dict[str, sipp.SippResult],
    evapi: EvapiListener,
    edge_stack: EdgeStack,
) -> None:
    before = len(evapi.events)
    target = (edge_stack.settings.sip_host, edge_stack.settings.sip_port)
    with _raw_sip_socket() as sock:
        for datagram in _malformed_datagrams(sip.domain):
            sock.sendto(datagram, target)
        sock.sendto(_options_keepalive(sip.domain), target)
        reply = _first_reply(sock, b"keepalive-")

    assert reply.startswith(b"SIP/2.0 200"), reply
    assert edge_stack.alive()
    again = sipp.register(sip, CALLER, port=CONTACT_PORTS[CALLER])
    assert again.ok, again.received()
    evapi.wait_for(lambda e: e.get("call_id") == again.call_id)
    # nothing malformed became a call
    assert [e for e in evapi.events[before:] if e["event"].startswith("call.")] == []


def test_unregister_publishes_unregister(
    sip: sipp.Edge,
    registered: dict[str, sipp.SippResult],
    evapi: EvapiListener,
    edge_stack: EdgeStack,
) -> None:
    result = sipp.unregister(sip, BUSY, port=CONTACT_PORTS[BUSY])

    assert result.ok, result.received()
    event = evapi.wait_for(lambda e: e.get("call_id") == result.call_id)
    assert (event["event"], event["user"], event["expires"]) == ("unregister", BUSY, 0)
    after = sipp.call_expect_failure(
        sip, CALLER, BUSY, 404, port=next(UAC_PORTS), media_port=next(MEDIA_PORTS)
    )
    assert after.ok, after.received()


def test_every_call_has_one_start_first_and_one_terminal_event(
    evapi: EvapiListener, edge_stack: EdgeStack
) -> None:
    calls: dict[str, list[str]] = {}
    for event in evapi.events:
        if event["event"].startswith("call."):
            calls.setdefault(event["call_id"], []).append(event["event"])
    assert len(calls) >= 5
    for call_id, sequence in calls.items():
        assert sequence[0] == "call.start", call_id
        assert sum(kind in TERMINAL for kind in sequence) == 1, (call_id, sequence)
        assert sequence[-1] in TERMINAL, (call_id, sequence)


def test_no_dialog_or_media_session_is_left_behind(edge_stack: EdgeStack) -> None:
    settings = edge_stack.settings
    assert edge.wait_until(lambda: _active_dialogs(settings) == 0, timeout=REPLY_TIMEOUT_S)
    sessions = edge.rtpengine_ng(settings, {"command": "list"})
    assert sessions.get("calls") == [], sessions


# --- helpers --------------------------------------------------------------------------


def _relayed_packets(stack: EdgeStack) -> int:
    reply = edge.rtpengine_ng(stack.settings, {"command": "statistics"})
    return int(reply["statistics"]["totalstatistics"]["relayedpackets"])


def _active_dialogs(settings: Any) -> int:
    stats = edge.kamailio_rpc(settings, "dlg.stats_active")
    return sum(int(v) for v in stats.values()) if isinstance(stats, dict) else -1


def _raw_sip_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", RAW_SIP_PORT))
    sock.settimeout(REPLY_TIMEOUT_S)
    return sock


def _malformed_datagrams(domain: str) -> list[bytes]:
    via = f"Via: SIP/2.0/UDP 127.0.0.1:{RAW_SIP_PORT};branch=z9hG4bK-bad"
    no_call_id = (
        f"INVITE sip:102@{domain} SIP/2.0\r\n{via}1\r\nFrom: <sip:101@{domain}>;tag=x\r\n"
        f"To: <sip:102@{domain}>\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    huge = (
        f"OPTIONS sip:102@{domain} SIP/2.0\r\n{via}2\r\nFrom: <sip:101@{domain}>;tag=y\r\n"
        f"To: <sip:102@{domain}>\r\nCall-ID: huge-header@127.0.0.1\r\nCSeq: 1 OPTIONS\r\n"
        f"X-Padding: {'a' * HUGE_HEADER_BYTES}\r\nContent-Length: 0\r\n\r\n"
    )
    bad_length = (
        f"REGISTER sip:{domain} SIP/2.0\r\n{via}3\r\nFrom: <sip:101@{domain}>;tag=z\r\n"
        f"To: <sip:101@{domain}>\r\nCall-ID: bad-length@127.0.0.1\r\nCSeq: x REGISTER\r\n"
        "Content-Length: 99999\r\n\r\nshort"
    )
    datagrams = [
        b"\x00\xff garbage \r\n\r\n",
        no_call_id.encode(),
        huge.encode(),
        bad_length.encode(),
        b"SIP/2.0 200 OK\r\n\r\n",
    ]
    assert all(len(d) <= UDP_MAX_PAYLOAD for d in datagrams)
    return datagrams


def _options_keepalive(domain: str) -> bytes:
    """OPTIONS to the edge itself (no user): REQINIT answers 200 Keepalive."""
    call_id = f"keepalive-{time.time()}@127.0.0.1"
    return (
        f"OPTIONS sip:{domain} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{RAW_SIP_PORT};branch=z9hG4bK-ka{time.time_ns()}\r\n"
        f"From: <sip:probe@{domain}>;tag=ka\r\nTo: <sip:{domain}>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def _first_reply(sock: socket.socket, call_id_prefix: bytes) -> bytes:
    """The first datagram answering our keepalive (other replies are skipped)."""
    deadline = time.monotonic() + REPLY_TIMEOUT_S
    while time.monotonic() < deadline:
        data, _ = sock.recvfrom(UDP_MAX_PAYLOAD)
        if b"Call-ID: " + call_id_prefix in data:
            return data
    raise AssertionError("no reply to the keepalive OPTIONS")
