"""Statements that try to leave the tenant's rows or the store (issue 12), by class.

``{canary}`` is replaced by the path of a file the test writes; ``{out}`` by a path that
must not appear. Each must be refused or fail, and nothing may leak: not the canary
file's content, not the other tenant's canary row.
"""

from __future__ import annotations

FILE_LIKE = ["file", "url", "remote", "remoteSecure", "executable", "s3", "hdfs", "mysql",
             "postgresql", "jdbc", "input", "generateRandom"]


def _quotings(name: str) -> list[str]:
    return [f"`{name}`", f'"{name}"', name.upper(), "".join(
        c.upper() if i % 2 else c.lower() for i, c in enumerate(name))]


def _file_like() -> list[tuple[str, str]]:
    out = []
    for name in FILE_LIKE:
        for quoted in _quotings(name):
            out.append(("table function", f"SELECT * FROM {quoted}('{{canary}}', "
                                          "'LineAsString')"))
            out.append(("scalar function", f"SELECT {quoted}('{{canary}}')"))
    return out


CORPUS: list[tuple[str, str]] = [
    *_file_like(),
    ("scalar function", "SELECT arrayJoin([`file`('{canary}')])"),
    ("scalar function", 'SELECT arrayJoin(["file"(\'{canary}\'), \'x\'])'),
    ("subquery", "SELECT * FROM (SELECT * FROM file('{canary}', 'LineAsString'))"),
    ("subquery", "SELECT (SELECT any(line) FROM `file`('{canary}', 'LineAsString'))"),
    ("cte", "WITH x AS (SELECT * FROM FILE('{canary}', 'LineAsString')) SELECT * FROM x"),
    ("cte", "WITH (SELECT `file`('{canary}')) AS c SELECT c"),
    ("url", "SELECT * FROM `url`('http://127.0.0.1:9/x', 'LineAsString')"),
    ("settings", "SELECT tenant, count() FROM tawag.cdrs GROUP BY tenant "
                 "SETTINGS additional_table_filters = {'tawag.cdrs':'1', 'cdrs':'1'}"),
    ("settings", "SELECT tenant, count() FROM tawag.cdrs WHERE $$'$$ != '' GROUP BY tenant "
                 "SETTINGS additional_table_filters = {'tawag.cdrs':'1', 'cdrs':'1'} -- '"),
    ("settings", "SELECT * FROM (SELECT tenant FROM cdrs SETTINGS additional_table_filters "
                 "= {'cdrs':'1'})"),
    ("settings", "SELECT tenant FROM cdrs /* ' */ SETTINGS max_execution_time = 0 -- '"),
    ("settings", "SELECT count() FROM numbers(10) SETTINGS readonly = 0"),
    ("settings", "WITH x AS (SELECT tenant FROM cdrs SETTINGS additional_table_filters = "
                 "{'cdrs':'1'}) SELECT * FROM x"),
    ("format", "SELECT tenant FROM cdrs FORMAT Template"),
    ("into outfile", "SELECT 1 INTO OUTFILE '{out}'"),
    ("into outfile", "SELECT $$'$$ INTO OUTFILE '{out}' -- '"),
    ("into outfile", "SELECT 1 INTO OUTFILE '{out}' AND STDOUT FORMAT CSV"),
    ("system", "SELECT * FROM system.tables"),
    ("system", "SELECT * FROM `system`.`users`"),
    ("system", 'SELECT * FROM "system"."query_log"'),
    ("system", "SELECT * FROM SYSTEM.settings"),
    ("system", "SELECT * FROM information_schema.tables"),
    ("system", "SELECT * FROM INFORMATION_SCHEMA.COLUMNS"),
    ("system", "SELECT (SELECT count() FROM system.numbers LIMIT 1)"),
    ("system", "SELECT * FROM tawag.schema_migrations"),
    ("table function", "SELECT * FROM merge('tawag', '^cdrs$')"),
    ("table function", "SELECT * FROM loop(tawag.cdrs) LIMIT 10"),
    ("table function", "SELECT * FROM view(SELECT * FROM tawag.cdrs)"),
    ("table function", "SELECT * FROM cluster('default', tawag.cdrs)"),
    ("table function", "SELECT * FROM clusterAllReplicas('default', tawag.cdrs)"),
    ("table function", "SELECT * FROM mergeTreeIndex('tawag', 'cdrs')"),
    ("table function", "SELECT * FROM numbers_mt(10)"),
    ("dictionary", "SELECT dictGet('d', 'x', toUInt64(1))"),
    ("dictionary", "SELECT * FROM dictionary('d')"),
    ("dictionary", "SELECT joinGet('tawag.cdrs', 'tenant', 'b1')"),
    ("unbounded", "SELECT count() FROM numbers()"),
    ("unbounded", "SELECT count() FROM numbers(1e15)"),
    ("unbounded", "SELECT count() FROM numbers(1000000000000)"),
    ("unbounded", "SELECT count() FROM zeros(toUInt64(1e15))"),
    ("multi-statement", "SELECT 1; SELECT * FROM file('{canary}', 'LineAsString')"),
    ("multi-statement", "SELECT $$;$$; SELECT `file`('{canary}')"),
    ("cross-tenant", "SELECT tenant, call_id FROM cdrs AS beta_rows WHERE tenant = 'beta'"),
    ("cross-tenant", "SELECT b.call_id FROM cdrs a RIGHT JOIN tawag.cdrs AS b ON 1 "
                     "WHERE b.tenant = 'beta'"),
    ("cross-tenant", "SELECT call_id FROM cdrs WHERE 1 OR tenant = 'beta' UNION ALL "
                     "SELECT call_id FROM `tawag`.`cdrs` WHERE tenant != 'acme'"),
    ("cross-tenant", "SELECT 'b1' IN tawag.cdrs"),
    ("cross-tenant", "SELECT * FROM {t:Identifier}"),
    ("write", "INSERT INTO tawag.cdrs (tenant, call_id) SELECT 'acme', 'x'"),
    ("write", "DROP TABLE tawag.cdrs"),
    ("write", "SET readonly = 0"),
    ("write", "SYSTEM SHUTDOWN"),
]
"""(class, statement). Cross-tenant statements may succeed, but must show no beta row."""

MAY_SUCCEED = {"cross-tenant"}
