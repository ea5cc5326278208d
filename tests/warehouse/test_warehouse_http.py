"""The ClickHouse HTTP interface, on a real chdb store and a real socket: authenticated,
checked on ClickHouse's parse, scoped to the user's tenant."""

import csv
import io
import json
from datetime import timedelta

import httpx
import pytest
from conftest import SETTINGS, T0, cdr_records, make_cdr

from core.records import Disposition
from warehouse import guard, schema
from warehouse.client import HttpClient, QueryError, ReadOnlyClientError
from warehouse.http_server import make_server, serve_in_thread
from warehouse.loader import Loader, routes_for
from warehouse.queries import cdr as q
from warehouse.readers import ReaderPool
from warehouse.service import READ_LIMITS
from warehouse.users import SERVICE_USER, Authenticator, add_user

PORT = 38123
SERVICE_KEY = "service-secret"
ADMIN = (SERVICE_USER, SERVICE_KEY)


@pytest.fixture
def users(tmp_path):
    path = tmp_path / "users.toml"
    return path, {"alice": add_user(path, "alice", tenant="acme"),
                  "bob": add_user(path, "bob", tenant="beta"),
                  "root": add_user(path, "root", tenant=None, admin=True)}


@pytest.fixture
def server(store, tmp_path, users):
    calls = [make_cdr("c1", disposition=Disposition.ANSWERED, closed=True, version=2),
             make_cdr("c2", started_at=T0 + timedelta(minutes=5), caller="+7 'quoted'")]
    Loader(store, routes_for(SETTINGS), lambda d: None).load(cdr_records(calls))
    reader = ReaderPool(tmp_path / "chdb", size=2, database=schema.DATABASE)
    srv = make_server("127.0.0.1", PORT, reader, Authenticator(users[0], SERVICE_KEY))
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
    with httpx.Client(base_url=server.url, timeout=30, auth=ADMIN) as client:
        yield client


def test_ping(http):
    resp = http.get("/ping")
    assert (resp.status_code, resp.text) == (200, "Ok.\n")


def test_http_client_binds_parameters(server):
    client = HttpClient(server.url, user=SERVICE_USER, password=SERVICE_KEY)
    rows = client.query(f"SELECT call_id, version FROM {schema.CDRS} FINAL "
                        "WHERE tenant = {t:String} AND caller = {caller:String}",
                        {"t": "acme", "caller": "+7 'quoted'"})
    assert rows == [{"call_id": "c2", "version": 1}]
    client.close()


def test_named_queries_give_the_same_answer_over_http(server, store):
    client = HttpClient(server.url, user=SERVICE_USER, password=SERVICE_KEY)
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
    ("INSERT INTO tawag.cdrs (tenant, call_id) VALUES ('x', 'y')", "only one SELECT"),
    ("INSERT INTO tawag.cdrs (tenant, call_id) SELECT 'x', 'y'", "InsertQuery statements"),
    ("DROP TABLE tawag.cdrs", "DropQuery statements"),
    ("ALTER TABLE tawag.cdrs DELETE WHERE 1", "only one SELECT"),
])
def test_writes_are_refused_with_403(http, store, sql, reason):
    resp = http.post("/", content=sql.encode())
    assert resp.status_code == 403
    assert resp.text.startswith("Code: 164. DB::Exception: tawag warehouse is read-only: ")
    assert reason in resp.text
    assert resp.headers["X-ClickHouse-Exception-Code"] == "164"
    assert store.query("SELECT count() AS n FROM tawag.cdrs")[0]["n"] == 2


@pytest.mark.parametrize("sql, reason", [
    ("SELECT * FROM file('/etc/passwd', 'LineAsString')", "table function file()"),
    ("SELECT 1 INTO OUTFILE '/tmp/x'", "INTO OUTFILE"),
])
def test_escapes_are_refused_with_403_access_denied(http, store, sql, reason):
    resp = http.post("/", content=sql.encode())
    assert resp.status_code == 403
    assert reason in resp.text
    assert resp.headers["X-ClickHouse-Exception-Code"] == "497"
    assert store.query("SELECT count() AS n FROM tawag.cdrs")[0]["n"] == 2


def test_several_statements_are_a_syntax_error(http):
    resp = http.post("/", content=b"SELECT 1; DROP TABLE cdrs")
    assert resp.status_code == 400 and "Multi-statements are not allowed" in resp.text


def test_the_reader_session_refuses_writes_even_past_the_guard(server):
    with pytest.raises(QueryError) as err:
        server.executor.execute("INSERT INTO tawag.cdrs (tenant, call_id) SELECT 'x', 'y'",
                                "TSV")
    assert err.value.code == 164


