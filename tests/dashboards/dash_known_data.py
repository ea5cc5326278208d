"""Known data of the dashboard tests: two tenants, acme and globex, on known days.

Every expected figure of the page tests is worked out in the tests from the values
here, not asked from the warehouse. globex's numbers and names are distinctive
(``+7999...``, agents ``9xx``, DID ``+74990000009``) so a test can check that an acme
page shows none of them.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, time, timedelta

from core.events import Direction, Event, EventType, to_json
from core.records import Cdr, Disposition, cdr_to_json
from core.settings import Settings
from core.timezones import BusinessHours, zone
from warehouse import schema
from warehouse.client import ChdbClient
from warehouse.loader import Loader, Record, routes_for

NOW = datetime.now(UTC).replace(microsecond=0)
MIDNIGHT = datetime.combine(NOW.date(), time.min, tzinfo=UTC)
D1, D2 = "+74950000001", "+74950000002"
GLOBEX_DID = "+74990000009"
KAFKA = {"kafka_topic": "test", "kafka_partition": 0}
RECORDING = "wav/a1.wav"
"""a1's recording: a file the fixture writes under the recordings folder."""
LOST_RECORDING = "wav/a2.wav"
"""a2's recording: named in the CDR, absent on this server."""


def call(tenant: str, call_id: str, started_at: datetime, disposition: Disposition, *,
         direction: str = "inbound", caller: str = "+74951110000", callee: str = "sales",
         did: str | None = D1, agent: str | None = None, ring_s: float = 0,
         talk_s: float = 0, closed: bool = True, answered: bool | None = None,
         mos: float | None = None, loss: float | None = None, jitter: float | None = None,
         sip_code: int | None = None, recording: str | None = None) -> Cdr:
    answered = talk_s > 0 if answered is None else answered
    answered_at = started_at + timedelta(seconds=ring_s) if answered else None
    ended_at = started_at + timedelta(seconds=ring_s + talk_s) if closed else None
    return Cdr(tenant=tenant, call_id=call_id, version=3, direction=direction, caller=caller,
               callee=callee, did=did, agent=agent, started_at=started_at,
               answered_at=answered_at, ended_at=ended_at, ring_ms=int(ring_s * 1000),
               talk_ms=int(talk_s * 1000), disposition=disposition, sip_code=sip_code,
               reason=None, hangup_by="caller" if closed else None, closed=closed,
               recording=recording, mos=mos, packet_loss=loss, jitter_ms=jitter, event_count=3,
               last_event_ts=ended_at or started_at,
               # the group the events named (a DID routed to it): Trends' "by group"
               route_group=callee if direction == "inbound" and callee.isalpha() else None)


def live_at(minutes: int) -> datetime:
    """A start time ``minutes`` ago, but today (so it counts as today's)."""
    return max(NOW - timedelta(minutes=minutes), MIDNIGHT)


def acme_calls() -> list[Cdr]:
    """Five closed calls today (the KPI population) and two live ones."""
    h = MIDNIGHT
    return [
        call("acme", "a1", h + timedelta(minutes=1), Disposition.ANSWERED, caller="+74951110001",
             agent="101", ring_s=5, talk_s=60, mos=4.3, loss=0.0, jitter=2.0, sip_code=200,
             recording=RECORDING),
        call("acme", "a2", h + timedelta(minutes=2), Disposition.ANSWERED, caller="+74951110002",
             agent="102", ring_s=30, talk_s=30, mos=2.9, loss=0.05, jitter=40.0, sip_code=200,
             recording=LOST_RECORDING),
        call("acme", "a3", h + timedelta(minutes=3), Disposition.CANCELLED,
             caller="+74951110003", ring_s=12, sip_code=487),
        call("acme", "a4", h + timedelta(minutes=4), Disposition.NO_ANSWER,
             caller="+74951110004", callee="support", did=D2, ring_s=20, sip_code=480),
        call("acme", "a5", h + timedelta(minutes=5), Disposition.BUSY, direction="outbound",
             caller="101", callee="+74951110005", did=None, ring_s=1, sip_code=486),
        call("acme", "a6", live_at(1), Disposition.IN_PROGRESS, caller="+74951110006",
             closed=False),
        call("acme", "a7", live_at(2), Disposition.IN_PROGRESS, caller="+74951110007",
             agent="103", ring_s=3, closed=False, answered=True),
    ]


