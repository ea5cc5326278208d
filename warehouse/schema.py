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
    "CDR_DAYS_LOADED",
    "CDR_ROLLUP",
    "CDR_ROLLUP_DAYS",
    "CDR_ROLLUP_TALK",
    "CDR_ROLLUP_CALLERS",
    "CDR_DAYS_LOADED_MV",
    "ROLLUP_TABLES",
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

CDR_DAYS_LOADED = f"{DATABASE}.cdr_days_loaded"
"""Per (tenant, call_day): the newest ``loaded_at`` written into cdrs (a view keeps it)."""

CDR_ROLLUP = f"{DATABASE}.cdr_rollup"
"""The KPI catalogue's additive parts per 15-minute slot, rebuilt per day (migration 0010)."""

CDR_ROLLUP_DAYS = f"{DATABASE}.cdr_rollup_days"
"""One marker per rebuilt (tenant, call_day): the generation its rollup rows hold."""

CDR_ROLLUP_TALK = f"{DATABASE}.cdr_rollup_talk"
"""Talk ms per 15-minute slot it happened in (a call's talk cut at slot bounds; 0011)."""

CDR_ROLLUP_CALLERS = f"{DATABASE}.cdr_rollup_callers"
"""Inbound contacts per slot, DID and caller, with first/last start (contact KPIs; 0011)."""

CDR_DAYS_LOADED_MV = f"{DATABASE}.cdr_days_loaded_mv"
"""The materialized view on cdrs inserts that keeps :data:`CDR_DAYS_LOADED`."""

ROLLUP_TABLES = (CDR_DAYS_LOADED, CDR_ROLLUP, CDR_ROLLUP_DAYS, CDR_ROLLUP_TALK,
                 CDR_ROLLUP_CALLERS)
"""Derived from cdrs; read by the KPI queries, under the same row policies."""

TABLES = (SCHEMA_MIGRATIONS, CALL_EVENTS, CDRS, AGENT_STATES, AGENT_STATS, CALLBACKS, TENANTS,
          CDR_DAYS_LOADED_MV, *ROLLUP_TABLES)
