"""Golden end-to-end without a broker: call events -> folds -> records -> loader -> queries.

Extension 101 of acme, client +74951234567 (UTC, 2026-11-26), fed in *reverse* order (to
the agent fold: reversed within its 5-minute lateness horizon, which is what it promises):

    09:00        101 registers
    c1 09:09:59  offered; 09:10 rings 101; 09:10:10 answered by 101; 09:14:10 ended
    c2 09:14:29  offered; 09:14:30 rings 101; 09:14:50 cancelled by the caller  (missed)
    c3 10:00:00  101 calls the client back; answered 10:00:05; ended 10:03:05
    09:40        101 unregisters

    15-min rows of [09:00, 10:00): talk 240 s, ringing 10 + 20 = 30 s, available
    (09:00-09:10) 600 + (09:14:10-09:14:30) 20 + (09:14:50-09:40) 1510 = 2130 s,
    logged in 2400 s; offered 2, answered 1, missed 1, handled 1 -> AHT talk-only 240 s,
    occupancy 240 / (240 + 2130).  (c3 is placed while offline: on_call 10:00:05-10:03:05.)
    callback item c2: opened 09:14:29, closed by c3's answer 10:00:05 by 101 (outbound):
    time to callback 45 min 36 s = 2736000 ms.
"""

from __future__ import annotations

from conftest import SETTINGS, T0

from core.agent_records import record_to_json
from core.events import Direction, Event, EventType
from streams.folds import agent_state, agent_stats, callbacks, cdr
from warehouse.loader import Loader, Record, routes_for
from warehouse.queries import agent_stats as agent_q
from warehouse.queries import callbacks as callback_q

AGENT_STATES_TOPIC = SETTINGS.topic_agent_states
AGENT_STATS_TOPIC = SETTINGS.topic_agent_stats
CALLBACKS_TOPIC = SETTINGS.topic_callbacks

CLIENT = "+74951234567"


def at(h: int, m: int, s: int = 0):
    return T0.replace(hour=h, minute=m, second=s)


def call(cid, kind, ts, inbound=True, **kw) -> Event:
    parties = ({"caller": CLIENT, "callee": "101", "direction": Direction.INBOUND} if inbound
               else {"caller": "101", "callee": CLIENT, "direction": Direction.OUTBOUND})
    return Event(event_id=f"{cid}/{kind.value}", type=kind, tenant="acme", ts=ts,
                 source="test", call_id=cid, **parties, **kw)


def reg(kind, ts) -> Event:
    return Event(event_id=f"{kind.value}@{ts}", type=kind, tenant="acme", ts=ts,
                 source="test", agent="101")


ET = EventType
EVENTS = [
    reg(ET.AGENT_REGISTERED, at(9, 0)),
    call("c1", ET.CALL_OFFERED, at(9, 9, 59)), call("c1", ET.CALL_RINGING, at(9, 10)),
    call("c1", ET.CALL_ANSWERED, at(9, 10, 10), agent="101"),
    call("c1", ET.CALL_ENDED, at(9, 14, 10)),
    call("c2", ET.CALL_OFFERED, at(9, 14, 29)), call("c2", ET.CALL_RINGING, at(9, 14, 30)),
    call("c2", ET.CALL_CANCELLED, at(9, 14, 50), sip_code=487),
    call("c3", ET.CALL_OFFERED, at(10, 0), inbound=False),
    call("c3", ET.CALL_ANSWERED, at(10, 0, 5), inbound=False, agent=CLIENT),
    call("c3", ET.CALL_ENDED, at(10, 3, 5), inbound=False),
    reg(ET.AGENT_UNREGISTERED, at(9, 40)),
]


def reversed_within_horizon(events: list[Event]) -> list[Event]:
    """Reversed inside each 4-minute stretch of event time: every event arrives less than
    the agent fold's lateness horizon (5 minutes) behind the newest one."""
    def stretch(e: Event) -> int:
        return int((e.ts - T0).total_seconds() // 240)
    return sorted(events, key=lambda e: (stretch(e), -e.ts.timestamp()))


def emitted(events: list[Event], agent_events: list[Event]) -> dict[str, list[bytes]]:
    """What the three Faust agents would send, message by message: the call and callback
    folds get ``events``, the agent fold ``agent_events`` (the same set, in an order
    within its lateness horizon: its guarantee)."""
    out: dict[str, list[bytes]] = {AGENT_STATES_TOPIC: [], AGENT_STATS_TOPIC: [],
                                   CALLBACKS_TOPIC: []}
    agent = agent_state.AgentState("acme", "101")
    for event in agent_events:
        new = agent_state.apply(agent, event)
        out[AGENT_STATES_TOPIC] += map(record_to_json, agent_state.state_changes(agent, new))
        out[AGENT_STATS_TOPIC] += map(record_to_json, agent_stats.stats_changes(agent, new))
        agent = new
    calls: dict[str, cdr.CallState] = {}
    client = callbacks.CallbackState("acme", CLIENT)
    for event in events:
        if event.call_id is None:
            continue
        calls[event.call_id] = cdr.apply(calls.get(event.call_id, cdr.CallState(event.call_id)),
                                         event)
        try:
            revision = cdr.to_cdr(calls[event.call_id])
        except cdr.IncompleteCall:
            continue
        after = callbacks.apply(client, revision)
        out[CALLBACKS_TOPIC] += map(record_to_json, callbacks.item_changes(client, after))
        client = after
    return out


def test_events_in_any_order_end_as_the_expected_warehouse_answers(store):
    loader = Loader(store, routes_for(SETTINGS), dead_letters=lambda d: None)
    for topic, values in emitted(list(reversed(EVENTS)), reversed_within_horizon(EVENTS)).items():
        for offset, value in enumerate(values):
            loader.load([Record(topic, 0, offset, value)])

    row = agent_q.agent_table(store, "acme", at(9, 0), at(10, 0)).iloc[0]
    assert row.agent == "101"
    assert (row.talk_ms, row.ringing_ms, row.available_ms, row.logged_in_ms) == (
        240_000, 30_000, 2_130_000, 2_400_000)
    assert (row.offered, row.answered, row.missed, row.handled) == (2, 1, 1, 1)
    assert row.aht_talk_ms == 240_000 and row.occupancy == 240 / (240 + 2130)

    day = agent_q.state_timeline(store, "acme", at(9, 0), at(11, 0), agent="101")
    assert [(r.state, r.since.to_pydatetime()) for r in day.itertuples()] == [
        ("available", at(9, 0)), ("ringing", at(9, 10)), ("on_call", at(9, 10, 10)),
        ("available", at(9, 14, 10)), ("ringing", at(9, 14, 30)),
        ("available", at(9, 14, 50)), ("offline", at(9, 40)), ("on_call", at(10, 0, 5)),
        ("offline", at(10, 3, 5))]

    closed = callback_q.closed_callbacks(store, "acme", at(0, 0), at(23, 0))
    assert [(r.item_id, r.called_back_by, r.callback_direction, r.time_to_callback_ms)
            for r in closed.itertuples()] == [("c2", "101", "outbound", 2_736_000)]
    assert callback_q.open_callbacks(store, "acme", at(12, 0)).empty
