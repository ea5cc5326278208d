"""Retention TTLs on chdb: set when > 0, removed at 0, idempotent, and they really delete.

The statements are built by a pure function (checked without a store), then applied to a
migrated chdb store, and by the warehouse service itself at start-up (embedded, and server
mode with chdb standing in for the server). The deletion test puts rows of
every retained table on both sides of the cut-off, forces the merge that applies TTLs
(``OPTIMIZE ... FINAL``) and checks that exactly the old ones are gone.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from core.settings import Settings, load
from warehouse import schema, service
from warehouse.client import ChdbClient
from warehouse.retention import (
    MAX_RETENTION_DAYS,
    apply_retention,
    current_ttls,
    retention_statements,
    ttl_expression,
    validated_days,
)

DEAD_KAFKA = "127.0.0.1:24126"  # nothing listens: start-up must not need Kafka
KEEP_FOREVER = Settings()
RETAINED = (schema.CDRS, schema.AGENT_STATS, schema.CALLBACKS, schema.CALL_EVENTS)
AGE_COLUMN = {schema.CDRS: "last_event_ts", schema.AGENT_STATS: "interval_start",
              schema.CALLBACKS: "last_missed_at", schema.CALL_EVENTS: "ts"}


def retention(cdr_days: int, event_days: int) -> Settings:
    return replace(KEEP_FOREVER, cdr_retention_days=cdr_days,
                   call_events_retention_days=event_days)


# --- the pure part ------------------------------------------------------------------------


def test_statements_set_each_tables_ttl_from_its_setting():
    statements = retention_statements(retention(30, 7), {})
    assert statements == [
        "ALTER TABLE tawag.cdrs MODIFY TTL toDateTime(last_event_ts) + toIntervalDay(30)",
        "ALTER TABLE tawag.agent_stats MODIFY TTL "
        "toDateTime(interval_start) + toIntervalDay(30)",
        "ALTER TABLE tawag.callbacks MODIFY TTL "
        "toDateTime(last_missed_at) + toIntervalDay(30)",
        "ALTER TABLE tawag.call_events MODIFY TTL toDateTime(ts) + toIntervalDay(7)",
    ]


def test_nothing_to_do_when_the_ttls_are_in_place_or_absent_as_wanted():
    in_place = {table: ttl_expression(AGE_COLUMN[table], 30) for table in RETAINED}
    in_place[schema.CALL_EVENTS] = None
    assert retention_statements(retention(30, 0), in_place) == []
    assert retention_statements(KEEP_FOREVER, {t: None for t in RETAINED}) == []


def test_zero_removes_only_an_existing_ttl_and_a_changed_value_modifies_it():
    current = {schema.CDRS: ttl_expression("last_event_ts", 30),
               schema.CALL_EVENTS: ttl_expression("ts", 7)}
    assert retention_statements(retention(0, 14), current) == [
        "ALTER TABLE tawag.cdrs REMOVE TTL",
        "ALTER TABLE tawag.call_events MODIFY TTL toDateTime(ts) + toIntervalDay(14)",
    ]


@pytest.mark.parametrize("bad", [-1, MAX_RETENTION_DAYS + 1, True, 7.0, "7", "7 DAY); DROP",
                                 None])
def test_anything_but_a_day_count_in_range_is_refused_before_any_sql(bad):
    with pytest.raises(ValueError, match="cdr_retention_days"):
        retention_statements(retention(bad, 0), {})  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        validated_days(bad, "x")


# --- on chdb ------------------------------------------------------------------------------


def test_apply_sets_then_removes_the_ttls_and_a_rerun_alters_nothing(store: ChdbClient):
    assert apply_retention(store, KEEP_FOREVER) == []  # a new store has no TTL
    assert len(apply_retention(store, retention(30, 7))) == 4
    ttls = current_ttls(store)
    assert {t: ttls[t] for t in RETAINED} == {
        **{t: ttl_expression(AGE_COLUMN[t], 30) for t in RETAINED},
        schema.CALL_EVENTS: ttl_expression("ts", 7)}
    assert ttls[schema.AGENT_STATES] is None and ttls[schema.SCHEMA_MIGRATIONS] is None
    assert apply_retention(store, retention(30, 7)) == []  # what the next start-up does

    assert apply_retention(store, retention(0, 7)) == [
        "ALTER TABLE tawag.cdrs REMOVE TTL", "ALTER TABLE tawag.agent_stats REMOVE TTL",
        "ALTER TABLE tawag.callbacks REMOVE TTL"]
    assert current_ttls(store)[schema.CDRS] is None
    assert current_ttls(store)[schema.CALL_EVENTS] == ttl_expression("ts", 7)
    assert apply_retention(store, retention(0, 7)) == []


def insert_aged_rows(store: ChdbClient, name: str, at: datetime) -> None:
    """One row in each retained table whose age column is ``at`` (other columns default)."""
    store.insert_rows(schema.CDRS, [{"tenant": "acme", "call_id": name, "version": 1,
                                     "started_at": at, "last_event_ts": at}])
    store.insert_rows(schema.AGENT_STATS, [{"tenant": "acme", "agent": name,
                                            "interval_kind": "1 hour", "interval_start": at,
                                            "version": 1, "complete_until": at}])
    store.insert_rows(schema.CALLBACKS, [{"tenant": "acme", "client": name, "item_id": name,
                                          "version": 1, "opened_at": at,
                                          "last_missed_at": at}])
    store.insert_rows(schema.CALL_EVENTS, [{"tenant": "acme", "ts": at, "call_id": name,
                                            "event_id": name}])


KEY_COLUMN = {schema.CDRS: "call_id", schema.AGENT_STATS: "agent",
              schema.CALLBACKS: "client", schema.CALL_EVENTS: "call_id"}


def names_left(store: ChdbClient) -> dict[str, list[str]]:
    """Force the merges that apply TTLs, then each table's remaining row names."""
    left = {}
    for table in RETAINED:
        store.command(f"OPTIMIZE TABLE {table} FINAL")
        rows = store.query(f"SELECT {KEY_COLUMN[table]} AS name FROM {table} ORDER BY name")
        left[table] = [r["name"] for r in rows]
    return left


