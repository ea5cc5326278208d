"""A tenant's user cannot reach another tenant's rows: not on any page, not by forging the
administrator's tenant choice, not through the SQL box with crafted statements."""

from __future__ import annotations

import dash_known_data as known
import pytest
from dash_app import open_page, page_text

from dashboards import data

pytestmark = pytest.mark.usefixtures("app_env")

PAGES = ["wallboard", "today", "calls", "agents", "missed_calls", "trends", "quality", "sql"]
GLOBEX_MARKS = ["+7999", "gx-sales", known.GLOBEX_DID, "globex", "g1"]
ACME_MARKS = ["+7495", "support", "acme"]


def leaks(text: str, marks: list[str]) -> list[str]:
    return [m for m in marks if m in text]


@pytest.mark.parametrize("page", PAGES)
def test_an_acme_user_sees_no_globex_row(page):
    at = open_page(page, "alice")
    assert not at.error
    text = page_text(at)
    assert "acme" in text
    assert leaks(text, GLOBEX_MARKS) == []


@pytest.mark.parametrize("page", PAGES)
def test_a_globex_user_sees_no_acme_row(page):
    text = page_text(open_page(page, "bob"))
    assert leaks(text, ACME_MARKS) == []


@pytest.mark.parametrize("page", ["wallboard", "calls", "trends"])
def test_forging_the_administrators_tenant_choice_changes_nothing(page):
    at = open_page(page, "alice", **{data.ADMIN_TENANT_KEY: "globex"})
    assert leaks(page_text(at), GLOBEX_MARKS) == []
    assert not at.selectbox or all(s.key != data.ADMIN_TENANT_KEY for s in at.selectbox)


def test_an_administrator_switches_tenant_in_the_sidebar():
    at = open_page("wallboard", "root")
    at.selectbox(key=data.ADMIN_TENANT_KEY).select("globex").run()
    assert page_text(at).count("Tenant `globex`") == 1
    assert {m.label: m.value for m in at.metric}["Calls ringing"] == "3"


CRAFTED = [
    "SELECT * FROM cdrs",
    "SELECT * FROM tawag.cdrs AS t WHERE 1 OR tenant = 'globex'",
    "SELECT * FROM cdrs WHERE tenant = 'globex'",
    "SELECT caller FROM cdrs UNION ALL SELECT caller FROM tawag.cdrs WHERE tenant != 'acme'",
    "SELECT * FROM (SELECT * FROM `tawag`.`cdrs`) WHERE tenant = 'globex'",
    "WITH x AS (SELECT * FROM cdrs) SELECT * FROM x WHERE tenant = 'globex'",
    "select * from CDRS",
    "SeLeCt * FrOm tawag.cdrs /* tenant = 'acme' */ where tenant='globex'",
    "SELECT a.caller, b.caller FROM cdrs a CROSS JOIN tawag.cdrs b",
    "SELECT arrayJoin(groupArray(caller)) FROM tawag.cdrs",
    "SELECT (SELECT groupArray(caller) FROM cdrs WHERE tenant = 'globex')",
    "SELECT caller FROM cdrs WHERE call_id IN (SELECT call_id FROM tawag.cdrs)",
    "SELECT * FROM call_events", "SELECT * FROM tawag.callbacks",
    "SELECT * FROM agent_states", "SELECT * FROM tawag.agent_stats",
    "SELECT * FROM cdrs -- the rest is a comment\n",
    "SELECT * FROM cdrs SETTINGS additional_table_filters = {}",
    "SELECT * FROM (SELECT * FROM cdrs SETTINGS additional_table_filters = {})",
    "SELECT * FROM merge('tawag', 'cdrs')",
    "SELECT * FROM merge(currentDatabase(), '^cdrs$')",
    "SELECT * FROM view(SELECT * FROM tawag.cdrs)",
    "SELECT * FROM loop(tawag, cdrs) LIMIT 5",
    "SELECT * FROM system.query_log",
    "SELECT * FROM system.parts",
    "SELECT toDate((SELECT any(query) FROM system.query_log))",
    "SELECT * FROM information_schema.tables",
    "SELECT * FROM remote('127.0.0.1', tawag.cdrs)",
    "SELECT * FROM url('http://127.0.0.1:31125/?query=SELECT+1', CSV)",
    "SELECT 'globex' IN tawag.cdrs",
    "SELECT dictGet('x', 'y', 1)",
    "SELECT * FROM cdrs; SELECT * FROM tawag.cdrs WHERE tenant = 'globex'",
    "SELECT * FROM cdrs FORMAT JSON",
    "SELECT * FROM schema_migrations",
    "SHOW PROCESSLIST",
    "DESCRIBE TABLE system.query_log",
    "INSERT INTO cdrs SELECT * FROM cdrs",
]


@pytest.mark.parametrize("sql", CRAFTED)
def test_crafted_statements_return_acme_rows_or_are_refused(sql):
    at = open_page("sql", "alice")
    at.text_area(key="sql_text").input(sql)
    at = at.button(key="sql_run").click().run()
    assert not at.exception
    errors = [e.value for e in at.error]
    result = at.dataframe[-1].value.to_csv() if not errors else ""
    assert errors or result  # one or the other, never nothing
    assert leaks(result + "\n".join(errors), GLOBEX_MARKS[:3]) == []