def globex_calls() -> list[Cdr]:
    """globex: different numbers, agents and DID; three ringing calls (never on acme's board)."""
    return [
        call("globex", "g1", MIDNIGHT + timedelta(minutes=1), Disposition.ANSWERED,
             caller="+79990000001", callee="gx-sales", did=GLOBEX_DID, agent="901", ring_s=1,
             talk_s=10, mos=1.5, loss=0.2, jitter=90.0),
        *[call("globex", f"g{i}", live_at(1), Disposition.IN_PROGRESS, caller=f"+7999000000{i}",
               callee="gx-sales", did=GLOBEX_DID, closed=False) for i in (2, 3, 4)],
    ]


def a1_events() -> list[Event]:
    """Call a1: offered, ringing on leg a1-b, answered, ended (ended delivered twice)."""
    c = acme_calls()[0]
    base = Event(event_id="a1-e1", type=EventType.CALL_OFFERED, tenant="acme",
                 ts=c.started_at, source="kamailio@test", call_id="a1", leg_id="a1",
                 direction=Direction.INBOUND, caller=c.caller, callee="sales", did=D1)
    ended = replace(base, event_id="a1-e4", type=EventType.CALL_ENDED, ts=c.ended_at,
                    hangup_by="caller")
    return [base,
            replace(base, event_id="a1-e2", type=EventType.CALL_RINGING, leg_id="a1-b",
                    ts=c.started_at + timedelta(seconds=1), callee="101", agent="101"),
            replace(base, event_id="a1-e3", type=EventType.CALL_ANSWERED, leg_id="a1-b",
                    ts=c.answered_at, callee="101", agent="101", sip_code=200),
            ended, ended]


def a2_decision() -> Event:
    """Call a2's caller is in 102's whitelist: straight to 102 instead of the sales group."""
    c = acme_calls()[1]
    return Event(event_id="a2-d1", type=EventType.ROUTE_DECIDED, tenant="acme",
                 ts=c.started_at, source="kamailio@test", call_id="a2", leg_id="a2",
                 direction=Direction.INBOUND, caller=c.caller, callee=D1, did=D1,
                 extra={"rule": "whitelist", "target": "ext:102",
                        "default_target": "group:sales", "decision_us": 37})


def stale(cdrs: list[Cdr]) -> list[Cdr]:
    """Older in-progress revisions of closed calls: FINAL must hide them."""
    return [replace(c, version=1, disposition=Disposition.IN_PROGRESS, closed=False,
                    ended_at=None, answered_at=None) for c in cdrs if c.closed]


# --- agents --------------------------------------------------------------------------------

def agent_states() -> list[dict]:
    """acme: 101 available (open), 102 on_call (open), 103 offline then available (open);
    104 a retracted open segment (deleted: not counted). globex: five available."""
    h = MIDNIGHT
    rows = [("acme", "101", h, "available", None, False),
            ("acme", "102", h, "available", h + timedelta(minutes=2), False),
            ("acme", "102", h + timedelta(minutes=2), "on_call", None, False),
            ("acme", "103", h, "offline", h + timedelta(minutes=1), False),
            ("acme", "103", h + timedelta(minutes=1), "available", None, False),
            ("acme", "104", h, "available", None, True),
            *[("globex", f"9{i:02d}", h, "available", None, False) for i in range(5)]]
    return [{"tenant": t, "agent": a, "since": s, "state": st, "until": u, "version": 2,
             "deleted": d, **KAFKA, "kafka_offset": i}
            for i, (t, a, s, st, u, d) in enumerate(rows)]


