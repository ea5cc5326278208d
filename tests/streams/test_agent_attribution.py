"""Agent timelines of inbound, group, forwarded, picked-up and transferred calls, from the
edge's own payloads (decoded by ``ingest.decode``, routed by ``agent_keys``).

Golden sequences: the evapi payloads each case makes (shape as ``sip-edge/kamailio.cfg``
sends them, checked on the real edge by ``tests/sip_edge/test_pbx.py``) and the exact
segments and day counts every agent gets. The bug this holds down: a DID call answered
by 102 left 102 on_call for ever, because its ringing and end named only the client and
the DID. All agents registered at 09:30 for an hour; calls at 10:00 (UTC, 2026-11-26).

    case                      102                          103 / 104
    DID -> 102 answered       ringing, on_call, available  -
    DID -> 102 no answer      ringing, available (missed)  -
    DID -> 102 busy           available (not offered)      -
    ring_all 102+103          ringing, on_call, available  103 ringing, available (missed)
    sequential 104, 102       ringing@+2s, on_call, avail. 104 ringing 2 s, available
    DID -> 104 -> mobile      -                            104 ringing, available
    pickup *8 by 103          ringing, available (missed)  103 ringing, on_call, available
    blind transfer 102 -> 103 ringing, on_call, available  103 ringing, on_call, available
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from core.agent_records import AgentStatus, IntervalKind
from core.events import Event
from ingest.decode import DecodeContext, decode_evapi
from streams.folds.agent_state import AgentState, agent_keys, apply, timeline
from streams.folds.agent_stats import stats

S = AgentStatus
REG = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)
T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
CLIENT, DID, MOBILE = "+79035550101", "74951230102", "+79161234567"
CI = "c1@edge"
CTX = DecodeContext(source="kamailio@test", tenant_for_domain=lambda _d: "acme")
COUNTED = ("offered", "answered", "missed", "handled", "ringing_ms", "talk_ms")


def t(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def edge(event: str, at: float, **fields: Any) -> dict[str, Any]:
    """One evapi payload of call ``CI`` at T0 + ``at`` s (the edge's ``ts`` is epoch s)."""
    return {"event": event, "ts": t(at).timestamp(), "call_id": CI, **fields}


def start(to: str, route_target: str, frm: str = CLIENT, **more: Any) -> dict[str, Any]:
    group = {"group": route_target.split(":")[1]} if route_target.startswith("group:") else {}
    return edge("call.start", 0, **{"from": frm, "to": to, "ruri_user": to, "domain": "pbx.test",
                                    "route_target": route_target, **group, **more})


def ringing(at: float, branch: int, agent: str, to: str = DID, frm: str = CLIENT,
            ci: str = CI, **more: Any) -> dict[str, Any]:
    return edge("call.ringing", at, **{"from": frm, "to": to, "code": 180,
                                       "reason": "Ringing", "leg_id": f"{ci}#{branch}",
                                       "leg_to": agent, "agent": agent, **more})


def leg_failed(at: float, branch: int, agent: str, code: int, to: str = DID,
               **more: Any) -> dict[str, Any]:
    origin = "downstream" if code in (486, 603) else "proxy"
    return edge("call.failed", at, **{"from": CLIENT, "to": to, "code": code,
                                      "reason": "", "origin": origin,
                                      "leg_id": f"{CI}#{branch}", "agent": agent, **more})


def call_failed(at: float, code: int, to: str = DID) -> dict[str, Any]:
    return edge("call.failed", at, **{"from": CLIENT, "to": to, "code": code,
                                      "reason": "", "origin": "proxy"})


def answered(at: float, agent: str, to: str = DID, frm: str = CLIENT,
             **more: Any) -> dict[str, Any]:
    return edge("call.answered", at, **{"from": frm, "to": to, "code": 200, "agent": agent,
                                        **more})


def ended(at: float, answered_at: float, agent: str, to: str = DID, frm: str = CLIENT,
          **more: Any) -> dict[str, Any]:
    return edge("call.end", at, **{"from": frm, "to": to, "agent": agent,
                                   "answered_ts": t(answered_at).timestamp(),
                                   "duration": round(at - answered_at), "reason": "bye",
                                   "hangup_by": frm, **more})


def decoded(payloads: list[dict[str, Any]]) -> list[Event]:
    out = [decode_evapi(json.dumps(p).encode(), CTX) for p in payloads]
    return [e for e in out if e is not None]


def registrations(*agents: str) -> list[dict[str, Any]]:
    return [{"event": "register", "ts": REG.timestamp(), "user": a, "aor": f"sip:{a}@pbx.test",
             "domain": "pbx.test", "expires": 3600, "call_id": f"reg-{a}"} for a in agents]


def fold_agents(payloads: list[dict[str, Any]]) -> dict[str, AgentState]:
    """Every agent row the events reach, as the worker routes them (``agent_keys``)."""
    rows: dict[str, AgentState] = {}
    for event in decoded(payloads):
        for key in agent_keys(event):
            tenant, agent = key.split(":", 1)
            rows[agent] = apply(rows.get(agent, AgentState(tenant, agent)), event)
    return rows


def segments(state: AgentState) -> list[tuple[AgentStatus, datetime, datetime | None]]:
    return [(s.state, s.since, s.until) for s in timeline(state)]


def day(state: AgentState) -> dict[str, int]:
    """The agent's counters in the day's statistics row."""
    (row,) = [r for (kind, _), r in stats(state).items() if kind is IntervalKind.DAY]
    return {name: getattr(row, name) for name in COUNTED}


def counts(offered: int = 0, answered: int = 0, missed: int = 0, handled: int = 0,
           ringing_ms: int = 0, talk_ms: int = 0) -> dict[str, int]:
    return {"offered": offered, "answered": answered, "missed": missed, "handled": handled,
            "ringing_ms": ringing_ms, "talk_ms": talk_ms}


def assert_released(rows: dict[str, AgentState]) -> None:
    """After the call no agent is left on a call or ringing."""
    for agent, state in rows.items():
        assert timeline(state)[-1].state is S.AVAILABLE, (agent, segments(state))


# --- direct DID -> extension ----------------------------------------------------------------


def test_did_to_extension_answered_rings_talks_and_releases_the_agent() -> None:
    rows = fold_agents([*registrations("102"), start(DID, "ext:102"),
                        ringing(0.05, 0, "102"), answered(5, "102"),
                        ended(10.5, 5, "102")])

    assert set(rows) == {"102"}  # the client and the DID are nobody's row
    assert segments(rows["102"]) == [(S.AVAILABLE, REG, t(0.05)), (S.RINGING, t(0.05), t(5)),
                                     (S.ON_CALL, t(5), t(10.5)), (S.AVAILABLE, t(10.5), None)]
    assert day(rows["102"]) == counts(offered=1, answered=1, handled=1, ringing_ms=4950,
                                      talk_ms=5500)


def test_did_to_extension_not_answered_rings_until_its_leg_times_out() -> None:
    rows = fold_agents([*registrations("102"), start(DID, "ext:102"),
                        ringing(0.05, 0, "102"), leg_failed(20.05, 0, "102", 408),
                        call_failed(20.05, 408)])

    assert segments(rows["102"]) == [(S.AVAILABLE, REG, t(0.05)),
                                     (S.RINGING, t(0.05), t(20.05)),
                                     (S.AVAILABLE, t(20.05), None)]
    assert day(rows["102"]) == counts(offered=1, missed=1, ringing_ms=20_000)


def test_did_to_busy_extension_never_rings_it() -> None:
    rows = fold_agents([*registrations("102"), start(DID, "ext:102"),
                        leg_failed(0.03, 0, "102", 486), call_failed(0.03, 486)])

    assert segments(rows["102"]) == [(S.AVAILABLE, REG, None)]
    assert day(rows["102"]) == counts()


# --- groups ---------------------------------------------------------------------------------


def test_ring_all_group_one_answers_the_other_is_cancelled_at_that_moment() -> None:
    group = {"group": "sales"}
    rows = fold_agents([*registrations("102", "103"), start(DID, "group:sales"),
                        ringing(0.05, 0, "102", **group), ringing(0.06, 1, "103", **group),
                        leg_failed(0.85, 1, "103", 487, **group),
                        answered(0.85, "102", **group), ended(3.85, 0.85, "102", **group)])

    assert set(rows) == {"102", "103"}
    assert segments(rows["102"]) == [(S.AVAILABLE, REG, t(0.05)),
                                     (S.RINGING, t(0.05), t(0.85)),
                                     (S.ON_CALL, t(0.85), t(3.85)),
                                     (S.AVAILABLE, t(3.85), None)]
    assert segments(rows["103"]) == [(S.AVAILABLE, REG, t(0.06)),
                                     (S.RINGING, t(0.06), t(0.85)),
                                     (S.AVAILABLE, t(0.85), None)]
    assert day(rows["102"]) == counts(offered=1, answered=1, handled=1, ringing_ms=800,
                                      talk_ms=3000)
    assert day(rows["103"]) == counts(offered=1, missed=1, ringing_ms=790)


def test_numeric_group_number_is_not_taken_for_an_agent() -> None:
    """An internal call to group "600": the callee is the group, never an agent row."""
    group = {"group": "600"}
    rows = fold_agents([*registrations("101", "102"),
                        start("600", "group:600", frm="101"),
                        ringing(0.05, 0, "102", to="600", frm="101", **group),
                        answered(1, "102", to="600", frm="101", **group),
                        ended(2, 1, "102", to="600", frm="101", **group)])

    assert set(rows) == {"101", "102"}
    assert segments(rows["101"]) == [(S.AVAILABLE, REG, t(1)), (S.ON_CALL, t(1), t(2)),
                                     (S.AVAILABLE, t(2), None)]


def test_sequential_group_rings_the_next_member_after_the_first_times_out() -> None:
    group = {"group": "support"}
    rows = fold_agents([*registrations("102", "104"), start(DID, "group:support"),
                        ringing(0.05, 0, "104", **group),
                        leg_failed(2.05, 0, "104", 408, **group),
                        ringing(2.1, 1, "102", **group),
                        answered(3, "102", **group), ended(4, 3, "102", **group)])

    assert segments(rows["104"]) == [(S.AVAILABLE, REG, t(0.05)),
                                     (S.RINGING, t(0.05), t(2.05)),
                                     (S.AVAILABLE, t(2.05), None)]
    assert segments(rows["102"]) == [(S.AVAILABLE, REG, t(2.1)), (S.RINGING, t(2.1), t(3)),
                                     (S.ON_CALL, t(3), t(4)), (S.AVAILABLE, t(4), None)]
    assert day(rows["104"]) == counts(offered=1, missed=1, ringing_ms=2000)
    assert day(rows["102"]) == counts(offered=1, answered=1, handled=1, ringing_ms=900,
                                      talk_ms=1000)


def test_no_answer_forward_to_the_mobile_releases_the_extension_and_adds_no_agent() -> None:
    forwarded = edge("call.forwarded", 2.05, **{
        "from": CLIENT, "to": DID, "reason": "no_answer", "forwarded_from": "ext:104",
        "forwarded_to": f"tel:{MOBILE}", "hop": 1, "domain": "pbx.test"})
    rows = fold_agents([*registrations("104"), start(DID, "ext:104"),
                        ringing(0.05, 0, "104"), leg_failed(2.05, 0, "104", 408), forwarded,
                        ringing(2.2, 1, MOBILE), answered(4, MOBILE),
                        ended(9, 4, MOBILE)])

    assert set(rows) == {"104"}
    assert segments(rows["104"]) == [(S.AVAILABLE, REG, t(0.05)),
                                     (S.RINGING, t(0.05), t(2.05)),
                                     (S.AVAILABLE, t(2.05), None)]
    assert day(rows["104"]) == counts(offered=1, missed=1, ringing_ms=2000)


# --- pickup and transfer --------------------------------------------------------------------


def test_pickup_star8_moves_the_call_from_the_ringing_peer_to_the_picker() -> None:
    group = {"group": "sales"}
    picked = edge("call.picked_up", 3, **{"from": CLIENT, "to": DID, "picked_up_by": "103"})
    rows = fold_agents([*registrations("102", "103"), start(DID, "group:sales"),
                        ringing(0.05, 0, "102", **group), ringing(2.5, 1, "103", **group),
                        picked, leg_failed(3, 0, "102", 487, **group),
                        answered(3, "103", **group), ended(6, 3, "103", **group)])

    assert segments(rows["102"]) == [(S.AVAILABLE, REG, t(0.05)), (S.RINGING, t(0.05), t(3)),
                                     (S.AVAILABLE, t(3), None)]
    assert segments(rows["103"]) == [(S.AVAILABLE, REG, t(2.5)), (S.RINGING, t(2.5), t(3)),
                                     (S.ON_CALL, t(3), t(6)), (S.AVAILABLE, t(6), None)]
    assert day(rows["102"]) == counts(offered=1, missed=1, ringing_ms=2950)
    assert day(rows["103"]) == counts(offered=1, answered=1, handled=1, ringing_ms=500,
                                      talk_ms=3000)


def test_blind_transfer_moves_the_talk_from_the_transferor_to_the_target() -> None:
    new = "c2@edge"  # the transferee's new dialog: its own SIP Call-ID, the same call
    leg = {"leg_id": new}
    transferred = edge("call.transferred", 4, **{"from": "102", "to": "103",
                                                 "transferee": CLIENT, "kind": "blind"})
    rows = fold_agents([
        *registrations("102", "103"), start(DID, "ext:102"), ringing(0.05, 0, "102"),
        answered(1, "102"), transferred, ended(4.2, 1, "102", hangup_by="102"),
        start("103", "ext:103", transferred_from=CI, referred_by="102", **leg),
        ringing(4.3, 0, "103", to="103", ci=new), answered(5, "103", to="103", **leg),
        ended(8, 5, "103", to="103", **leg)])

    assert segments(rows["102"]) == [(S.AVAILABLE, REG, t(0.05)), (S.RINGING, t(0.05), t(1)),
                                     (S.ON_CALL, t(1), t(4.2)), (S.AVAILABLE, t(4.2), None)]
    assert segments(rows["103"]) == [(S.AVAILABLE, REG, t(4.3)), (S.RINGING, t(4.3), t(5)),
                                     (S.ON_CALL, t(5), t(8)), (S.AVAILABLE, t(8), None)]
    assert day(rows["102"])["talk_ms"] == 3200 and day(rows["103"])["talk_ms"] == 3000


@pytest.mark.parametrize("reverse", [False, True], ids=["in-order", "reversed"])
def test_every_agent_is_released_whatever_order_the_legs_arrive_in(reverse: bool) -> None:
    """The ring_all call's events in reverse (within the lateness horizon): same rows."""
    group = {"group": "sales"}
    calls = [start(DID, "group:sales"), ringing(0.05, 0, "102", **group),
             ringing(0.06, 1, "103", **group), leg_failed(0.85, 1, "103", 487, **group),
             answered(0.85, "102", **group), ended(3.85, 0.85, "102", **group)]
    rows = fold_agents([*registrations("102", "103"), *(calls[::-1] if reverse else calls)])

    assert_released(rows)
    assert segments(rows["103"])[-2:] == [(S.RINGING, t(0.06), t(0.85)),
                                          (S.AVAILABLE, t(0.85), None)]
