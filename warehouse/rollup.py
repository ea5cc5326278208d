"""Rebuild the KPI rollups (``tawag.cdr_rollup``, ``cdr_rollup_talk``, ``cdr_rollup_callers``)
of the days loaded since they were built.

Why not a materialized view summing cdrs inserts: a CDR is written once per revision and
a late event revises an old day, so a sum over inserts counts every revision. Here a day
is rebuilt whole, from ``cdrs FINAL`` -- the one definition of "a call, its latest
revision" -- whenever anything was loaded into it:

1. :func:`stale_days`: the (tenant, call_day) whose newest ``loaded_at`` (kept per day by
   the view ``cdr_days_loaded_mv`` on every insert into cdrs) is newer than the generation
   of its rollup (or that have none, or only one of another :data:`kpi.CATALOGUE`);
2. :func:`rebuild_day`: the KPI components (:data:`kpi.COMPONENTS`, the same SQL the
   queries use) per 15-minute slot, direction and DID, from cdrs FINAL of that day; the
   talk per slot it happened in and the inbound callers' pieces per slot (the SQL of
   ``kpi._talk_slots_sql`` and ``kpi._contact_pieces_sql``, which the queries use on the
   calls they read from cdrs); all written with generation = the ``loaded_to`` read in
   step 1; then the day's marker in
   ``cdr_rollup_days``; then the older generations are deleted.

Why it is exact: every row whose ``loaded_at`` is at or below the generation was committed
before step 1 read it (the loader writes one batch at a time, each stamped at its insert),
so step 2's FINAL read holds it. A revision loaded later has a newer ``loaded_at``: the
day's ``loaded_to`` passes the generation and readers go back to cdrs FINAL for that day
(``warehouse.queries.kpi``) until it is rebuilt. A redelivered revision (same version)
changes nothing in FINAL; it only makes the day stale once more. Rebuilding a day twice,
even from two refreshers at once, writes the same rows (the table is a ReplacingMergeTree
keyed by every dimension, read with FINAL), except the caller pieces: too many to read
with FINAL, they carry the rebuild's random ``build``, and readers take the build of the
day's marker only.

Limit: two writers inserting into the same day at once could commit an older
``loaded_at`` after a newer one; ``settle_s`` (rebuild only days untouched for that long)
covers a writer stalled for less than that. The loader calls :func:`refresh` between polls.
"""

from __future__ import annotations

import logging
import secrets
import time
from datetime import date, datetime
from typing import Any

from warehouse.client import WarehouseClient
from warehouse.queries import kpi
from warehouse.schema import (
    CDR_DAYS_LOADED,
    CDR_ROLLUP,
    CDR_ROLLUP_CALLERS,
    CDR_ROLLUP_DAYS,
    CDR_ROLLUP_TALK,
    CDRS,
)

__all__ = ["SETTLE_S", "stale_days", "rebuild_day", "refresh", "Refresher"]

log = logging.getLogger(__name__)

SETTLE_S = 60.0
"""The loader rebuilds a day only once nothing was loaded into it for this long: today's
day stays on cdrs FINAL while calls arrive; yesterday's is rolled up a minute after its
last late revision."""

_COLUMNS = (*kpi._CALL_COLUMNS, "did")


def stale_days(client: WarehouseClient, *, settle_s: float = 0.0) -> list[dict[str, Any]]:
    """``tenant, call_day, loaded_to`` of each day whose rollup is missing or older than
    its last load, that nothing was loaded into for ``settle_s`` seconds."""
    return client.query(
        f"SELECT l.tenant AS tenant, l.call_day AS call_day, l.loaded_to AS loaded_to FROM "
        f"(SELECT tenant, call_day, max(loaded_to) AS loaded_to FROM {CDR_DAYS_LOADED} "
        "GROUP BY tenant, call_day) AS l LEFT JOIN (SELECT tenant, call_day, max(generation) "
        f"AS generation FROM {CDR_ROLLUP_DAYS} WHERE catalogue = {{catalogue:String}} "
        "GROUP BY tenant, call_day) AS r USING (tenant, call_day) "
        "WHERE r.generation < l.loaded_to AND l.loaded_to <= now64(3) - "
        "toIntervalMillisecond({settle_ms:Int64}) ORDER BY tenant, call_day",
        {"catalogue": kpi.CATALOGUE, "settle_ms": round(settle_s * 1000)})


