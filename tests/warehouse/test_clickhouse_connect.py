"""clickhouse-connect (PyPI), as an analyst uses it, against the warehouse HTTP port.

With its defaults: it reads ``system.settings`` when it connects, asks for Native (and
Arrow) results with HTTP compression (``Accept-Encoding: lz4,zstd,gzip,deflate``), binds
``{name:Type}`` parameters as ``param_*`` arguments and raises ClickHouse's error codes.
"""

from __future__ import annotations

import clickhouse_connect
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError
from served import serve


@pytest.fixture
def served(tmp_path):
    with serve(tmp_path) as s:
        yield s


def client(served, user: str, **kwargs):
    return clickhouse_connect.get_client(host="127.0.0.1", port=served.port, username=user,
                                         password=served.passwords[user], database="tawag",
                                         **kwargs)


def test_query_df_and_arrow_as_a_tenant_user(served):
    alice = client(served, "alice")

    assert alice.server_version.count(".") == 3
    assert alice.query("SELECT tenant, count() AS n FROM cdrs FINAL GROUP BY tenant"
                       ).result_rows == [("acme", 2)]
    frame = alice.query_df("SELECT call_id, caller FROM cdrs FINAL ORDER BY call_id")
    assert frame["call_id"].tolist() == ["c1", "c2"]
    assert frame["caller"].tolist() == ["+74951234567", "+7 'quoted'"]
    table = alice.query_arrow("SELECT call_id FROM cdrs FINAL WHERE caller = {c:String}",
                              parameters={"c": "+7 'quoted'"})
    assert table.column("call_id").to_pylist() == ["c2"]


def test_client_side_binding_and_a_large_result(served):
    alice = client(served, "alice")

    rows = alice.query("SELECT call_id FROM cdrs FINAL WHERE call_id = %(cid)s",
                       parameters={"cid": "c1"}).result_rows
    assert rows == [("c1",)]
    result = alice.query("SELECT number, toString(number) AS s FROM numbers(100000)")
    assert len(result.result_rows) == 100_000
    assert sum(r[0] for r in result.result_rows) == sum(range(100_000))
    assert result.summary["result_rows"] == "100000"


@pytest.mark.parametrize("compress", [True, False, "gzip", "zstd", "lz4"])
def test_every_compression_it_offers(served, compress):
    bob = client(served, "bob", compress=compress)
    assert bob.query("SELECT call_id FROM cdrs FINAL").result_rows == [("b1",)]


def test_errors_carry_clickhouse_codes(served):
    alice = client(served, "alice")
    with pytest.raises(DatabaseError, match="code: 47"):
        alice.query("SELECT no_such_column FROM cdrs")
    with pytest.raises(DatabaseError, match="code: 497"):
        alice.query("SELECT * FROM url('http://127.0.0.1:1/', 'LineAsString')")
    with pytest.raises(DatabaseError, match="code: 164"):
        alice.command("DROP TABLE cdrs")


def test_a_wrong_password_is_refused_with_516(served):
    with pytest.raises(DatabaseError, match="516"):
        clickhouse_connect.get_client(host="127.0.0.1", port=served.port, username="alice",
                                      password="wrong", database="tawag")


def test_each_tenant_reads_only_its_own_rows(served):
    sql = "SELECT groupArray(call_id) FROM (SELECT call_id FROM cdrs FINAL ORDER BY call_id)"
    assert client(served, "alice").query(sql).result_rows == [(["c1", "c2"],)]
    assert client(served, "bob").query(sql).result_rows == [(["b1"],)]
    assert client(served, "root").query(sql).result_rows == [(["b1", "c1", "c2"],)]