def test_rows_older_than_the_retention_go_at_the_merge_and_newer_rows_stay(store: ChdbClient):
    now = datetime.now(UTC)
    # cdrs & co. keep 30 days, raw events 7: "mid" (20 days old) is old only for events
    for name, age in (("old", timedelta(days=45)), ("mid", timedelta(days=20)),
                      ("new", timedelta(hours=1))):
        insert_aged_rows(store, name, now - age)
    assert names_left(store) == {t: ["mid", "new", "old"] for t in RETAINED}  # no TTL yet

    apply_retention(store, retention(30, 7))  # an operator turns retention on
    expected = {t: ["mid", "new"] for t in RETAINED}
    expected[schema.CALL_EVENTS] = ["new"]
    assert names_left(store) == expected

    insert_aged_rows(store, "late", now - timedelta(days=60))  # a late load of old data
    assert names_left(store) == expected


def test_keep_forever_deletes_nothing_even_after_a_ttl_was_removed(store: ChdbClient):
    apply_retention(store, retention(30, 30))
    apply_retention(store, KEEP_FOREVER)
    insert_aged_rows(store, "ancient", datetime(2001, 1, 1, tzinfo=UTC))
    assert names_left(store) == {t: ["ancient"] for t in RETAINED}


# --- at warehouse start-up ----------------------------------------------------------------


def run_once(settings: Settings) -> None:
    """Start the warehouse service in-process (no loader), wait until ready, stop it."""
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(target=service.run, args=(settings, stop),
                              kwargs={"load": False, "ready": ready})
    thread.start()
    try:
        assert ready.wait(30), "the warehouse did not get ready"
    finally:
        stop.set()
        thread.join(60)
    assert not thread.is_alive()


def statements_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "warehouse.retention"]


def test_embedded_start_up_applies_the_ttls_once(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="warehouse.retention")
    settings = replace(load({}, data_dir=tmp_path, warehouse_http_port=24124,
                            kafka_bootstrap=DEAD_KAFKA),
                       cdr_retention_days=30, call_events_retention_days=7)
    run_once(settings)
    assert len(statements_logged(caplog)) == 4
    caplog.clear()
    run_once(settings)  # a restart: the TTLs are in place, nothing is altered
    assert statements_logged(caplog) == []
    store = ChdbClient(settings.chdb_path)
    try:
        assert current_ttls(store)[schema.CDRS] == ttl_expression("last_event_ts", 30)
    finally:
        store.close()


def test_server_mode_start_up_applies_the_ttls_through_its_client(tmp_path, monkeypatch):
    """Server mode prepares the server it writes to; chdb stands in for clickhouse-driver."""
    clients: list[ChdbClient] = []

    def driver(settings: Settings) -> ChdbClient:
        clients.append(ChdbClient(tmp_path / "server"))
        return clients[-1]

    monkeypatch.setattr(service, "DriverClient", driver)
    settings = replace(load({}, data_dir=tmp_path), warehouse_mode="server",
                       cdr_retention_days=0, call_events_retention_days=3)
    run_once(settings)
    store = ChdbClient(tmp_path / "server")
    try:
        ttls = current_ttls(store)
        assert ttls[schema.CALL_EVENTS] == ttl_expression("ts", 3)
        assert ttls[schema.CDRS] is None
    finally:
        store.close()
