"""A dialog that ends on the edge's own timer after rtpengine forgot its media session.

What happened live (issue 13, item 10): callers' BYEs were dropped, rtpengine removed the
silent sessions on its own timeout, and the dialogs ended later on Kamailio's timer;
route[MEDIA_QUALITY] then read ``$rtpstat`` for a call rtpengine no longer knew and the
assignment failed. Here the media session is deleted over rtpengine's ng protocol while
the call talks (what rtpengine's timeout does), and the dialog ends at a short maximum
call duration (``EDGE_SETTINGS``). Asserted: the call still ends once, cleanly
(``max_duration``, BYE to both), the event says ``media_missing: unknown_call`` with no
figures, Kamailio logged no failed pvar read, and ingest counts the call in
``tawag_ingest_calls_without_media_total``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest
from edge_harness import EdgeStack, EvapiListener
from prometheus_client import REGISTRY

from core.events import EventType
from edge import control as edge
from edge import sipp
from ingest.bridge import Bridge
from ingest.decode import DecodeContext

pytestmark = pytest.mark.integration

MAX_CALL_S = 3
EDGE_SETTINGS = {"max_call_duration_s": MAX_CALL_S}
CALLER, CALLEE = "101", "102"
CALLEE_PORT, CALLER_PORT = 25072, 25081
CALLEE_MEDIA, CALLER_MEDIA = 32510, 32514
END_TIMEOUT_S = MAX_CALL_S + 5.0
FAILED_PVAR = "non existing right pvar"


class ListSink:
    def __init__(self) -> None:
        self.events: list = []

    def event(self, ev) -> None:
        self.events.append(ev)

    def dead_letter(self, record: bytes) -> None:
        raise AssertionError(f"dead letter: {record!r}")

    def flush(self) -> None:
        pass


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


def without_media_count(why: str) -> float:
    return REGISTRY.get_sample_value("tawag_ingest_calls_without_media_total",
                                     {"why": why}) or 0.0


def test_a_call_ending_on_the_edge_timer_without_its_media_session_ends_cleanly(
    sip: sipp.Edge, evapi: EvapiListener, callee: sipp.Uas, edge_stack: EdgeStack
) -> None:
    settings = edge_stack.settings
    log_before = len(edge_stack.kamailio_log())
    earlier = evapi.events
    outcome: list[sipp.SippResult] = []
    args = ["-s", CALLEE, "-key", "caller", CALLER, "-p", str(CALLER_PORT),
            "-mp", str(CALLER_MEDIA)]
    caller_thread = threading.Thread(target=lambda: outcome.append(sipp.run_scenario(
        sip, "uac_call_until_edge_bye.xml", args, label="media-missing", expected_code=200)))
    caller_thread.start()
    try:
        answered = evapi.wait_for(lambda e: e["event"] == "call.answered"
                                  and e not in earlier)
        call_id = answered["call_id"]
        # what rtpengine's own no-media timeout does: the session is gone, the dialog not
        reply = edge.rtpengine_ng(settings, {"command": "delete", "call-id": call_id})
        assert reply.get("result") == "ok", reply
        assert edge.rtpengine_ng(settings, {"command": "list"}).get("calls") == []
        end = evapi.wait_for(lambda e: e["event"] == "call.end" and e["call_id"] == call_id,
                             timeout=END_TIMEOUT_S)
    finally:
        caller_thread.join(END_TIMEOUT_S + 10)
    caller = outcome[0]
    assert caller.ok, caller.received()
    byes = [m for m in caller.messages if m.direction == "received" and m.method == "BYE"]
    assert len(byes) == 1 and "tawag-edge" in byes[0].text

    # one clean end, on the edge's timer, saying the media figures are missing
    ends = [e for e in evapi.for_call(call_id) if e["event"] == "call.end"]
    assert len(ends) == 1
    assert (end["reason"], end["hangup_by"]) == ("max_duration", "system")
    assert end["media"] == {}
    assert end["media_missing"] == "unknown_call"
    assert FAILED_PVAR not in edge_stack.kamailio_log()[log_before:]
    assert edge.wait_until(lambda: not edge.kamailio_rpc(settings, "dlg.list"), timeout=2)

    # ingest decodes it and counts the call without media figures
    before = without_media_count("unknown_call")
    sink = ListSink()
    bridge = Bridge(("127.0.0.1", 0), DecodeContext(source="kamailio@test"), sink)
    bridge.handle_frame(json.dumps(end).encode())
    [ended] = sink.events
    assert ended.type is EventType.CALL_ENDED and ended.media is None
    assert ended.extra["media_missing"] == "unknown_call"
    assert without_media_count("unknown_call") == before + 1


def test_a_call_with_its_media_session_has_figures_and_no_missing_flag(
    sip: sipp.Edge, evapi: EvapiListener, callee: sipp.Uas
) -> None:
    """The control case: the same call, its session left alone, keeps its RTP figures."""
    args = ["-s", CALLEE, "-key", "caller", CALLER, "-p", str(CALLER_PORT),
            "-mp", str(CALLER_MEDIA)]
    caller = sipp.run_scenario(sip, "uac_call_until_edge_bye.xml", args,
                               label="media-kept", expected_code=200)
    assert caller.ok, caller.received()
    end = evapi.wait_for(lambda e: e["event"] == "call.end"
                         and e["call_id"] == caller.call_id)
    assert end["media"]["packets"] > 0
    assert "media_missing" not in end
