"""Each warehouse table holds exactly its record's fields (plus where the row came from),
so a new field is one edit in the record's declaration plus one migration: this test
names whichever of the two is missing."""

from __future__ import annotations

from dataclasses import fields

import pytest

from core.agent_records import AgentStateChange, AgentStats, CallbackItem
from core.events import Event
from core.records import Cdr
from warehouse import schema

KAFKA = {"kafka_topic", "kafka_partition", "kafka_offset"}
"""Where each row came from: written by the loader for idempotent retries."""
LOADED = {"loaded_at"}
"""Filled by the table's DEFAULT."""
KEYS = {"call_day"}
"""``cdrs``' day in the sort key (migration 0009): filled by its DEFAULT from started_at."""
RAW = {"raw"}
"""``call_events`` also keeps each message verbatim (audit, replay)."""


@pytest.mark.parametrize(("table", "record"), [
    (schema.CDRS, Cdr),
    (schema.AGENT_STATES, AgentStateChange),
    (schema.AGENT_STATS, AgentStats),
    (schema.CALLBACKS, CallbackItem),
    (schema.CALL_EVENTS, Event),
])
def test_a_table_has_a_column_for_every_field_of_its_record_and_no_other(store, table,
                                                                          record) -> None:
    database, name = table.split(".")
    columns = {row["name"] for row in store.query(
        "SELECT name FROM system.columns WHERE database = {d:String} AND table = {t:String}",
        {"d": database, "t": name})}
    own = columns - KAFKA - LOADED - KEYS - (RAW if record is Event else set())
    declared = {f.name for f in fields(record)}
    assert (sorted(declared - own), sorted(own - declared)) == ([], [])
