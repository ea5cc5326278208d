"""Apply the numbered SQL files in ``warehouse/migrations/`` once each, in order.

A migration file is ``NNNN_<slug>.sql``: a comment saying why it exists, then one or
more statements separated by ``;``. Applied versions are recorded in
``tawag.schema_migrations`` with the file's checksum, so :func:`migrate` can run at every
start (it applies only what is new) and refuses to go on if an applied file was edited:
migrations are append-only. Statements use ``IF NOT EXISTS``, so a crash between a DDL
and its record is repaired by the next run.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from warehouse import schema
from warehouse.client import WarehouseClient

__all__ = ["MIGRATIONS_DIR", "Migration", "MigrationError", "load_migrations",
           "split_statements", "applied_versions", "migrate"]

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(RuntimeError):
    """The migration files and the recorded history disagree; a human must look."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def statements(self) -> list[str]:
        return split_statements(self.sql)


def split_statements(sql: str) -> list[str]:
    """Statements of a migration file: ``--`` comment lines dropped, split on ``;``.

    Migration files keep ``;`` out of string literals, so a plain split is exact.
    """
    lines = [line for line in sql.splitlines() if not line.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Every ``NNNN_<slug>.sql`` in ``directory``, by version; gaps or twins are errors."""
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: not named NNNN_<slug>.sql")
        found.append(Migration(int(match.group(1)), path.stem, path.read_text()))
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise MigrationError(f"migration versions must be 1..N without gaps: {versions}")
    return found


def applied_versions(client: WarehouseClient) -> dict[int, str]:
    """``version -> checksum`` of the applied migrations (empty on a new store)."""
    exists = client.query(
        "SELECT count() AS n FROM system.tables WHERE database = {db:String} "
        "AND name = {table:String}",
        {"db": schema.DATABASE, "table": schema.SCHEMA_MIGRATIONS.split(".")[1]})
    if not exists[0]["n"]:
        return {}
    rows = client.query(f"SELECT version, checksum FROM {schema.SCHEMA_MIGRATIONS} FINAL")
    return {int(r["version"]): r["checksum"] for r in rows}


def applied_names(client: WarehouseClient) -> list[str]:
    """Names of the applied migrations, oldest first."""
    rows = client.query(f"SELECT name FROM {schema.SCHEMA_MIGRATIONS} FINAL ORDER BY version")
    return [r["name"] for r in rows]


def _check_history(migrations: list[Migration], done: dict[int, str]) -> None:
    known = {m.version: m for m in migrations}
    for version, checksum in done.items():
        if version not in known:
            raise MigrationError(f"store has migration {version}, which is not in the code "
                                 "(is this an older release?)")
        if known[version].checksum != checksum:
            raise MigrationError(f"{known[version].name} was edited after it was applied; "
                                 "add a new migration instead")


def _apply(client: WarehouseClient, migration: Migration) -> None:
    for statement in migration.statements:
        client.command(statement)
    client.insert_rows(schema.SCHEMA_MIGRATIONS, [{
        "version": migration.version, "name": migration.name,
        "checksum": migration.checksum}], dedup_token=f"migration:{migration.name}")


def migrate(client: WarehouseClient, migrations: list[Migration] | None = None) -> list[str]:
    """Apply the migrations not yet recorded; returns the names applied by this call."""
    migrations = load_migrations() if migrations is None else migrations
    done = applied_versions(client)
    _check_history(migrations, done)
    names = []
    for migration in migrations:
        if migration.version not in done:
            _apply(client, migration)
            log.info("warehouse migration applied: %s", migration.name)
            names.append(migration.name)
    return names