AGENT_STATS = [  # tenant, agent, interval offset (min), offered, answered, missed, talk s,
    # wrap-up s, available s, logged-in s, handled, handled talk s
    ("acme", "101", 0, 1, 1, 0, 60, 0, 840, 900, 1, 60),
    ("acme", "101", 15, 1, 0, 1, 0, 0, 900, 900, 0, 0),
    ("acme", "102", 0, 2, 1, 1, 30, 30, 600, 900, 1, 30),
    ("globex", "901", 0, 9, 9, 0, 800, 0, 100, 900, 9, 800),
]


def agent_stats_rows() -> list[dict]:
    rows = []
    for i, (t, a, m, off, ans, mis, talk, wrap, avail, logged, handled, htalk) in \
            enumerate(AGENT_STATS):
        rows.append({
            "tenant": t, "agent": a, "interval_kind": "15m",
            "interval_start": MIDNIGHT + timedelta(minutes=m), "version": 1,
            "logged_in_ms": logged * 1000, "available_ms": avail * 1000, "ringing_ms": 0,
            "talk_ms": talk * 1000, "wrap_up_ms": wrap * 1000, "offered": off,
            "answered": ans, "missed": mis, "handled": handled,
            "handled_talk_ms": htalk * 1000,
            "aht_talk_ms": htalk * 1000 / handled if handled else None,
            "occupancy": None, "complete_until": MIDNIGHT + timedelta(minutes=m + 15),
            **KAFKA, "kafka_offset": i})
    return rows


# --- callbacks -------------------------------------------------------------------------------

def last_weekend_3am() -> datetime:
    """The most recent Saturday or Sunday 03:00 UTC not after NOW (within the last 7 days)."""
    day = MIDNIGHT
    while day.weekday() < 5 or day + timedelta(hours=3) > NOW:
        day -= timedelta(days=1)
    return day + timedelta(hours=3)


def callback_rows() -> list[dict]:
    """acme: two open items (a weekend one, one just after midnight), one closed by 101
    after 2 h. globex: one open item."""
    items = [
        ("acme", "+74952220001", last_weekend_3am(), "open", None, None, None),
        ("acme", "+74952220002", MIDNIGHT + timedelta(minutes=1), "open", None, None, None),
        ("acme", "+74952220003", NOW - timedelta(hours=3), "closed",
         NOW - timedelta(hours=1), "101", 7_200_000),
        ("globex", "+79992220001", MIDNIGHT, "open", None, None, None),
    ]
    return [{"tenant": t, "client": c, "item_id": f"item-{i}", "version": 1, "status": s,
             "opened_at": o, "last_missed_at": o, "attempts": 2, "callback_attempts": 1,
             "closed_at": closed, "closed_by_call_id": "cb" if closed else None,
             "called_back_by": by, "callback_direction": "outbound" if closed else None,
             "time_to_callback_ms": ttc, "deleted": False, **KAFKA, "kafka_offset": i,
             # as streams flags them: business hours 9-18 Mon-Fri in the tenant's zone (UTC)
             **BusinessHours().flags(o, zone("UTC")), "time_zone": "UTC"}
            for i, (t, c, o, s, closed, by, ttc) in enumerate(items)]


# --- loading ---------------------------------------------------------------------------------

def load(store: ChdbClient) -> None:
    """Everything above into a migrated store (CDRs and events through the real loader)."""
    settings = Settings()
    cdrs = acme_calls() + globex_calls()
    records = [Record(settings.topic_cdrs, 0, i, cdr_to_json(c))
               for i, c in enumerate([*stale(cdrs), *cdrs])]
    events = [Record(settings.topic_call_events, 0, i, to_json(e))
              for i, e in enumerate([*a1_events(), a2_decision()])]
    loader = Loader(store, routes_for(settings), lambda dead: None)
    loader.load(records)  # the loader takes one topic-partition at a time
    loader.load(events)
    store.insert_rows(schema.AGENT_STATES, agent_states())
    store.insert_rows(schema.AGENT_STATS, agent_stats_rows())
    store.insert_rows(schema.CALLBACKS, callback_rows())
