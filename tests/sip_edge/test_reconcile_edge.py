"""The reconciler's contract with the real edge: the calls it follows from the events are
the dialogs ``dlg.list`` lists, while they ring and while they talk, and are forgotten when
they end.

If an open call's dialog were missing from ``dlg.list`` while it is alive (say, while it
rings, before any answer), ``ingest.reconcile`` would close a live call as interrupted.
Both states are held here for several polls: a call that rings 1.5 s and is
cancelled, and one that talks and is hung up; the ended dialog is then listed as ended,
with its end time, for a few seconds (the reconciler recovers a lost ``call.end`` from
it). The events are the edge's own (evapi), decoded as the bridge does.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from edge_harness import EdgeStack, EvapiListener

from edge import control as edge
from edge import sipp
from ingest.decode import DecodeContext, decode_evapi
from ingest.reconcile import OpenCalls, edge_dialogs

pytestmark = pytest.mark.integration

CALLER, CALLEE = "101", "102"
CALLEE_PORT, CALLER_PORT = 25073, 25082
CALLEE_MEDIA, CALLER_MEDIA = 32520, 32524
RING_MS, TALK_MS = 1500, 3000
"""Ringing below the test stack's no-answer timeout (2 s, edge_harness); a poll every
250 ms sees each state a few times."""
MIN_POLLS = 3
CTX = DecodeContext(source="kamailio@test")


@pytest.fixture(scope="module")
def sip(edge_stack: EdgeStack, tmp_path_factory: pytest.TempPathFactory) -> sipp.Edge:
    return sipp.Edge.from_settings(edge_stack.settings, tmp_path_factory.mktemp("sipp"))


def followed(payloads: list[dict]) -> OpenCalls:
    """What the reconciler knows after the bridge forwarded these payloads."""
    calls = OpenCalls()
    for payload in payloads:
        ev = decode_evapi(json.dumps(payload).encode(), CTX)
        if ev is not None:
            calls.track(ev)
    return calls


def nothing_due(calls: OpenCalls, settings) -> bool:
    """No open call is missing from the edge's dialogs (grace 0: at once). The last poll
    may fall just after the call ended (the edge lists the dialog as ended, its event is
    on its way): ended, not lost."""
    live, ended = edge_dialogs(edge.kamailio_rpc(settings, "dlg.list"))
    due = calls.due(live | set(ended), now=0.0, wall=datetime.now(UTC), grace_s=0.0,
                    max_age=timedelta(hours=3))
    return due == []


def run_in_thread(work: Callable[[], sipp.SippResult]) -> tuple[threading.Thread, list]:
    out: list[sipp.SippResult] = []
    thread = threading.Thread(target=lambda: out.append(work()))
    thread.start()
    return thread, out


def test_a_ringing_call_is_listed_by_the_edge_until_it_is_cancelled(
    sip: sipp.Edge, evapi: EvapiListener, edge_stack: EdgeStack
) -> None:
    settings = edge_stack.settings
    assert sipp.register(sip, CALLEE, port=CALLEE_PORT).ok
    uas = sipp.start_uas_ring(sip, port=CALLEE_PORT)
    earlier = evapi.events
    thread, out = run_in_thread(lambda: sipp.call_and_cancel(
        sip, CALLER, CALLEE, ring_ms=RING_MS, port=CALLER_PORT, media_port=CALLER_MEDIA))
    try:
        ringing = evapi.wait_for(lambda e: e["event"] == "call.ringing" and e not in earlier)
        calls = followed(evapi.for_call(ringing["call_id"]))
        assert set(calls.calls) == {ringing["call_id"]}  # open, ringing 102
        assert list(calls.calls[ringing["call_id"]].legs.values()) == [CALLEE]
        # polled while it rings: never missing
        polls = 0
        while thread.is_alive() and polls < 10:
            assert nothing_due(calls, settings)
            polls += 1
            thread.join(0.25)  # paces the polls; the thread's end stops them
        assert polls >= MIN_POLLS
    finally:
        thread.join(10)
        uas.stop()
    assert out and out[0].ok, out[0].received() if out else "no result"
    evapi.wait_for(lambda e: e["event"] == "call.failed"
                   and e["call_id"] == ringing["call_id"])
    assert followed(evapi.for_call(ringing["call_id"])).calls == {}


def test_a_talking_call_is_listed_by_the_edge_until_it_ends(
    sip: sipp.Edge, evapi: EvapiListener, edge_stack: EdgeStack
) -> None:
    settings = edge_stack.settings
    assert sipp.register(sip, CALLEE, port=CALLEE_PORT).ok
    uas = sipp.start_uas_answer(sip, port=CALLEE_PORT, media_port=CALLEE_MEDIA)
    earlier = evapi.events
    thread, out = run_in_thread(lambda: sipp.call(
        sip, CALLER, CALLEE, port=CALLER_PORT, media_port=CALLER_MEDIA, talk_ms=TALK_MS))
    try:
        answered = evapi.wait_for(lambda e: e["event"] == "call.answered" and e not in earlier)
        calls = followed(evapi.for_call(answered["call_id"]))
        assert calls.calls[answered["call_id"]].dialogs == {answered["call_id"]: CALLEE}
        polls = 0
        while thread.is_alive() and polls < 10:
            assert nothing_due(calls, settings)
            polls += 1
            thread.join(0.25)
        assert polls >= MIN_POLLS
    finally:
        thread.join(10)
        uas.stop()
    assert out and out[0].ok, out[0].received() if out else "no result"
    evapi.wait_for(lambda e: e["event"] == "call.end" and e["call_id"] == answered["call_id"])
    assert followed(evapi.for_call(answered["call_id"])).calls == {}
    # for a few seconds more (its BYE transaction's life) the edge lists the dialog as
    # ended, with the end time: what the reconciler recovers a lost call.end from
    live, ended = edge_dialogs(edge.kamailio_rpc(settings, "dlg.list"))
    assert answered["call_id"] not in live
    assert abs(ended[answered["call_id"]].timestamp() - datetime.now(UTC).timestamp()) < 3
