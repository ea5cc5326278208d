"""The SQL box (parse, allow-list, tenant scope), on a real store with two tenants."""

from __future__ import annotations

import pytest
from conftest import cdr_records, make_cdr

from core.settings import Settings
from warehouse.client import QueryError
from warehouse.loader import Loader, routes_for
from warehouse.queries.sql_box import SqlRefused, check_statement, run_statement


@pytest.fixture
def two_tenants(store):
    cdrs = [make_cdr("a1"), make_cdr("a2", caller="+74950000002"),
            make_cdr("b1", tenant="beta", caller="+79990000001")]
    Loader(store, routes_for(Settings()), lambda dead: None).load(cdr_records(cdrs))
    store.command("USE tawag")  # as the HTTP reader's session: bare names resolve in tawag
    return store


def rows(store, sql, tenant="acme"):
    return run_statement(store, sql, tenant=tenant).frame.to_dict("records")


@pytest.mark.parametrize("sql", [
    "SELECT tenant, call_id FROM cdrs ORDER BY call_id",
    "SELECT tenant, call_id FROM tawag.cdrs AS t WHERE 1 OR tenant = 'beta' ORDER BY call_id",
    "SELECT tenant, call_id FROM (SELECT * FROM `tawag`.`cdrs`) ORDER BY call_id",
    "WITH x AS (SELECT * FROM cdrs FINAL) SELECT tenant, call_id FROM x ORDER BY call_id",
    "select tenant, call_id from cdrs /* or tenant='beta' */ order by call_id -- end",
    "SELECT tenant, call_id FROM cdrs WHERE call_id IN (SELECT call_id FROM tawag.cdrs) "
    "ORDER BY call_id",
])
def test_every_read_of_a_table_sees_the_tenants_rows_only(two_tenants, sql):
    assert rows(two_tenants, sql) == [{"tenant": "acme", "call_id": "a1"},
                                      {"tenant": "acme", "call_id": "a2"}]


def test_union_joins_and_scalar_subqueries_are_filtered_too(two_tenants):
    union = rows(two_tenants, "SELECT count() AS n FROM cdrs UNION ALL SELECT count() "
                 "FROM tawag.cdrs WHERE tenant = 'beta'")
    assert sorted(r["n"] for r in union) == [0, 2]  # UNION ALL has no row order
    assert rows(two_tenants, "SELECT count() AS n FROM cdrs a CROSS JOIN tawag.cdrs b") \
        == [{"n": 4}]
    scalar = run_statement(two_tenants, "SELECT (SELECT groupArray(tenant) FROM cdrs) AS t",
                           tenant="acme").frame
    assert list(scalar["t"][0]) == ["acme", "acme"]
    assert rows(two_tenants, "SELECT arrayJoin(['beta', tenant]) AS t FROM cdrs "
                "WHERE call_id = 'a1'") == [{"t": "beta"}, {"t": "acme"}]  # a literal, no row


@pytest.mark.parametrize("sql, reason", [
    ("DROP TABLE cdrs", "DropQuery statements are not allowed"),
    ("SHOW TABLES", "only one SELECT"),
    ("SELECT * FROM cdrs SETTINGS additional_table_filters = {}", "SETTINGS"),
    ("SELECT * FROM (SELECT * FROM cdrs SETTINGS additional_table_filters = {})", "SETTINGS"),
    ("SELECT 1 FORMAT JSON", "FORMAT"),
    ("SELECT * FROM system.tables", "table system.tables"),
    ("SELECT * FROM `system`.`query_log`", "table system.query_log"),
    ("SELECT toDate((SELECT any(query) FROM system.query_log))", "table system.query_log"),
    ("SELECT * FROM information_schema.tables", "table information_schema.tables"),
    ("SELECT * FROM schema_migrations", "schema_migrations"),
    ("SELECT * FROM merge('tawag', 'cdrs')", "table function merge()"),
    ("SELECT * FROM view(SELECT * FROM cdrs)", "table function view()"),
    ("SELECT * FROM cdrs, remote('x', tawag.cdrs)", "remote() is not allowed"),
    ("SELECT 'beta' IN tawag.cdrs", "IN tawag.cdrs"),
    ("SELECT dictGet('d', 'x', 1)", "dictGet"),
])
def test_escapes_are_refused_with_the_reason(two_tenants, sql, reason):
    with pytest.raises(SqlRefused, match=reason.replace("(", r"\(").replace(")", r"\)")):
        run_statement(two_tenants, sql, tenant="acme")


def test_number_generators_are_allowed(two_tenants):
    assert rows(two_tenants, "SELECT sum(number) AS s FROM numbers(4)") == [{"s": 6}]


def test_a_syntax_error_is_clickhouses_message(two_tenants):
    with pytest.raises(QueryError, match="Syntax error"):
        check_statement(two_tenants, "SELECT FROM WHERE")


def test_several_statements_are_a_syntax_error_of_clickhouses_parser(two_tenants):
    with pytest.raises(QueryError, match="Multi-statements are not allowed"):
        run_statement(two_tenants, "SELECT 1; SELECT 2", tenant="acme")


def test_the_row_limit_cuts_and_says_so(two_tenants):
    result = run_statement(two_tenants, "SELECT number FROM numbers(10)", tenant="acme",
                           limit=3)
    assert result.truncated and list(result.frame["number"]) == [0, 1, 2]


def test_the_timeout_stops_a_long_statement(two_tenants):
    with pytest.raises(QueryError) as caught:
        run_statement(two_tenants, "SELECT sum(cityHash64(a.number, b.number)) FROM "
                      "numbers(1000000) AS a CROSS JOIN numbers(1000000) AS b",
                      tenant="acme", timeout_s=1)
    assert caught.value.code == 159


def test_an_administrator_reads_every_tenant(two_tenants):
    assert rows(two_tenants, "SELECT DISTINCT tenant FROM cdrs ORDER BY tenant",
                tenant=None) == [{"tenant": "acme"}, {"tenant": "beta"}]


def test_a_tenant_name_cannot_inject(two_tenants):
    with pytest.raises(ValueError, match="not a tenant name"):
        run_statement(two_tenants, "SELECT 1", tenant="x' OR 1 --")
