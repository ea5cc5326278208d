"""tawag.replay's comparison of the agent and callback tables: versions are a record of
delivery and left out (see tawag/replay.py); every other column still counts."""

from __future__ import annotations

from typing import Any

import pytest

from tawag.replay import DELIVERY_VERSIONED, compare_table
from warehouse import schema


class Rows:
    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        self.sql: list[str] = []

    def query(self, sql: str, params: Any = None) -> list[dict[str, Any]]:
        self.sql.append(sql)
        return self.rows


ROW = {"agent": "102", "version": 7, "talk_ms": 100, "complete_until": "09:15:00.000"}


@pytest.mark.parametrize("table", sorted(DELIVERY_VERSIONED))
def test_a_version_alone_does_not_make_delivery_versioned_rows_differ(table: str) -> None:
    diff = compare_table(table, Rows([ROW]), Rows([{**ROW, "version": 9}]))
    assert diff.equal
    other = compare_table(table, Rows([ROW]), Rows([{**ROW, "version": 9, "talk_ms": 101}]))
    assert not other.equal and other.first_replay == {k: v for k, v in ROW.items()
                                                      if k != "version"} | {"talk_ms": 101}


def test_cdr_versions_are_compared() -> None:
    assert not compare_table(schema.CDRS, Rows([ROW]), Rows([{**ROW, "version": 9}])).equal


@pytest.mark.parametrize(("table", "clause"), [(schema.AGENT_STATES, "NOT deleted"),
                                               (schema.CALLBACKS, "NOT deleted"),
                                               (schema.AGENT_STATS, "talk_ms")])
def test_retractions_are_left_out_as_readers_skip_them(table: str, clause: str) -> None:
    live = Rows([])
    compare_table(table, live, Rows([]))
    assert "FINAL WHERE" in live.sql[0] and clause in live.sql[0]
