"""The read-only ClickHouse HTTP interface, on a real chdb store and a real socket."""

import csv
import io
import json
from datetime import timedelta

import httpx
import pytest
from conftest import SETTINGS, T0, cdr_records, make_cdr

from core.records import Disposition
from warehouse import schema
from warehouse.client import ChdbClient, HttpClient, QueryError, ReadOnlyClientError
from warehouse.http_server import make_server, serve_in_thread
from warehouse.loader import Loader, routes_for
from warehouse.queries import cdr as q
from warehouse.readonly import ReadOnlyViolation, check_read_only, trailing_format
from warehouse.service import READ_LIMITS

PORT = 38123


@pytest.fixture
def server(store, tmp_path):
    calls = [make_cdr("c1", disposition=Disposition.ANSWERED, closed=True, version=2),
             make_cdr("c2", started_at=T0 + timedelta(minutes=5), caller="+7 'quoted'")]
    Loader(store, routes_for(SETTINGS), lambda d: None).load(cdr_records(calls))
    reader = ChdbClient(tmp_path / "chdb", read_only=True, database=schema.DATABASE,
                        settings=READ_LIMITS)
    srv = make_server("127.0.0.1", PORT, reader)
    thread = serve_in_thread(srv)
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join()
        reader.close()


@pytest.fixture
def http(server):
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def test_ping(http):
    resp = http.get("/ping")
    assert (resp.status_code, resp.text) == (200, "Ok.\n")


def test_http_client_binds_parameters(server):
    client = HttpClient(server.url)
    rows = client.query(f"SELECT call_id, version FROM {schema.CDRS} FINAL "
                        "WHERE tenant = {t:String} AND caller = {caller:String}",
                        {"t": "acme", "caller": "+7 'quoted'"})
    assert rows == [{"call_id": "c2", "version": 1}]
    client.close()


def test_named_queries_give_the_same_answer_over_http(server, store):
    client = HttpClient(server.url)
    end = T0 + timedelta(hours=1)
    assert q.calls_summary(client, "acme", T0, end) == q.calls_summary(store, "acme", T0, end)
    assert q.latest_cdrs(client, "acme").equals(q.latest_cdrs(store, "acme"))
    client.close()


def test_raw_get_in_json_each_row(http):
    resp = http.get("/", params={"query": "SELECT call_id FROM cdrs FINAL "
                                          "WHERE tenant = {t:String} ORDER BY call_id",
                                 "param_t": "acme", "default_format": "JSONEachRow"})
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/x-ndjson")
    assert [json.loads(line) for line in resp.text.splitlines()] \
        == [{"call_id": "c1"}, {"call_id": "c2"}]


def test_raw_post_defaults_to_tab_separated(http):
    resp = http.post("/", content=b"SELECT call_id, version FROM tawag.cdrs FINAL "
                                  b"ORDER BY call_id")
    assert resp.status_code == 200
    assert resp.text == "c1\t2\nc2\t1\n"
    assert resp.headers["X-ClickHouse-Format"] == "TabSeparated"


def test_a_format_clause_wins_over_default_format(http):
    resp = http.post("/?param_n=41&default_format=JSON",
                     content=b"SELECT {n:UInt8} + 1 AS n FORMAT CSVWithNames;")
    assert resp.status_code == 200
    assert list(csv.reader(io.StringIO(resp.text))) == [["n"], ["42"]]
    assert resp.headers["content-type"].startswith("text/csv")


def test_tsv_with_names_through_query_in_url_and_body(http):
    resp = http.post("/?query=SELECT%20call_id%20FROM%20tawag.cdrs%20FINAL",
                     content=b"ORDER BY call_id FORMAT TSVWithNames")
    assert resp.text == "call_id\nc1\nc2\n"


def test_gzip_when_asked(http):
    resp = http.get("/", params={"query": "SELECT 1", "enable_http_compression": "1"},
                    headers={"Accept-Encoding": "gzip"})
    assert resp.headers["content-encoding"] == "gzip" and resp.text == "1\n"