def rebuild_day(client: WarehouseClient, tenant: str, day: date,
                generation: datetime) -> None:
    """Write the rollups of ``tenant``'s ``day`` from cdrs FINAL as ``generation``: the
    components per slot (:data:`CDR_ROLLUP`), the talk per slot it happened in
    (:data:`CDR_ROLLUP_TALK`) and the caller pieces (:data:`CDR_ROLLUP_CALLERS`); then
    the day's marker; then the older generations are deleted."""
    names = sorted(kpi.COMPONENTS)
    components = ", ".join(f"'{n}', {kpi.component_column(n)}" for n in names)
    slot = f"intDiv(toUnixTimestamp64Milli(started_at), {kpi.SLOT_MS}) * {kpi.SLOT_MS}"
    params = {**kpi.build_params(), "tenant": tenant, "day": day, "generation": generation,
              "catalogue": kpi.CATALOGUE, "build": secrets.randbits(63)}
    calls = (f"WITH calls AS (SELECT {', '.join(_COLUMNS)} FROM {CDRS} FINAL WHERE "
             "tenant = {tenant:String} AND call_day = {day:Date}) ")
    lead = ("SELECT {tenant:String}, {day:Date}, {catalogue:String}, "
            "{generation:DateTime64(3, 'UTC')}, ")
    keys = "tenant, call_day, catalogue, generation, slot_ms, direction, did"
    client.command(
        f"INSERT INTO {CDR_ROLLUP} ({keys}, components) {calls}{lead}{slot} AS slot_ms, "
        f"direction, did, map({components}) FROM calls GROUP BY slot_ms, direction, did",
        params)
    client.command(
        f"INSERT INTO {CDR_ROLLUP_TALK} ({keys}, talk_ms) {calls}{lead}slot_ms, direction, "
        f"did, talk_ms FROM ({kpi._talk_slots_sql('calls')})", params)
    client.command(
        f"INSERT INTO {CDR_ROLLUP_CALLERS} ({keys}, build, contact, calls, first_ms, last_ms) "
        f"{calls}{lead}slot_ms, direction, did, {{build:UInt64}}, contact, calls, first_ms, "
        "last_ms FROM ("
        f"{kpi._contact_pieces_sql('calls', kpi._PIECE_KEYS)})", params)
    client.command(
        f"INSERT INTO {CDR_ROLLUP_DAYS} (tenant, call_day, catalogue, generation, build, "
        "calls) SELECT {tenant:String}, {day:Date}, {catalogue:String}, "
        f"{{generation:DateTime64(3, 'UTC')}}, {{build:UInt64}}, "
        f"sum(components['{kpi._count('1')[1:-1]}']) "
        f"FROM {CDR_ROLLUP} FINAL WHERE tenant = {{tenant:String}} AND call_day = {{day:Date}}"
        " AND catalogue = {catalogue:String} AND generation = {generation:DateTime64(3, 'UTC')}",
        params)
    for table in (CDR_ROLLUP, CDR_ROLLUP_TALK, CDR_ROLLUP_CALLERS):
        client.command(
            f"DELETE FROM {table} WHERE tenant = {{tenant:String}} AND call_day = {{day:Date}}"
            " AND (catalogue != {catalogue:String} OR generation < "
            "{generation:DateTime64(3, 'UTC')})", params)


def refresh(client: WarehouseClient, *, settle_s: float = 0.0) -> int:
    """Rebuild every stale day (see :func:`stale_days`); how many were rebuilt."""
    days = stale_days(client, settle_s=settle_s)
    for day in days:
        rebuild_day(client, day["tenant"], day["call_day"], day["loaded_to"])
    return len(days)


class Refresher:
    """Calls :func:`refresh` at most every ``every_s`` seconds (from the loader's loop)."""

    def __init__(self, client: WarehouseClient, *, every_s: float = 30.0,
                 settle_s: float = SETTLE_S) -> None:
        self._client, self._every_s, self._settle_s = client, every_s, settle_s
        self._next = 0.0

    def maybe_run(self) -> int:
        now = time.monotonic()
        if now < self._next:
            return 0
        self._next = now + self._every_s
        rebuilt = refresh(self._client, settle_s=self._settle_s)
        if rebuilt:
            log.info("rollup: rebuilt %d day(s)", rebuilt)
        return rebuilt
