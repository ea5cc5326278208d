"""A tenant's user cannot reach another tenant's rows: not on any page, not by forging the
administrator's tenant choice, not through the SQL box with crafted statements, not by
asking the data seam (``data.fetch``) for another tenant or through its cache."""

from __future__ import annotations

import dash_known_data as known
import pytest
from dash_app import TIMEOUT_S, USERS, open_page, page_text
from streamlit.testing.v1 import AppTest

from dashboards import data

pytestmark = pytest.mark.usefixtures("app_env")

PAGES = ["wallboard", "today", "calls", "agents", "missed_calls", "trends", "quality", "routing",
         "webhooks", "sql"]
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


# --- the data seam itself: data.fetch --------------------------------------------------------


def fetch_script(name: str, params: dict) -> None:
    """Runs as a Streamlit script: one data.fetch as the page would, what it returns shown."""
    import streamlit as st

    from dashboards import data
    try:
        st.dataframe(data.fetch(name, **params))
    except (data.TenantRefused, data.UnknownQuery) as exc:
        st.error(f"{type(exc).__name__}: {exc}")


def run_fetch(user: str, name: str = "cdr.latest_cdrs", at=None, **params):
    at = at or AppTest.from_function(fetch_script, args=(name, params),
                                     default_timeout=TIMEOUT_S)
    at.session_state[data.USER_KEY] = USERS[user]
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.mark.parametrize("forged", ["globex", "acme"])
def test_the_seam_refuses_a_tenant_chosen_by_the_page(forged):
    at = run_fetch("alice", tenant=forged)
    assert [e.value.split(":")[0] for e in at.error] == ["TenantRefused"]
    assert not at.dataframe


@pytest.mark.parametrize("name", ["catalog.list_tenants", "sql_box.run_statement",
                                  "cdr.no_such_query", "os.system"])
def test_the_seam_runs_only_tenant_scoped_named_queries(name):
    at = run_fetch("alice", name)
    assert [e.value.split(":")[0] for e in at.error] == ["UnknownQuery"]


def test_the_seam_ignores_a_forged_administrators_tenant_choice():
    at = AppTest.from_function(fetch_script, args=("cdr.latest_cdrs", {}),
                               default_timeout=TIMEOUT_S)
    at.session_state[data.ADMIN_TENANT_KEY] = "globex"
    rows = run_fetch("alice", at=at).dataframe[0].value
    assert set(rows["tenant"]) == {"acme"}


def test_the_seams_cache_never_serves_one_tenants_rows_to_another():
    alice = run_fetch("alice").dataframe[0].value
    # same process, same cache, same query and arguments, within CACHE_TTL_S: bob
    bob = run_fetch("bob").dataframe[0].value
    assert set(alice["tenant"]) == {"acme"} and set(bob["tenant"]) == {"globex"}
