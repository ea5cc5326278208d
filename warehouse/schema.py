"""Names of the warehouse's database and tables: the only identifiers put into SQL text.

Every table lives in the ``tawag`` database and is always named qualified, so the same
SQL runs on chdb, through the HTTP interface and on a ClickHouse server whatever the
connection's current database is. The DDL itself is in ``warehouse/migrations/``.
"""

from __future__ import annotations

__all__ = [
    "DATABASE",
    "CALL_EVENTS",
    "CDRS",
    "SCHEMA_MIGRATIONS",
    "AGENT_STATES",
    "AGENT_STATS",
    "CALLBACKS",
    "TENANTS",
    "TABLES",
]

DATABASE = "tawag"

CALL_EVENTS = f"{DATABASE}.call_events"
"""Raw call events, one row per Kafka message (append-only, kept for replay and audit)."""

CDRS = f"{DATABASE}.cdrs"
"""CDR revisions; ReplacingMergeTree(version) keeps the highest (read with FINAL)."""

SCHEMA_MIGRATIONS = f"{DATABASE}.schema_migrations"
"""Which migration files have been applied, with their checksums."""

AGENT_STATES = f"{DATABASE}.agent_states"
"""Agent state segments; ReplacingMergeTree(version), skip ``deleted`` rows after FINAL."""

AGENT_STATS = f"{DATABASE}.agent_stats"
"""Per-agent statistics per interval (15m, hour, day); ReplacingMergeTree(version)."""

CALLBACKS = f"{DATABASE}.callbacks"
"""Missed-call callback items; ReplacingMergeTree(version), skip ``deleted`` after FINAL."""

TENANTS = f"{DATABASE}.tenants"
"""Each tenant's IANA time zone and trunk, from provisioning (loaded at every start)."""

TABLES = (SCHEMA_MIGRATIONS, CALL_EVENTS, CDRS, AGENT_STATES, AGENT_STATS, CALLBACKS, TENANTS)
