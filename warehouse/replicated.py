"""The replicated variant of the migrations, for a ClickHouse cluster (README "Scaling out").

    python -m warehouse.replicated            # prints the DDL, one statement per block

The migrations in ``warehouse/migrations/`` are the one definition of the schema; this
derives the cluster's DDL from them instead of keeping a second copy that would drift:
every ``CREATE``/``ALTER`` runs ``ON CLUSTER '{cluster}'``, every ``*MergeTree`` becomes
its ``Replicated*MergeTree`` with a ZooKeeper/Keeper path per table and the
``{shard}``/``{replica}`` macros of the server's config, and
``non_replicated_deduplication_window`` is dropped (replicated tables de-duplicate retried
inserts by ``insert_deduplication_token`` on their own, the loader's exactly-once rests on
it). ``RENAME``/``DROP TABLE`` (a migration that moves a table's rows into a new layout)
run ``ON CLUSTER`` too; its ``INSERT ... SELECT`` runs once, on the server the DDL is sent
to, and replication copies the rows to the other replicas. One shard, N replicas: every
replica holds every tenant, so ``FINAL`` keeps collapsing a call's revisions (they are
all on one shard) and readers may use any replica.
"""

from __future__ import annotations

import re

from warehouse.migrate import Migration, load_migrations

__all__ = ["replicated_statements", "replicate"]

_CREATE = re.compile(r"^(CREATE (?:TABLE|DATABASE|MATERIALIZED VIEW) IF NOT EXISTS [\w.]+)",
                     re.IGNORECASE)
_ALTER = re.compile(r"^(ALTER TABLE [\w.]+|DROP TABLE IF EXISTS [\w.]+)", re.IGNORECASE)
_RENAME = re.compile(r"^(RENAME TABLE .+?)\s*$", re.IGNORECASE | re.DOTALL)
_ENGINE = re.compile(r"ENGINE\s*=\s*(\w*MergeTree)(?:\(([^)]*)\))?")
_TABLE = re.compile(r"^CREATE TABLE IF NOT EXISTS ([\w]+)\.(\w+)", re.IGNORECASE)
_DEDUP = re.compile(r",?\s*non_replicated_deduplication_window\s*=\s*\d+")
_EMPTY_SETTINGS = re.compile(r"\s*SETTINGS\s*(;|$)")
CLUSTER = "'{cluster}'"


def replicate(statement: str) -> str:
    """One migration statement as it runs on the cluster."""
    table = _TABLE.match(statement)
    out = _CREATE.sub(rf"\1 ON CLUSTER {CLUSTER}", statement, count=1)
    out = _ALTER.sub(rf"\1 ON CLUSTER {CLUSTER}", out, count=1)
    out = _RENAME.sub(rf"\1 ON CLUSTER {CLUSTER}", out, count=1)
    if table:
        path = f"'/clickhouse/tables/{{shard}}/{table[1]}/{table[2]}'"

        def engine(m: re.Match[str]) -> str:
            args = ", ".join(a for a in (path, "'{replica}'", m[2]) if a)
            return f"ENGINE = Replicated{m[1]}({args})"

        out = _ENGINE.sub(engine, out, count=1)
        out = _EMPTY_SETTINGS.sub(r"\1", _DEDUP.sub("", out))
    return out


def replicated_statements(migrations: list[Migration] | None = None) -> list[str]:
    """Every statement of every migration, replicated, in order."""
    return [replicate(s) for m in (migrations or load_migrations()) for s in m.statements]


if __name__ == "__main__":
    print(";\n\n".join(replicated_statements()) + ";")
