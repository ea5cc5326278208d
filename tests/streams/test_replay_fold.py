"""tawag.replay's emulation of the agents: same folds, same emission order, plain dicts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from builders import call_events

from core.events import Direction, Event, EventType, to_json
from core.records import cdr_from_json
from streams.folds.cdr import fold, to_cdr
from tawag.replay import TableDiff, compare_table, fold_records
from warehouse import schema
from warehouse.loader import Record

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
CLIENT = "+74951234567"


def ev(call: str, kind: EventType, s: float, **fields: Any) -> Event:
    return call_events(call, t0=T0, unit="s", source="kamailio@test", caller=CLIENT,
                       callee="102", direction=Direction.INBOUND, did="+74957654321",
                       leg_id=call)(kind, s, **fields)


MISSED = [ev("m1", EventType.CALL_OFFERED, 0), ev("m1", EventType.CALL_RINGING, 0.1),
          ev("m1", EventType.CALL_FAILED, 20, sip_code=408)]
ANSWERED = [ev("a1", EventType.CALL_OFFERED, 60), ev("a1", EventType.CALL_RINGING, 60.1),
            ev("a1", EventType.CALL_ANSWERED, 63, agent="102"),
            ev("a1", EventType.CALL_ENDED, 90, duration_ms=27_000, hangup_by="102")]


def records(events: list[Event]) -> list[Record]:
    return [Record("tawag.call-events", 0, i, to_json(e)) for i, e in enumerate(events)]


def test_the_last_revision_of_each_call_is_the_fold_of_its_events():
    out = fold_records([*records(MISSED + ANSWERED),
                        Record("tawag.call-events", 0, 99, b"not json")]).out
    last = {}
    for raw in out.cdrs:
        cdr = cdr_from_json(raw)
        last[cdr.call_id] = cdr
    assert last == {"m1": to_cdr(fold("m1", MISSED)), "a1": to_cdr(fold("a1", ANSWERED))}
    assert [cdr_from_json(r).version for r in out.cdrs] == [1, 2, 3, 1, 2, 3, 4]
    assert out.dead == 1


def test_the_missed_call_opens_a_callback_that_the_answered_one_closes():
    import json

    out = fold_records(records(MISSED + ANSWERED)).out
    items = [json.loads(raw) for raw in out.callbacks]
    assert items[0]["status"] == "open" and items[0]["item_id"] == "m1"
    assert items[-1]["status"] == "closed" and items[-1]["closed_by_call_id"] == "a1"
    assert out.agent_stats and out.agent_states  # extension 102 rang and talked


class Rows:
    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    def query(self, sql: str, params: Any = None) -> list[dict[str, Any]]:
        return self.rows


def test_compare_names_the_first_differing_row_and_spots_version_only_differences():
    a = [{"call_id": "x", "version": 3, "talk_ms": 1}, {"call_id": "y", "version": 1, "talk_ms": 2}]
    same = compare_table(schema.CDRS, Rows(a), Rows([dict(r) for r in a]))
    assert same == TableDiff(schema.CDRS, 2, 2, True)
    bumped = [a[0], {**a[1], "version": 2}]
    versions = compare_table(schema.CDRS, Rows(a), Rows(bumped))
    assert (versions.equal, versions.version_only) == (False, True)
    changed = [a[0], {**a[1], "talk_ms": 5}]
    diff = compare_table(schema.CDRS, Rows(a), Rows(changed))
    assert (diff.equal, diff.version_only, diff.first_replay) == (False, False, changed[1])
    missing = compare_table(schema.CDRS, Rows(a), Rows(a[:1]))
    assert (missing.first_live, missing.first_replay, missing.replay_rows) == (a[1], None, 1)
