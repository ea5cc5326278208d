"""The call-assembly agent in Faust's test context: no broker, in-memory store.

The app is built exactly as in production except that the two output topics are
in-memory channels, so the test reads back the very bytes the agent sent (keys,
JSON values) instead of patching ``Topic.send``.
"""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import faust_harness
import pytest
from builders import call_events
from faust_harness import Sent, recover, streams_on_channels

from core.events import Direction, Event, EventType, to_json
from core.records import Disposition, cdr_from_json
from core.settings import load
from streams.app import Streams
from streams.folds.cdr import CallState, fold, to_cdr

CALL = "7-4242@127.0.0.1"
KEY = CALL.encode()
T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


def _at(second: int) -> datetime:
    return T0 + timedelta(seconds=second)


ev = call_events(CALL, t0=T0, unit="s", caller="+74951234567", callee="101",
                 direction=Direction.INBOUND)


OFFERED = ev(EventType.CALL_OFFERED, 0)
RINGING = ev(EventType.CALL_RINGING, 1, sip_code=180)
ANSWERED = ev(EventType.CALL_ANSWERED, 4, sip_code=200, agent="101")
ENDED = ev(EventType.CALL_ENDED, 64, hangup_by="+74951234567", duration_ms=60_000)


@pytest.fixture
def streams(tmp_path: Path) -> Streams:
    return streams_on_channels(load(environ={}, data_dir=tmp_path))


def run(streams: Streams, messages: list[tuple[bytes | None, Any]]) -> dict[str, Sent]:
    """Put each (key, value) through the call-assembly agent; what it sent, per topic."""
    return faust_harness.run(streams, "cdr", messages)


def test_events_in_cdr_revisions_out(streams: Streams) -> None:
    messages = [OFFERED, RINGING, ANSWERED, ANSWERED, ENDED]  # one repeated delivery
    out = run(streams, [(KEY, to_json(e)) for e in messages])
    assert out["dead_letter"] == []
    assert [key for key, _ in out["cdrs"]] == [KEY] * 5
    cdrs = [cdr_from_json(value) for _, value in out["cdrs"]]
    # the repeat sends the current revision again, unchanged (see test_redelivery.py)
    assert [c.version for c in cdrs] == [1, 2, 3, 3, 4]
    assert cdrs[3] == cdrs[2]
    assert [c.disposition for c in cdrs] == [Disposition.IN_PROGRESS] * 4 + [Disposition.ANSWERED]
    final = cdrs[-1]
    assert (final.closed, final.agent, final.ring_ms, final.talk_ms) == (True, "101", 4_000, 60_000)
    assert final == to_cdr(fold(CALL, messages))
    assert len(streams.tables.calls[CALL]["events"]) == 4


def test_late_event_after_close_revises_the_same_call(streams: Streams) -> None:
    out = run(streams, [(KEY, to_json(e)) for e in (OFFERED, ANSWERED, ENDED, RINGING)])
    cdrs = [cdr_from_json(value) for _, value in out["cdrs"]]
    assert {c.call_id for c in cdrs} == {CALL}
    assert [(c.version, c.closed) for c in cdrs] == [(1, False), (2, False), (3, True), (4, True)]
    assert cdrs[3].disposition is cdrs[2].disposition is Disposition.ANSWERED


def test_cdr_waits_for_the_offer_when_it_arrives_late(streams: Streams) -> None:
    out = run(streams, [(KEY, to_json(ANSWERED)), (KEY, to_json(OFFERED))])
    cdrs = [cdr_from_json(value) for _, value in out["cdrs"]]
    assert [(c.version, c.started_at, c.answered_at) for c in cdrs] == [(2, _at(0), _at(4))]
    assert out["dead_letter"] == []


def test_malformed_message_is_dead_lettered_and_the_next_one_still_folds(
    streams: Streams,
) -> None:
    bad_schema = json.dumps({"schema": 1, "type": "call.offered", "tenant": "acme"}).encode()
    not_utf8 = b"\xff\xfe garbage"
    out = run(streams, [
        (b"k1", b"{not json"),
        (b"k2", bad_schema),
        (b"k3", not_utf8),
        (KEY, to_json(OFFERED)),
    ])
    dead = [json.loads(value) for _, value in out["dead_letter"]]
    assert [key for key, _ in out["dead_letter"]] == [b"k1", b"k2", b"k3"]
    assert [d["source_topic"] for d in dead] == ["tawag.call-events"] * 3
    assert [d["offset"] for d in dead] == [0, 1, 2]
    assert dead[0]["error"].startswith("not JSON") and dead[0]["value"] == "{not json"
    assert "missing fields: event_id, source, ts" in dead[1]["error"]
    assert dead[1]["value"] == bad_schema.decode()
    assert dead[2]["value_encoding"] == "base64"
    assert base64.b64decode(dead[2]["value"]) == not_utf8
    assert streams.tables.dead_letters["tawag.call-events:0"] == 3
    assert [cdr_from_json(v).version for _, v in out["cdrs"]] == [1]


def test_agent_events_and_tombstones(streams: Streams) -> None:
    registered = Event(event_id="reg-1", type=EventType.AGENT_REGISTERED, tenant="acme",
                       ts=_at(0), source="kamailio@127.0.0.1", agent="101")
    out = run(streams, [(b"acme:101", to_json(registered)), (KEY, None)])
    assert out["cdrs"] == []
    dead = [json.loads(value) for _, value in out["dead_letter"]]
    assert len(dead) == 1 and "expected JSON bytes" in dead[0]["error"]
    assert CALL not in streams.tables.calls


def test_table_rows_survive_a_changelog_recovery(streams: Streams) -> None:
    """The memory store is rebuilt from the changelog: what a row writes must read back."""
    run(streams, [(KEY, to_json(e)) for e in (OFFERED, ANSWERED, ENDED)] + [(b"x", b"{")])
    for table in (streams.tables.calls, streams.tables.dead_letters):
        rows = dict(table)
        assert rows
        table.data.clear()
        asyncio.run(recover(table, rows))
        assert dict(table) == rows
    assert to_cdr(CallState.from_dict(streams.tables.calls[CALL])).version == 3