def test_a_syntax_error_is_passed_through_as_400(http):
    resp = http.post("/", content=b"SELECT FROM WHERE")
    assert resp.status_code == 400
    assert "Code: 62. DB::Exception: Syntax error" in resp.text
    assert resp.headers["X-ClickHouse-Exception-Code"] == "62"


def test_an_unknown_column_is_404_and_the_http_client_raises_query_error(server, http):
    assert http.post("/", content=b"SELECT nope FROM tawag.cdrs").status_code == 404
    with pytest.raises(QueryError) as err:
        HttpClient(server.url, user=SERVICE_USER, password=SERVICE_KEY).query(
            "SELECT nope FROM tawag.cdrs")
    assert err.value.code == 47


def test_url_limits_only_lower_the_servers():
    lowered = guard.lowered_limits({"max_execution_time": "100000", "max_result_rows": "5",
                                    "readonly": "0", "max_memory_usage": "-1"})
    assert lowered == {**READ_LIMITS, "max_result_rows": 5}


def test_a_lower_limit_from_the_url_applies(server):
    resp = httpx.post(server.url, auth=ADMIN, timeout=30, params={"max_execution_time": "1"},
                      content=b"SELECT sum(cityHash64(a.number, b.number)) FROM "
                              b"numbers(1000000) AS a CROSS JOIN numbers(1000000) AS b")
    assert resp.headers["X-ClickHouse-Exception-Code"] == "159"


def test_http_client_refuses_writes():
    client = HttpClient("http://127.0.0.1:1/")
    with pytest.raises(ReadOnlyClientError):
        client.insert_rows(schema.CDRS, [{"tenant": "x"}])
    with pytest.raises(ReadOnlyClientError):
        client.command("DROP TABLE tawag.cdrs")


# --- authentication -----------------------------------------------------------------------


def test_no_credentials_is_401_authentication_failed(server):
    resp = httpx.post(server.url, content=b"SELECT 1")
    assert resp.status_code == 401 and resp.headers["X-ClickHouse-Exception-Code"] == "516"
    assert resp.text.startswith("Code: 516. DB::Exception: default: Authentication failed")
    assert resp.headers["WWW-Authenticate"].startswith("Basic")


@pytest.mark.parametrize("how", ["basic", "headers", "params"])
def test_wrong_password_is_403_authentication_failed(server, how):
    kwargs = {"basic": {"auth": ("alice", "nope")},
              "headers": {"headers": {"X-ClickHouse-User": "alice", "X-ClickHouse-Key": "no"}},
              "params": {"params": {"user": "alice", "password": "nope"}}}[how]
    resp = httpx.post(server.url, content=b"SELECT 1", **kwargs)
    assert resp.status_code == 403 and resp.headers["X-ClickHouse-Exception-Code"] == "516"
    assert "(AUTHENTICATION_FAILED)" in resp.text


@pytest.mark.parametrize("how", ["basic", "headers", "params"])
def test_a_tenant_user_sees_its_own_rows_whichever_way_it_authenticates(server, users, how):
    password = users[1]["bob"]
    kwargs = {"basic": {"auth": ("bob", password)},
              "headers": {"headers": {"X-ClickHouse-User": "bob", "X-ClickHouse-Key": password}},
              "params": {"params": {"user": "bob", "password": password}}}[how]
    resp = httpx.post(server.url, content=b"SELECT count() FROM tawag.cdrs WHERE 1 OR "
                                          b"tenant = 'acme'", **kwargs)
    assert (resp.status_code, resp.text) == (200, "0\n")
    alice = httpx.post(server.url, content=b"SELECT count() FROM cdrs FINAL",
                       auth=("alice", users[1]["alice"]))
    assert alice.text == "2\n"


def test_a_tenant_user_cannot_widen_its_scope(server, users):
    resp = httpx.post(server.url, params={"tawag_tenant": "acme"},
                      auth=("bob", users[1]["bob"]), content=b"SELECT count() FROM cdrs")
    assert resp.text == "0\n"


def test_an_admin_reads_every_tenant_and_may_narrow(server, users):
    root = ("root", users[1]["root"])
    assert httpx.post(server.url, auth=root, content=b"SELECT count() FROM cdrs").text \
        == "2\n"
    narrowed = httpx.post(server.url, auth=root, params={"tawag_tenant": "beta"},
                          content=b"SELECT count() FROM cdrs")
    assert narrowed.text == "0\n"


def test_users_added_later_can_log_in_at_once(server, users):
    password = add_user(users[0], "carol", tenant="acme")
    resp = httpx.post(server.url, auth=("carol", password), content=b"SELECT 1")
    assert resp.status_code == 200
