"""Who reads what on a ClickHouse *server*: the access-control DDL of server mode.

In embedded mode Tawag's own HTTP interface enforces the tenant scope and the limits
(:mod:`warehouse.guard`). A ClickHouse server enforces them itself, with its own access
control; this module writes the statements that set it up, so that analysts connected
straight to the server's port 8123 (DBeaver, Grafana, curl) get the same guarantees:

- one **settings profile** ``tawag_reader``: ``readonly = 2`` (reads only; settings may be
  sent by clients, which drivers do, but not the limits) and :data:`guard.DEFAULT_LIMITS`,
  each ``CONST`` so no statement or client can lift it;
- one **role per tenant** ``tawag_tenant_<t>`` with SELECT on the documented analyst
  tables and the KPI rollups (:data:`READ_TABLES`) only, and a **row policy** on each
  of them ``USING tenant = '<t>'``;
- one **reader role** ``tawag_all_tenants`` (administrators and the dashboards' reader):
  SELECT on the same tables and a ``USING 1`` policy — needed because once a table has a
  row policy, ClickHouse shows *no* rows to a user no policy names (CREATE ROW POLICY,
  "Note" in the ClickHouse docs);
- the **writer** (``clickhouse_user``, who runs the loader and the migrations) is named in
  the ``USING 1`` policies too, for the same reason.

No table function is granted: ``file``/``url``/``remote``/``s3``/``executable`` need
``CREATE TEMPORARY TABLE`` and a SOURCES grant (``FILE``, ``URL``, ...), which no role
here has. ``system.*`` needs no grant to be *listed* but holds no tenant rows.

The statements are plain text because DDL takes no query parameters; every name in them
is checked against :data:`_NAME` and every literal is quoted by :func:`_quote`.
``tawag migrate`` applies :func:`access_statements` in server mode;
``tawag user add`` applies :func:`user_statements`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from warehouse.guard import DEFAULT_LIMITS, TABLES, valid_tenant
from warehouse.schema import ROLLUP_TABLES

__all__ = ["READ_TABLES", "PROFILE", "ALL_TENANTS_ROLE", "tenant_role", "access_statements",
           "user_statements", "drop_user_statements", "policy_condition"]

READ_TABLES = (*TABLES, *ROLLUP_TABLES)
"""What the roles read: the analyst tables and the KPI rollups derived from cdrs (the
KPI queries read them: each has a ``tenant`` column, so the same row policies apply)."""

PROFILE = "tawag_reader"
ALL_TENANTS_ROLE = "tawag_all_tenants"
_NAME = re.compile(r"^[A-Za-z0-9_]{1,96}$")


def _identifier(name: str) -> str:
    """A role/profile/user name safe to put into DDL unquoted-equivalent (back-quoted)."""
    if not _NAME.match(name):
        raise ValueError(f"not a safe ClickHouse access name: {name!r}")
    return f"`{name}`"


def _quote(text: str) -> str:
    """A ClickHouse string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def tenant_role(tenant: str) -> str:
    """The role whose row policies show ``tenant``'s rows (tenant names may hold ``.@-``)."""
    valid_tenant(tenant)
    return "tawag_tenant_" + re.sub(r"[^A-Za-z0-9_]", lambda m: f"_{ord(m.group()):02x}",
                                    tenant)


def policy_condition(tenant: str | None) -> str:
    """The row policy's USING expression (``None``: every tenant)."""
    return "1" if tenant is None else f"tenant = {_quote(valid_tenant(tenant))}"


def _policy_name(role: str, table: str) -> str:
    return _identifier(f"{role}__{table.split('.', 1)[1]}")


def access_statements(tenants: Iterable[str], *, writer: str,
                      limits: Mapping[str, int] = DEFAULT_LIMITS,
                      tables: Iterable[str] = READ_TABLES) -> list[str]:
    """The profile, the roles, their grants and row policies, for ``tenants``.

    Idempotent (``OR REPLACE`` / ``IF NOT EXISTS``): ``tawag migrate`` runs it on every
    start, so a tenant added to provisioning gets its role on the next one.
    """
    tables = tuple(tables)
    settings = ", ".join(["readonly = 2 CONST"]
                         + [f"{name} = {int(value)} CONST" for name, value in limits.items()])
    out = [f"CREATE SETTINGS PROFILE OR REPLACE {_identifier(PROFILE)} SETTINGS {settings}"]
    everyone = _identifier(ALL_TENANTS_ROLE)
    out.append(f"CREATE ROLE IF NOT EXISTS {everyone} SETTINGS PROFILE {_quote(PROFILE)}")
    out += [f"GRANT SELECT ON {table} TO {everyone}" for table in tables]
    out += [f"CREATE ROW POLICY OR REPLACE {_policy_name(ALL_TENANTS_ROLE, table)} ON {table} "
            f"FOR SELECT USING {policy_condition(None)} TO {everyone}, {_identifier(writer)}"
            for table in tables]
    for tenant in sorted(set(tenants)):
        role = tenant_role(tenant)
        out.append(f"CREATE ROLE IF NOT EXISTS {_identifier(role)} "
                   f"SETTINGS PROFILE {_quote(PROFILE)}")
        out += [f"GRANT SELECT ON {table} TO {_identifier(role)}" for table in tables]
        out += [f"CREATE ROW POLICY OR REPLACE {_policy_name(role, table)} ON {table} "
                f"FOR SELECT USING {policy_condition(tenant)} TO {_identifier(role)}"
                for table in tables]
    return out


def user_statements(name: str, password: str, *, tenant: str | None) -> list[str]:
    """Create (or re-create) one reader: ``tenant=None`` reads every tenant.

    ``sha256_password``: the server salts and hashes the password itself and masks it in
    its query log; it never knows scrypt, the hash Tawag's own users file keeps, so the
    password is sent once, when ``tawag user add`` makes it.
    """
    role = ALL_TENANTS_ROLE if tenant is None else tenant_role(tenant)
    user = _identifier(name)
    return [
        f"CREATE USER OR REPLACE {user} IDENTIFIED WITH sha256_password BY {_quote(password)} "
        f"SETTINGS PROFILE {_quote(PROFILE)}",
        f"GRANT {_identifier(role)} TO {user}",
        f"SET DEFAULT ROLE {_identifier(role)} TO {user}",
    ]


def drop_user_statements(name: str) -> list[str]:
    return [f"DROP USER IF EXISTS {_identifier(name)}"]
