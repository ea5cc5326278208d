"""Server mode's access control DDL (warehouse/server_access.py), checked on the embedded engine.

What can be run here: every statement through ClickHouse's own parser (``EXPLAIN AST``, the
same parser a server uses), and every row policy's condition against the real, migrated
tables with two tenants' rows in them. What cannot: chdb has no access storage (``CREATE
ROLE`` answers ACCESS_DENIED), so the grants and policies are not *enforced* here — that
is ClickHouse's own, documented behaviour; this checks that what Tawag asks for is what it
means.
"""

from __future__ import annotations

import argparse
import re

import pytest

from core.settings import load
from tawag import cli
from tawag.migrate_cmd import server_access_statements
from warehouse.client import ChdbClient, UnavailableError, connect
from warehouse.guard import DEFAULT_LIMITS
from warehouse.server_access import (
    ALL_TENANTS_ROLE,
    PROFILE,
    READ_TABLES,
    access_statements,
    policy_condition,
    tenant_role,
    user_statements,
)

TENANTS = ("acme", "other.co")


def _ast_root(store: ChdbClient, statement: str) -> str:
    rows = store.query(f"EXPLAIN AST {statement}")
    return next(iter(rows[0].values())).strip()


def test_every_statement_parses_as_the_access_statement_it_means(store: ChdbClient) -> None:
    statements = access_statements(TENANTS, writer="tawag_writer") + user_statements(
        "alice", "s3cret'; DROP USER x --", tenant="acme")
    kinds = [_ast_root(store, s).split(" (")[0] for s in statements]
    assert set(kinds) == {"CreateSettingsProfileQuery", "CreateRoleQuery", "GrantQuery",
                          "CREATE ROW POLICY or ALTER ROW POLICY query", "CreateUserQuery",
                          "SetRoleQuery"}
    # the password with a quote stays one literal: one CREATE USER, nothing else smuggled
    assert kinds.count("CreateUserQuery") == 1


def test_policies_show_each_tenant_only_its_rows_on_the_real_tables(store: ChdbClient) -> None:
    for table in READ_TABLES:  # the analyst tables and the KPI rollups
        store.command(f"INSERT INTO {table} (tenant) VALUES ('acme'), ('other.co')")
    for table in READ_TABLES:
        seen = {t: store.query(f"SELECT DISTINCT tenant FROM {table} "
                               f"WHERE {policy_condition(t)}") for t in TENANTS}
        assert [r["tenant"] for r in seen["acme"]] == ["acme"], table
        assert [r["tenant"] for r in seen["other.co"]] == ["other.co"], table
        everyone = store.query(f"SELECT DISTINCT tenant FROM {table} "
                               f"WHERE {policy_condition(None)} ORDER BY tenant")
        assert [r["tenant"] for r in everyone] == ["acme", "other.co"], table


def test_each_granted_table_has_a_policy_for_every_role() -> None:
    statements = access_statements(TENANTS, writer="tawag_writer")
    grants = [re.match(r"GRANT SELECT ON (\S+) TO `(\w+)`", s) for s in statements]
    policies = [re.match(r"CREATE ROW POLICY OR REPLACE `\w+` ON (\S+) .* TO `(\w+)`", s)
                for s in statements]
    granted = {(m[1], m[2]) for m in grants if m}
    policed = {(m[1], m[2]) for m in policies if m}
    roles = {ALL_TENANTS_ROLE, *(tenant_role(t) for t in TENANTS)}
    assert granted == {(table, role) for table in READ_TABLES for role in roles}
    assert granted == policed
    # the writer is named in the every-tenant policies, or it would read no rows at all
    assert all("`tawag_writer`" in s for s in statements if "USING 1 " in s)
    assert not any("tawag_writer" in s for s in statements if "tenant =" in s)


def test_the_profile_fixes_readonly_and_every_limit() -> None:
    profile = access_statements([], writer="w")[0]
    assert profile.startswith(f"CREATE SETTINGS PROFILE OR REPLACE `{PROFILE}`")
    assert "readonly = 2 CONST" in profile
    for name, value in DEFAULT_LIMITS.items():
        assert f"{name} = {value} CONST" in profile


@pytest.mark.parametrize("tenant", ["acme'; DROP TABLE x", "a b", "", "x" * 65])
def test_hostile_tenant_names_are_refused(tenant: str) -> None:
    with pytest.raises(ValueError):
        access_statements([tenant], writer="w")


@pytest.mark.parametrize("name", ["bob`", "a b", "x'--", ""])
def test_hostile_user_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError):
        user_statements(name, "pw", tenant="acme")


def test_tenant_roles_are_distinct_for_names_that_differ_only_in_punctuation() -> None:
    assert tenant_role("other.co") != tenant_role("other_co")
    assert tenant_role("other-co") != tenant_role("other_co")


def test_migrate_covers_every_provisioned_tenant_and_the_reader(tmp_path) -> None:
    settings = load(environ={"TAWAG_TENANT": "default-co", "TAWAG_DATA_DIR": str(tmp_path),
                             "TAWAG_CLICKHOUSE_READER_PASSWORD": "pw",
                             "TAWAG_CLICKHOUSE_USER": "tawag_writer"})
    statements = server_access_statements(settings)
    assert any(s.startswith(f"CREATE ROLE IF NOT EXISTS `{tenant_role('acme')}`")
               for s in statements)  # from sip-edge/provisioning.example.toml
    assert any(tenant_role("default-co") in s for s in statements)
    assert any(s.startswith("CREATE USER OR REPLACE `tawag_dashboards`") for s in statements)
    assert f"SET DEFAULT ROLE `{ALL_TENANTS_ROLE}` TO `tawag_dashboards`" in statements


def test_server_mode_readers_never_fall_back_to_the_writer(tmp_path) -> None:
    settings = load(environ={"TAWAG_WAREHOUSE_MODE": "server", "TAWAG_DATA_DIR": str(tmp_path)})
    with pytest.raises(UnavailableError, match="TAWAG_CLICKHOUSE_READER_PASSWORD"):
        connect(settings)


def test_user_add_in_server_mode_creates_the_clickhouse_user_or_nothing(tmp_path, monkeypatch,
                                                                         capsys) -> None:
    settings = load(environ={"TAWAG_WAREHOUSE_MODE": "server", "TAWAG_DATA_DIR": str(tmp_path)})
    applied: list[list[str]] = []
    monkeypatch.setattr(cli, "_server_user", lambda _s, statements: applied.append(statements))
    add = argparse.Namespace(action="add", name="alice", tenant="acme", admin=False)
    assert cli.cmd_user(settings, add) == 0
    password = re.search(r"password: (\S+)", capsys.readouterr().out)[1]
    assert applied[0] == user_statements("alice", password, tenant="acme")

    def refuse(_s, _statements):
        from warehouse.client import QueryError
        raise QueryError("Code: 497. DB::Exception: Not enough privileges", 497)

    monkeypatch.setattr(cli, "_server_user", refuse)
    bob = argparse.Namespace(action="add", name="bob", tenant="acme", admin=False)
    assert cli.cmd_user(settings, bob) == 1
    assert "refused the user" in capsys.readouterr().err
    listing = argparse.Namespace(action="list")
    monkeypatch.setattr(cli, "_server_user", lambda _s, statements: applied.append(statements))
    cli.cmd_user(settings, listing)
    names = capsys.readouterr().out
    assert "alice" in names and "bob" not in names  # a refused user is not left half-made
    cli.cmd_user(settings, argparse.Namespace(action="remove", name="alice"))
    assert applied[-1] == ["DROP USER IF EXISTS `alice`"]
