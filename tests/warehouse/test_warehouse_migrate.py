"""Migrations: idempotent, recorded, append-only, and the schema they build (snapshots).

A schema change shows up in review as a diff of ``snapshots/<table>.sql``; to accept an
intended change, rerun with ``TAWAG_UPDATE_SNAPSHOTS=1``.
"""

import os
import shutil
from pathlib import Path

import pytest

from warehouse import schema
from warehouse.migrate import (
    MIGRATIONS_DIR,
    MigrationError,
    applied_versions,
    load_migrations,
    migrate,
    split_statements,
)

SNAPSHOTS = Path(__file__).parent / "snapshots"


def test_second_run_applies_nothing_and_history_is_recorded(store):
    # the fixture ran migrate() once already
    assert migrate(store) == []
    assert migrate(store) == []
    assert sorted(applied_versions(store)) == [m.version for m in load_migrations()]


def test_a_new_store_gets_every_migration_in_order(tmp_path):
    from warehouse.client import ChdbClient

    client = ChdbClient(tmp_path / "fresh")
    try:
        assert migrate(client) == [m.name for m in load_migrations()]
        tables = {r["name"] for r in client.query("SHOW TABLES FROM tawag")}
        assert tables == {t.split(".")[1] for t in schema.TABLES}
    finally:
        client.close()


@pytest.mark.parametrize("table", schema.TABLES)
def test_schema_matches_snapshot(store, table):
    statement = store.query(f"SHOW CREATE TABLE {table}")[0]["statement"]
    snapshot = SNAPSHOTS / f"{table.split('.')[1]}.sql"
    if os.environ.get("TAWAG_UPDATE_SNAPSHOTS") == "1":
        snapshot.write_text(statement + "\n")
    assert statement + "\n" == snapshot.read_text()


@pytest.mark.parametrize("table", [schema.CALL_EVENTS, schema.CDRS])
def test_tenant_leads_the_sort_key_and_retries_are_deduplicated(store, table):
    db, name = table.split(".")
    row = store.query("SELECT sorting_key, create_table_query FROM system.tables "
                      "WHERE database = {db:String} AND name = {name:String}",
                      {"db": db, "name": name})[0]
    assert row["sorting_key"].startswith("tenant,")
    assert "non_replicated_deduplication_window = 1000" in row["create_table_query"]


def test_an_edited_migration_is_refused(store, tmp_path):
    edited = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, edited)
    path = next(edited.glob("0002_*.sql"))
    path.write_text(path.read_text() + "\n-- an afterthought\n")
    with pytest.raises(MigrationError, match="edited after it was applied"):
        migrate(store, load_migrations(edited))


def test_a_gap_in_versions_is_refused(tmp_path):
    (tmp_path / "0001_a.sql").write_text("SELECT 1")
    (tmp_path / "0003_c.sql").write_text("SELECT 1")
    with pytest.raises(MigrationError, match="without gaps"):
        load_migrations(tmp_path)


def test_every_migration_opens_with_a_comment_saying_why():
    for migration in load_migrations():
        assert migration.sql.startswith("-- Why:"), migration.name


def test_split_statements_drops_comments_and_splits_on_semicolons():
    sql = "-- why\nCREATE DATABASE x;\n\n-- more\nCREATE TABLE x.t (a UInt8)\nENGINE = Log;\n"
    assert split_statements(sql) == ["CREATE DATABASE x",
                                     "CREATE TABLE x.t (a UInt8)\nENGINE = Log"]