@pytest.mark.parametrize("sql, reason", [
    ("INSERT INTO tawag.cdrs (tenant, call_id) VALUES ('x', 'y')", "INSERT statements"),
    ("DROP TABLE tawag.cdrs", "DROP statements"),
    ("ALTER TABLE tawag.cdrs DELETE WHERE 1", "ALTER statements"),
    ("SELECT 1; DROP TABLE cdrs", "multi-statement"),
    ("SELECT * FROM file('/etc/passwd', 'LineAsString')", "table function file()"),
    ("SELECT 1 INTO OUTFILE '/tmp/x'", "INTO OUTFILE"),
])
def test_writes_and_escapes_are_refused_with_403(http, store, sql, reason):
    resp = http.post("/", content=sql.encode())
    assert resp.status_code == 403
    assert resp.text.startswith("Code: 164. DB::Exception: tawag warehouse is read-only: ")
    assert reason in resp.text
    assert resp.headers["X-ClickHouse-Exception-Code"] == "164"
    assert store.query("SELECT count() AS n FROM tawag.cdrs")[0]["n"] == 2


def test_the_reader_session_refuses_writes_even_past_the_guard(server):
    with pytest.raises(QueryError) as err:
        server.executor.execute("INSERT INTO tawag.cdrs (tenant, call_id) VALUES ('x', 'y')",
                                "TSV")
    assert err.value.code == 164


def test_a_syntax_error_is_passed_through_as_400(http):
    resp = http.post("/", content=b"SELECT FROM WHERE")
    assert resp.status_code == 400
    assert "Code: 62. DB::Exception: Syntax error" in resp.text
    assert resp.headers["X-ClickHouse-Exception-Code"] == "62"


def test_an_unknown_table_is_404_and_the_http_client_raises_query_error(server, http):
    assert http.post("/", content=b"SELECT * FROM tawag.nope").status_code == 404
    with pytest.raises(QueryError) as err:
        HttpClient(server.url).query("SELECT * FROM tawag.nope")
    assert err.value.code == 60


def test_the_execution_time_limit_applies(http):
    resp = http.post("/", content=b"SELECT getSetting('max_execution_time') AS t, "
                                  b"getSetting('readonly') AS ro")
    assert resp.text == f"{READ_LIMITS['max_execution_time']}\t2\n"


def test_http_client_refuses_writes():
    client = HttpClient("http://127.0.0.1:1/")
    with pytest.raises(ReadOnlyClientError):
        client.insert_rows(schema.CDRS, [{"tenant": "x"}])
    with pytest.raises(ReadOnlyClientError):
        client.command("DROP TABLE tawag.cdrs")


# --- the guard itself (pure) ------------------------------------------------------------


@pytest.mark.parametrize("sql", [
    "SELECT ';' AS semi, 'DROP TABLE x' AS s",
    "  -- a comment; with a semicolon\n SELECT 1;  ",
    "WITH 1 AS x SELECT x",
    "(SELECT 1) UNION ALL (SELECT 2)",
    "SHOW TABLES", "DESCRIBE tawag.cdrs", "desc tawag.cdrs", "EXPLAIN SELECT 1",
    "EXISTS TABLE tawag.cdrs", "SELECT `file`(1)", "/* c */ SELECT 1 # trailing",
])
def test_read_statements_pass(sql):
    check_read_only(sql)


@pytest.mark.parametrize("sql", [
    "", "  ;  ", "SET readonly = 0", "USE system", "OPTIMIZE TABLE tawag.cdrs FINAL",
    "SYSTEM STOP MERGES", "SELECT 1; SELECT 2", "SELECT 'unterminated",
    "select * from URL('http://127.0.0.1:9/x', 'CSV')", "SELECT * FROM remote('h', db.t)",
    "KILL QUERY WHERE 1", "CREATE TABLE t (a UInt8) ENGINE = Memory",
])
def test_everything_else_is_refused(sql):
    with pytest.raises(ReadOnlyViolation):
        check_read_only(sql)


def test_the_statement_loses_only_its_trailing_semicolons():
    assert check_read_only("SELECT 'a;' ;; -- bye") == "SELECT 'a;'"


def test_trailing_format_is_found_outside_literals():
    assert trailing_format("SELECT 1 FORMAT JSONEachRow;") == "JSONEachRow"
    assert trailing_format("SELECT 'FORMAT CSV'") is None
