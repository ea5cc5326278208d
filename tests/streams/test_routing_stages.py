"""The routing stages in Faust's test context: agent states and CRM lookups in, facts out."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from faust_harness import run, streams_on_channels

from connectors.base import Contact
from connectors.contacts import contact_record
from core.agent_records import (
    AgentStateChange,
    AgentStats,
    AgentStatus,
    IntervalKind,
    record_to_json,
)
from core.routing import FactKind, fact_from_json
from core.settings import load
from streams.agents.routing import heartbeat_fact
from streams.app import Streams

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def streams(tmp_path: Path) -> Streams:
    return streams_on_channels(load(environ={}, data_dir=tmp_path))


def state(since_s: int, status: AgentStatus, version: int, until_s: int | None = None
          ) -> tuple[bytes, bytes]:
    change = AgentStateChange("acme", "101", datetime.fromtimestamp(since_s, UTC), status,
                              None if until_s is None else datetime.fromtimestamp(until_s, UTC),
                              version)
    return b"acme:101", record_to_json(change)


def test_agent_states_become_one_fact_per_change(streams: Streams) -> None:
    out = run(streams, "routing_agents", [
        state(100, AgentStatus.AVAILABLE, 1),
        state(100, AgentStatus.AVAILABLE, 2, until_s=130),  # closed: its successor follows
        state(130, AgentStatus.RINGING, 2),
        state(130, AgentStatus.RINGING, 2),                 # redelivered: nothing new
    ])
    facts = [(key, fact_from_json(raw)) for key, raw in out["routing"]]
    assert [(k, f.value, int(f.since.timestamp()), f.version) for k, f in facts] == [
        (b"agent:acme:101", "available", 100, 1), (b"agent:acme:101", "ringing", 130, 2)]


def lookup(crm: str, ext: str | None, ts: float) -> tuple[bytes, bytes]:
    contact = Contact(crm=crm, id="7", name="Client", entity_type="contact",
                      responsible_user_id="u1") if ext else None
    return contact_record("acme", crm, "+79160000001", contact, ext, ts)


def test_a_manager_changed_in_the_crm_is_a_new_fact(streams: Streams) -> None:
    lookups = [lookup("amocrm", "101", 1.0), lookup("amocrm", "101", 2.0),  # same manager
               lookup("amocrm", "103", 3.0), lookup("bitrix24", None, 4.0)]
    routed = run(streams, "routing_contacts_router", lookups)["contact_lookups"]
    assert {key for key, _ in routed} == {b"acme:+79160000001"}
    out = run(streams, "routing_contacts", routed)
    facts = [fact_from_json(raw) for _, raw in out["routing"]]
    assert [(f.kind, f.subject, f.value, f.source) for f in facts] == [
        (FactKind.MANAGER, "+79160000001", "101", "amocrm"),
        (FactKind.MANAGER, "+79160000001", "103", "amocrm")]
    assert {key for key, _ in out["routing"]} == {b"manager:acme:+79160000001"}


def test_a_contact_it_cannot_read_is_skipped_by_the_router_and_dead_lettered_after(
        streams: Streams) -> None:
    bad = [(b"acme:x:amocrm", b'{"tenant": 1}'), (b"acme:x:amocrm", b"{not json")]
    assert run(streams, "routing_contacts_router", bad)["contact_lookups"] == []
    out = run(streams, "routing_contacts", bad[:1])
    assert out["routing"] == [] and len(out["dead_letter"]) == 1
    assert json.loads(out["dead_letter"][0][1])["stage"] == "routing-contacts"


def test_heartbeat_is_a_fact_of_its_own() -> None:
    key, raw = heartbeat_fact(T0)
    assert (key, fact_from_json(raw).since) == (b"heartbeat", T0)


def day_stats(day_start: datetime, answered: int, version: int,
              kind: IntervalKind = IntervalKind.DAY) -> tuple[bytes, bytes]:
    row = AgentStats("acme", "101", kind, day_start, version, 0, 0, 0, 0, 0, answered,
                     answered, 0, answered, 0, None, None, day_start)
    return b"acme:101", record_to_json(row)


def test_calls_today_come_from_the_day_rows_with_the_tenants_day_end(tmp_path: Path) -> None:
    """Moscow's day starts at 21:00 UTC and ends 24 h later; a quarter row or a repeated
    count sends nothing."""
    settings = load(environ={"TAWAG_DEFAULT_TIME_ZONE": "Europe/Moscow"}, data_dir=tmp_path)
    streams = streams_on_channels(settings)
    start = datetime(2026, 11, 30, 21, 0, tzinfo=UTC)
    out = run(streams, "routing_calls", [
        day_stats(start, 1, 1), day_stats(start, 1, 2),
        day_stats(start, 2, 3, IntervalKind.QUARTER), day_stats(start, 2, 4)])
    facts = [(key, fact_from_json(raw)) for key, raw in out["routing"]]
    assert [(k, f.kind, f.value, f.since, f.until) for k, f in facts] == [
        (b"calls:acme:101", FactKind.CALLS, n, start, datetime(2026, 12, 1, 21, tzinfo=UTC))
        for n in ("1", "2")]
