"""Golden inputs for the agent fold: what it published before its row became bounded.

``golden_events(seed)`` is a deterministic delivery of 2.5 days of agent 101's traffic
(registrations refreshed and lapsing, inbound DID calls, internal calls both ways,
outbound calls; answered, answered by a colleague, busy, cancelled, lost answers), each
event delayed by under two minutes of event time (inside the lateness horizon), no
repeats. ``digests(events, config)`` folds them through the agent's ``fold_into`` as the
worker does (JSON on the wire) and keeps a short digest of what each event published.

The stored digests (``golden/agent_fold_<name>.json``) were written by the unbounded
fold (commit 9313dba, which kept every event of two days in the row) with::

    python -m tests.streams.agent_golden --write

so the bounded fold is checked against the records the old one published.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from core.agent_records import record_to_json
from core.events import Direction, Event, EventType, from_json, to_json
from streams.agents.agent_stats import fold_into
from streams.folds.agent_state import AgentConfig

GOLDEN = Path(__file__).parent / "golden"
T0 = datetime(2026, 11, 24, 6, 0, tzinfo=UTC)
KEY = "acme:101"
DID = "+74957654321"
CONFIGS = {"default": AgentConfig(), "wrap_up": AgentConfig(wrap_up_ms=20_000)}


def _event(eid: str, kind: EventType, ts: datetime, **fields: Any) -> Event:
    return Event(event_id=eid, type=kind, tenant="acme", ts=ts, source="golden", **fields)


def _registrations(rnd: random.Random, hours: int) -> list[Event]:
    out = []
    at = T0
    while at < T0 + timedelta(hours=hours):
        if rnd.random() < 0.08:
            out.append(_event(f"u@{at.isoformat()}", EventType.AGENT_UNREGISTERED, at,
                              agent="101"))
            at += timedelta(minutes=rnd.randrange(20, 90))
            continue
        expires = rnd.choice([3600, 3600, 1800, 600])
        out.append(_event(f"r@{at.isoformat()}", EventType.AGENT_REGISTERED, at, agent="101",
                          extra={"expires": expires}))
        at += timedelta(seconds=rnd.randrange(300, 2400))
    return out


def _call(rnd: random.Random, n: int, start: datetime) -> list[Event]:
    shape = rnd.choice(["inbound", "inbound", "inbound", "internal_in", "internal_out",
                        "outbound"])
    parties: dict[str, Any] = {
        "inbound": {"caller": f"+7495{rnd.randrange(10**7):07d}", "callee": "101", "did": DID,
                    "direction": Direction.INBOUND},
        "internal_in": {"caller": "102", "callee": "101", "direction": Direction.INTERNAL},
        "internal_out": {"caller": "101", "callee": "103", "direction": Direction.INTERNAL},
        "outbound": {"caller": "101", "callee": "+74951112233", "direction": Direction.OUTBOUND},
    }[shape]
    cid = f"g{n}@edge"
    ring = timedelta(milliseconds=rnd.randrange(500, 25_000))
    talk = timedelta(milliseconds=rnd.randrange(1_000, 600_000))
    callee = parties["callee"]

    def ev(kind: EventType, ts: datetime, **more: Any) -> Event:
        return _event(f"{cid}/{kind.value}", kind, ts, call_id=cid, leg_id=cid,
                      **(parties | more))

    out = [ev(EventType.CALL_OFFERED, start),
           ev(EventType.CALL_RINGING, start + timedelta(milliseconds=40))]
    outcome = rnd.random()
    if outcome < 0.15:
        return [*out, ev(EventType.CALL_FAILED, start + ring, sip_code=486)]
    if outcome < 0.3:
        return [*out, ev(EventType.CALL_CANCELLED, start + ring, sip_code=487)]
    answerer = "102" if shape == "inbound" and rnd.random() < 0.2 else callee
    end = ev(EventType.CALL_ENDED, start + ring + talk, agent=answerer,
             duration_ms=talk // timedelta(milliseconds=1))
    if outcome < 0.4:  # the answer was lost: rebuilt from the BYE's duration
        return [*out, end]
    return [*out, ev(EventType.CALL_ANSWERED, start + ring, agent=answerer), end]


def golden_events(seed: int, hours: int = 60, calls: int = 300) -> list[Event]:
    """Agent 101's events over ``hours``, each delayed by under 2 minutes, in arrival order."""
    rnd = random.Random(seed)
    events = _registrations(rnd, hours)
    for n in range(calls):
        start = T0 + timedelta(seconds=rnd.randrange(hours * 3600),
                               milliseconds=rnd.randrange(1000))
        events += _call(rnd, n, start)
    delayed = [(ev.ts + timedelta(milliseconds=rnd.randrange(120_000)), ev.event_id, ev)
               for ev in events]
    return [ev for _, _, ev in sorted(delayed, key=lambda x: (x[0], x[1]))]


def digests(events: list[Event], config: AgentConfig) -> list[str]:
    """A short digest of the records each event made the agent fold publish for 101."""
    table: dict[str, Any] = {}
    out = []
    for event in events:
        wire = from_json(to_json(event))
        changes, stats = fold_into(table, KEY, wire, config)
        blob = b"\n".join([record_to_json(r) for r in changes] + [b"--"]
                          + [record_to_json(r) for r in stats])
        out.append(hashlib.sha256(blob).hexdigest()[:16])
    return out


def golden_file(name: str) -> Path:
    return GOLDEN / f"agent_fold_{name}.json"


def main() -> None:
    if "--write" not in sys.argv:
        raise SystemExit("usage: python -m tests.streams.agent_golden --write")
    for name, config in CONFIGS.items():
        data = {str(seed): digests(golden_events(seed), config) for seed in (1, 2)}
        golden_file(name).write_text(json.dumps(data, indent=0) + "\n")


if __name__ == "__main__":
    main()
