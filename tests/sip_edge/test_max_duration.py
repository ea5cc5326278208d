"""Maximum call duration, live: the edge ends an answered call that nobody hangs up.

Settings.max_call_duration_s becomes kamailio.cfg's MAX_CALL_DURATION_S, the dialog
module's default_timeout (counted from the 2xx); with send_bye the dialog module sends
BYE to both parties when it fires, and call.end says so: reason "max_duration",
hangup_by "system". kamailio.cfg sends that call.end (with the media counters) and
releases the rtpengine session when the first of those BYEs leaves, in
event_route[tm:local-request]: Kamailio 5.6 skips event_route[dialog:end] when a party's
200 to its BYE is handled first. Both parties are sipp scenarios that only wait for a BYE.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from edge_harness import EdgeStack, EvapiListener

from core.events import EventType
from edge import control as edge
from edge import sipp
from ingest.decode import DecodeContext, decode_evapi

pytestmark = pytest.mark.integration

MAX_CALL_S = 3
EDGE_SETTINGS = {"max_call_duration_s": MAX_CALL_S}
CALLER, CALLEE = "101", "102"
CALLEE_PORT, CALLER_PORT = 25071, 25080
CALLEE_MEDIA, CALLER_MEDIA = 32500, 32504
TIMER_TICK_S = 1.0
"""The dialog module counts in whole seconds (the answer's second + the timeout) and checks
its timers once a second, so the call lasts between MAX_CALL_S - 1 and MAX_CALL_S + 1 s."""
SLACK_S = 0.2
RTP_HEADER_BYTES = 12


@pytest.fixture(scope="module")
def sip(edge_stack: EdgeStack, tmp_path_factory: pytest.TempPathFactory) -> sipp.Edge:
    return sipp.Edge.from_settings(edge_stack.settings, tmp_path_factory.mktemp("sipp"))


@pytest.fixture
def callee(sip: sipp.Edge, evapi: EvapiListener) -> Iterator[sipp.Uas]:
    registered = sipp.register(sip, CALLEE, port=CALLEE_PORT)
    assert registered.ok, registered.received()
    evapi.wait_for(lambda e: e.get("call_id") == registered.call_id)
    uas = sipp.start_uas_answer(sip, port=CALLEE_PORT, media_port=CALLEE_MEDIA)
    yield uas
    uas.stop()


def call_until_edge_bye(sip: sipp.Edge) -> sipp.SippResult:
    """CALLER calls CALLEE and never hangs up (uac_call_until_edge_bye.xml says why it
    answers the edge's BYE 200 ms late)."""
    args = ["-s", CALLEE, "-key", "caller", CALLER, "-p", str(CALLER_PORT),
            "-mp", str(CALLER_MEDIA)]
    return sipp.run_scenario(sip, "uac_call_until_edge_bye.xml", args, label="max-duration",
                             expected_code=200)


def test_a_call_longer_than_the_maximum_is_ended_by_the_edge_with_bye_to_both(
    sip: sipp.Edge, evapi: EvapiListener, callee: sipp.Uas, edge_stack: EdgeStack
) -> None:
    # the caller talks until it gets a BYE; the callee (uas_answer.xml) waits for one too
    caller = call_until_edge_bye(sip)

    assert caller.ok, caller.received()
    callee_side = callee.wait()
    assert callee_side.exit_code == 0, callee_side.received()
    for side in (caller, callee_side):
        byes = [m for m in side.messages if m.direction == "received" and m.method == "BYE"]
        assert len(byes) == 1 and byes[0].call_id == caller.call_id
        assert "tawag-edge" in byes[0].text  # the edge's own BYE, not the other party's
    sent_bye = [m for m in (*caller.messages, *callee_side.messages)
                if m.direction == "sent" and m.method == "BYE"]
    assert sent_bye == []
    assert caller.talk_s is not None
    assert MAX_CALL_S - TIMER_TICK_S < caller.talk_s < MAX_CALL_S + TIMER_TICK_S + SLACK_S

    evapi.wait_for(lambda e: e["event"] == "call.end" and e["call_id"] == caller.call_id)
    events = evapi.for_call(caller.call_id)
    assert [e["event"] for e in events] == ["call.start", "call.ringing", "call.answered",
                                            "call.end"]
    end = events[-1]
    assert (end["reason"], end["hangup_by"]) == ("max_duration", "system")
    talk_s = end["ts"] - end["answered_ts"]
    assert MAX_CALL_S - TIMER_TICK_S < talk_s < MAX_CALL_S + TIMER_TICK_S + SLACK_S
    # the RTP counters of the call (the caller plays PCMA, the callee echoes it)
    media = end["media"]
    assert media["packets"] > 0 and media["errors"] == 0
    assert media["bytes"] > media["packets"] * RTP_HEADER_BYTES
    # what the ingest bridge makes of it
    ctx = DecodeContext(source="kamailio@test")
    ended = decode_evapi(json.dumps(end).encode(), ctx)
    assert ended is not None and ended.type is EventType.CALL_ENDED
    assert (ended.hangup_by, ended.reason) == ("system", "max_duration")
    assert ended.duration_ms == round(talk_s * 1000)
    # the edge forgot the dialog and released the media session
    settings = edge_stack.settings
    assert edge.wait_until(lambda: not edge.kamailio_rpc(settings, "dlg.list"), timeout=2)
    assert edge.rtpengine_ng(settings, {"command": "list"}).get("calls") == []
