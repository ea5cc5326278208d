"""The reconciler's bookkeeping and decisions (``ingest.reconcile``), without an edge.

The calls are followed from the events the bridge forwards; the edge's live dialogs are
given as sets of SIP Call-IDs, the clocks are numbers. Asserted: which calls are due and
when (grace counted only while the edge is listed and the bridge connected), what the
interruption events say, that the open calls survive a restart on disk, and that a
repeated interruption carries the same event ids.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from builders import T0, call_events

from core.events import Direction, EventType, from_json, to_json
from core.records import Disposition
from ingest.reconcile import (
    OpenCalls,
    Reconciler,
    TrackingSink,
    edge_dialogs,
    interruption,
)
from streams.folds import cdr as cdr_fold
from streams.folds.cdr import to_cdr

E = EventType
GRACE = 10.0
MAX_AGE = timedelta(hours=2)
CLIENT, DID = "+79035550101", "+74951230102"


def direct_call(call_id: str = "c1"):
    ev = call_events(call_id, caller=CLIENT, callee=DID, did=DID, direction=Direction.INBOUND)
    return [ev(E.CALL_OFFERED, 0), ev(E.CALL_RINGING, 50, leg_id=f"{call_id}#0", agent="102"),
            ev(E.CALL_ANSWERED, 5_000, agent="102")]


def group_ringing(call_id: str = "g1"):
    ev = call_events(call_id, caller=CLIENT, callee=DID, did=DID, direction=Direction.INBOUND)
    return [ev(E.CALL_OFFERED, 0),
            ev(E.CALL_RINGING, 50, leg_id=f"{call_id}#0", agent="102"),
            ev(E.CALL_RINGING, 60, leg_id=f"{call_id}#1", agent="103"),
            ev(E.CALL_RINGING, 70, leg_id=f"{call_id}#2", agent="104"),
            ev(E.CALL_FAILED, 900, leg_id=f"{call_id}#2", agent="104", sip_code=486)]


def tracked(*events) -> OpenCalls:
    calls = OpenCalls()
    for ev in events:
        calls.track(ev)
    return calls


def due(calls: OpenCalls, live, now: float, wall=T0):
    return [(c.call_id, why) for c, why in
            calls.due(live, now=now, wall=wall, grace_s=GRACE, max_age=MAX_AGE)]


def test_a_call_listed_by_the_edge_is_never_due() -> None:
    calls = tracked(*direct_call())
    assert due(calls, {"c1"}, now=0) == []
    assert due(calls, {"c1"}, now=1000) == []


def test_a_call_gone_from_the_edge_is_due_once_missing_for_the_grace() -> None:
    calls = tracked(*direct_call())
    assert due(calls, set(), now=100) == []
    assert due(calls, set(), now=100 + GRACE - 0.1) == []
    assert due(calls, set(), now=100 + GRACE) == [("c1", "edge_lost")]


def test_reappearing_on_the_edge_restarts_the_grace() -> None:
    calls = tracked(*direct_call())
    due(calls, set(), now=0)
    assert due(calls, {"c1"}, now=5) == []
    assert due(calls, set(), now=GRACE + 1) == []
    assert due(calls, set(), now=2 * GRACE + 1) == [("c1", "edge_lost")]


def test_no_answer_from_the_edge_decides_nothing_but_the_age_rule_still_holds() -> None:
    calls = tracked(*direct_call())
    assert due(calls, None, now=10_000) == []
    assert due(calls, None, now=10_000, wall=T0 + MAX_AGE + timedelta(seconds=6)) == [
        ("c1", "max_age")]
    # listed or not: a call older than the maximum duration is closed
    assert due(calls, {"c1"}, now=0, wall=T0 + MAX_AGE + timedelta(seconds=6)) == [
        ("c1", "max_age")]


def test_ended_failed_and_cancelled_calls_are_forgotten() -> None:
    ev = call_events("e1", caller="101", callee="102", direction=Direction.INTERNAL)
    calls = tracked(*direct_call(), ev(E.CALL_OFFERED, 0), ev(E.CALL_FAILED, 10, sip_code=486))
    assert set(calls.calls) == {"c1"}
    done = call_events("c1")
    calls.track(done(E.CALL_ENDED, 9_000, reason="bye"))
    assert calls.calls == {}
    # a leg failure is not the call's failure
    calls = tracked(*group_ringing())
    assert set(calls.calls) == {"g1"} and set(calls.calls["g1"].legs) == {"g1#0", "g1#1"}
    # events after the end (a recording) do not open it again
    calls.track(call_events("zz")(E.CALL_RECORDING_READY, 1, extra={"file": "x"}))
    assert set(calls.calls) == {"g1"}


def test_interruption_of_an_answered_call_ends_it_at_its_last_event_naming_the_agent() -> None:
    calls = tracked(*direct_call())
    [(call, why)] = calls.due(set(), now=GRACE, wall=T0, grace_s=0, max_age=MAX_AGE)
    [end] = interruption(call, why, T0 + timedelta(minutes=3), "kamailio@test")
    assert end.type is E.CALL_ENDED and end.reason == "interrupted"
    assert (end.call_id, end.leg_id, end.agent) == ("c1", "c1", "102")
    assert end.ts == T0 + timedelta(seconds=5)  # the answer: the last time known
    assert end.duration_ms == 0 and end.hangup_by is None
    assert (end.caller, end.callee, end.did, end.direction) == (CLIENT, DID, DID,
                                                                Direction.INBOUND)
    assert end.extra == {"interrupted": "edge_lost", "detected_at": "2026-11-26T09:03:00.000Z"}
    assert end.source == "kamailio@test#reconciler"
    assert from_json(to_json(end)) == end  # a valid v1 event


def test_interruption_of_a_ringing_group_cancels_each_ringing_leg_with_its_agent() -> None:
    calls = tracked(*group_ringing())
    events = interruption(calls.calls["g1"], "edge_lost", T0, "s")
    assert [(e.type, e.leg_id, e.agent) for e in events] == [
        (E.CALL_CANCELLED, "g1#0", "102"), (E.CALL_CANCELLED, "g1#1", "103"),
        (E.CALL_ENDED, "g1", None)]
    assert {e.ts for e in events} == {T0 + timedelta(milliseconds=900)}
    assert events[-1].duration_ms is None


def test_open_calls_survive_a_restart_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "open.json"
    calls = tracked(*direct_call(), *group_ringing())
    calls.save(path)
    again = OpenCalls.load(path)
    assert again.to_dict() == calls.to_dict()
    assert OpenCalls.load(tmp_path / "none.json").calls == {}
    (tmp_path / "bad.json").write_text("{not json")
    assert OpenCalls.load(tmp_path / "bad.json").calls == {}


def test_edge_dialogs_reads_the_call_ids_of_dlg_list() -> None:
    result = [{"h_entry": 1, "call-id": "a@x", "state": 4}, {"call-id": "b@x"}, {"h_id": 3}]
    assert edge_dialogs(result)[0] == {"a@x", "b@x"}
    assert edge_dialogs(None) == (set(), {})


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class ListSink:
    def __init__(self) -> None:
        self.events: list = []
        self.flushes = 0

    def event(self, ev) -> None:
        self.events.append(ev)

    def dead_letter(self, record: bytes) -> None:
        raise AssertionError(record)

    def flush(self) -> None:
        self.flushes += 1


def reconciler(path: Path, sink: ListSink, live: list, connected: list, clock: FakeClock,
               asked: list | None = None):
    def list_dialogs():
        if asked is not None:
            asked.append(clock.now)
        if live[0] is None:
            raise OSError("kamailio down")
        return [{"call-id": c} for c in live[0]]

    holder: dict = {}
    rec = Reconciler(path, list_dialogs=list_dialogs,
                     emit=lambda evs: [holder["sink"].event(e) for e in evs],
                     connected=lambda: connected[0], source="kamailio@test",
                     interval_s=1, grace_s=GRACE, max_age=MAX_AGE, clock=clock,
                     wall=lambda: T0 + timedelta(minutes=1))
    holder["sink"] = TrackingSink(sink, rec)
    return rec, holder["sink"]


def test_reconciler_closes_a_lost_call_once_and_a_restarted_one_repeats_the_same_ids(
    tmp_path: Path,
) -> None:
    path = tmp_path / "open.json"
    sink, clock = ListSink(), FakeClock()
    live, connected = [{"c1"}], [True]
    asked: list[float] = []
    rec, tracking = reconciler(path, sink, live, connected, clock, asked)
    assert rec.step() == [] and asked == []  # no call open: the edge is not asked
    for ev in direct_call():
        tracking.event(ev)
    tracking.flush()
    assert path.exists()  # saved before the bridge reads on
    assert rec.step() == [] and asked == [0.0]
    # Kamailio restarts: unreachable first (nothing is decided), then without the dialog
    live[0] = None
    clock.now = 100
    assert rec.step() == []
    live[0] = set()
    clock.now = 101
    assert rec.step() == []
    # the bridge reconnects meanwhile: absence counts only while it is connected
    connected[0] = False
    clock.now = 105
    assert rec.step() == []
    connected[0] = True
    clock.now = 106
    assert rec.step() == []
    clock.now = 106 + GRACE
    saved_before_closing = path.read_text()
    sent = rec.step()
    assert [(e.type, e.reason) for e in sent] == [(E.CALL_ENDED, "interrupted")]
    # at the last time the edge still listed it (the first step), not the answer
    assert sent[0].ts == T0 + timedelta(minutes=1)
    assert sent[0].duration_ms == 55_000
    assert sink.events[-1] == sent[0]
    assert rec.open.calls == {} and OpenCalls.load(path).calls == {}
    clock.now += 100
    assert rec.step() == []  # closed once

    # an ingest killed before it saved the closing sends the same events again
    path.write_text(saved_before_closing)
    again, _ = reconciler(path, ListSink(), [set()], [True], FakeClock())
    again.step()
    again.clock.now = GRACE  # type: ignore[attr-defined]
    repeat = again.step()
    assert [e.event_id for e in repeat] == [e.event_id for e in sent]


@pytest.mark.parametrize("kind", [E.CALL_ENDED, E.CALL_FAILED])
def test_a_real_end_after_the_interruption_opens_nothing(kind: EventType) -> None:
    calls = tracked(*direct_call())
    for ev in interruption(calls.calls["c1"], "edge_lost", T0, "s"):
        calls.track(ev)
    assert calls.calls == {}
    calls.track(call_events("c1")(kind, 9_000, sip_code=486 if kind is E.CALL_FAILED else None))
    assert calls.calls == {}


def test_dlg_list_separates_live_dialogs_from_ended_ones_with_their_end_time() -> None:
    listed = [{"call-id": "a", "state": 4, "end_ts": 0},
              {"call-id": "b", "state": 5, "end_ts": 1795681000},
              {"call-id": "c", "state": 5, "end_ts": 0},  # ended, no time: counted live
              {"state": 4}, "junk"]
    live, ended = edge_dialogs(listed)
    assert live == {"a", "c"} and ended == {"b": datetime.fromtimestamp(1795681000, UTC)}


def test_an_answered_call_the_edge_ended_without_its_call_ended_closes_answered_at_its_end(
        ) -> None:
    """The crash test's case: the BYE ended the dialog on the edge (dlg.list lists it as
    ended for a few seconds), but the call.ended never reached ingest."""
    calls = tracked(*direct_call())
    edge_end = T0 + timedelta(seconds=9)
    assert due(calls, set(), now=0) == []
    assert calls.calls["c1"].edge_ended == {}
    assert calls.due(set(), now=1, wall=T0, grace_s=GRACE, max_age=MAX_AGE,
                     ended={"c1": edge_end}) == []
    [(call, why)] = calls.due(set(), now=GRACE, wall=T0, grace_s=GRACE, max_age=MAX_AGE)
    [end] = interruption(call, why, T0 + timedelta(minutes=1), "kamailio@test")
    assert (end.type, end.reason, end.ts, end.agent) == (E.CALL_ENDED, "recovered", edge_end,
                                                          "102")
    assert end.duration_ms == 4_000  # answered at 5 s, ended at 9 s
    assert end.extra == {"recovered": "edge_dialog_ended",
                         "detected_at": "2026-11-26T09:01:00.000Z"}
    cdr = to_cdr(cdr_fold.fold("c1", [*direct_call(), end]))
    assert (cdr.disposition, cdr.closed, cdr.talk_ms) == (Disposition.ANSWERED, True, 4_000)
    assert from_json(to_json(end)) == end
    # remembered on disk too, so a restarted ingest still recovers it
    assert OpenCalls.from_dict(calls.to_dict()).to_dict() == calls.to_dict()


def test_an_ended_dialog_that_was_never_answered_is_still_interrupted() -> None:
    calls = tracked(*group_ringing())
    calls.due(set(), now=0, wall=T0, grace_s=GRACE, max_age=MAX_AGE,
              ended={"g1": T0 + timedelta(seconds=3)})
    events = interruption(calls.calls["g1"], "edge_lost", T0, "s")
    assert {e.reason for e in events} == {"interrupted"}
