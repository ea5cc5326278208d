"""The cluster DDL derived from the migrations (warehouse/replicated.py).

Run here: every statement through ClickHouse's own parser. Not run: a Replicated table
needs ClickHouse Keeper and a cluster, which this machine has no server for.
"""

from __future__ import annotations

import re

from warehouse.client import ChdbClient
from warehouse.migrate import load_migrations
from warehouse.replicated import replicate, replicated_statements


def test_every_replicated_statement_parses(store: ChdbClient) -> None:
    for statement in replicated_statements():
        rows = store.query(f"EXPLAIN AST {statement}")
        assert rows, statement


def test_tables_are_replicated_on_the_cluster_with_the_same_columns() -> None:
    originals = [s for m in load_migrations() for s in m.statements]
    tables = 0
    for original in originals:
        cluster = replicate(original)
        if original.upper().startswith(("CREATE", "ALTER")):
            assert "ON CLUSTER '{cluster}'" in cluster, original[:60]
        if original.upper().startswith("CREATE TABLE"):
            tables += 1
            engine = re.search(r"ENGINE = (\w+)\(('[^']*'), '\{replica\}'", cluster)
            assert engine and engine[1].startswith("Replicated"), cluster
            name = re.match(r"CREATE TABLE IF NOT EXISTS (\w+)\.(\w+)", original)
            assert engine[2] == f"'/clickhouse/tables/{{shard}}/{name[1]}/{name[2]}'"
            assert "non_replicated" not in cluster
            columns = original[original.index("("):original.index("ENGINE")]
            assert columns in cluster  # the columns are the migrations', not a copy
    assert tables >= 6


def test_a_replacing_engine_keeps_its_version_column() -> None:
    sql = ("CREATE TABLE IF NOT EXISTS tawag.x (v UInt64) ENGINE = ReplacingMergeTree(v) "
           "ORDER BY v SETTINGS non_replicated_deduplication_window = 1000")
    assert replicate(sql) == (
        "CREATE TABLE IF NOT EXISTS tawag.x ON CLUSTER '{cluster}' (v UInt64) "
        "ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/tawag/x', "
        "'{replica}', v) ORDER BY v")


def test_a_table_move_renames_and_drops_on_the_cluster_and_copies_once() -> None:
    moved = [replicate(s) for s in load_migrations()[8].statements]  # 0009: cdrs by day
    renames = [s for s in moved if s.startswith("RENAME TABLE")]
    drops = [s for s in moved if s.startswith("DROP TABLE")]
    inserts = [s for s in moved if s.startswith("INSERT")]
    assert renames == ["RENAME TABLE tawag.cdrs TO tawag.cdrs_before_0009, tawag.cdrs_by_day "
                       "TO tawag.cdrs ON CLUSTER '{cluster}'"]
    assert drops and all("ON CLUSTER '{cluster}' SYNC" in s for s in drops)
    assert len(inserts) == 1 and "ON CLUSTER" not in inserts[0]  # replication copies it
    created = next(s for s in moved if s.startswith("CREATE TABLE"))
    assert "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/tawag/cdrs_by_day'" in created
