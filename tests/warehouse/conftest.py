"""Shared fixtures of the warehouse tests: a migrated chdb store and record factories.

chdb serves one data path per process at a time, so every fixture that opens a store
closes it again before the next test opens another.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from builders import event

from core.events import Direction, Event, EventType, to_json
from core.records import Cdr, Disposition, cdr_to_json
from core.settings import Settings
from warehouse.client import ChdbClient
from warehouse.loader import Record
from warehouse.migrate import migrate

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
SETTINGS = Settings()


@pytest.fixture
def store(tmp_path) -> Iterator[ChdbClient]:
    client = ChdbClient(tmp_path / "chdb")
    migrate(client)
    try:
        yield client
    finally:
        client.close()


def make_cdr(call_id: str = "c1", **changes: Any) -> Cdr:
    base = Cdr(
        tenant="acme", call_id=call_id, version=1, direction="inbound",
        caller="+74951234567", callee="101", did="+74957654321", agent=None,
        started_at=T0, answered_at=None, ended_at=None, ring_ms=0, talk_ms=0,
        disposition=Disposition.IN_PROGRESS, sip_code=None, reason=None, hangup_by=None,
        closed=False, recording=None, mos=None, packet_loss=None, jitter_ms=None,
        event_count=1, last_event_ts=T0)
    return replace(base, **changes)


def make_event(event_id: str = "e1", **changes: Any) -> Event:
    fields: dict[str, Any] = {"type": EventType.CALL_OFFERED, "ts": T0, "call_id": "c1",
                              "leg_id": "c1", "direction": Direction.INBOUND,
                              "caller": "+74951234567", "callee": "101"} | changes
    return event(fields.pop("type"), fields.pop("ts"), event_id=event_id, **fields)


def event_records(events: list[Event], first_offset: int = 0,
                  partition: int = 0) -> list[Record]:
    return [Record(SETTINGS.topic_call_events, partition, first_offset + i, to_json(ev))
            for i, ev in enumerate(events)]


def cdr_records(cdrs: list[Cdr], first_offset: int = 0, partition: int = 0) -> list[Record]:
    return [Record(SETTINGS.topic_cdrs, partition, first_offset + i, cdr_to_json(c))
            for i, c in enumerate(cdrs)]
