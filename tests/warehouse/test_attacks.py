"""The attack corpus (attack_corpus.py) against the real HTTP interface, as tenant user
alice of acme, and against the SQL box as acme; plus a property test that quoting,
comments and whitespace never change the verdict."""

from __future__ import annotations

import json

import httpx
import pytest
from attack_corpus import CORPUS, MAY_SUCCEED
from conftest import SETTINGS, cdr_records, make_cdr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from warehouse import guard, schema
from warehouse.client import HttpClient, QueryError
from warehouse.http_server import make_server, serve_in_thread
from warehouse.loader import Loader, routes_for
from warehouse.queries.sql_box import SqlRefused, run_statement
from warehouse.readers import ReaderPool
from warehouse.users import SERVICE_USER, Authenticator, add_user

PORT = 38124
SERVICE_KEY = "attack-service-key"
FILE_CANARY = "CANARY-FILE-5e1f0c"
ROW_CANARY = "beta-canary-9a7d"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from warehouse.client import ChdbClient
    from warehouse.migrate import migrate

    root = tmp_path_factory.mktemp("attack")
    store = ChdbClient(root / "chdb")
    migrate(store)
    Loader(store, routes_for(SETTINGS), lambda d: None).load(cdr_records([
        make_cdr("a1"), make_cdr(ROW_CANARY, tenant="beta")]))
    canary = root / "canary.txt"
    canary.write_text(FILE_CANARY + "\n")
    users = root / "users.toml"
    password = add_user(users, "alice", tenant="acme")
    pool = ReaderPool(root / "chdb", size=2, database=schema.DATABASE)
    server = make_server("127.0.0.1", PORT, pool, Authenticator(users, SERVICE_KEY))
    thread = serve_in_thread(server)
    store.command("USE tawag")
    try:
        yield {"root": root, "canary": canary, "server": server, "store": store,
               "alice": ("alice", password)}
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
        pool.close()
        store.close()


def _statement(stack, sql: str) -> str:
    return sql.replace("{canary}", str(stack["canary"])).replace(
        "{out}", str(stack["root"] / "outfile"))


def _no_leak(stack, text: str) -> None:
    assert FILE_CANARY not in text
    assert ROW_CANARY not in text
    assert not (stack["root"] / "outfile").exists()


IDS = [f"{i:02d}-{kind}" for i, (kind, _) in enumerate(CORPUS)]


def test_the_corpus_is_broad():
    assert len(CORPUS) >= 40
    assert {kind for kind, _ in CORPUS} >= {
        "table function", "scalar function", "subquery", "cte", "settings", "format",
        "into outfile", "system", "dictionary", "unbounded", "multi-statement",
        "cross-tenant"}


@pytest.mark.parametrize("kind, sql", CORPUS, ids=IDS)
def test_http_as_a_tenant_user(stack, kind, sql):
    resp = httpx.post(stack["server"].url, auth=stack["alice"], timeout=60,
                      params={"param_t": "system.users"},
                      content=_statement(stack, sql).encode())
    _no_leak(stack, resp.text)
    if kind in MAY_SUCCEED and resp.status_code == 200:
        return
    assert resp.status_code in (400, 403, 404, 500), resp.text
    assert resp.headers["X-ClickHouse-Exception-Code"], resp.text


@pytest.mark.parametrize("kind, sql", CORPUS, ids=IDS)
def test_sql_box_over_http_as_a_tenant(stack, kind, sql):
    client = HttpClient(stack["server"].url, user=SERVICE_USER, password=SERVICE_KEY)
    try:
        result = run_statement(client, _statement(stack, sql), tenant="acme")
    except (SqlRefused, QueryError) as exc:
        _no_leak(stack, str(exc))
        return
    finally:
        client.close()
    assert kind in MAY_SUCCEED, f"ran: {sql}"
    _no_leak(stack, result.frame.to_json())


@pytest.mark.parametrize("kind, sql", CORPUS, ids=IDS)
def test_sql_box_in_process_as_a_tenant(stack, kind, sql):
    try:
        result = run_statement(stack["store"], _statement(stack, sql), tenant="acme")
    except (SqlRefused, QueryError) as exc:
        _no_leak(stack, str(exc))
        return
    assert kind in MAY_SUCCEED, f"ran: {sql}"
    _no_leak(stack, result.frame.to_json())


# --- the verdict does not depend on spelling ---------------------------------------------

ALLOWED = [
    [("kw", "SELECT"), ("id", "tenant"), ",", ("fn", "count"), "(", ")", ("kw", "FROM"),
     ("id", "tawag"), ".", ("id", "cdrs"), ("kw", "GROUP"), ("kw", "BY"), ("id", "tenant")],
    [("kw", "WITH"), ("id", "x"), ("kw", "AS"), "(", ("kw", "SELECT"), ("id", "call_id"),
     ("kw", "FROM"), ("id", "cdrs"), ("kw", "FINAL"), ")", ("kw", "SELECT"), ("fn", "count"),
     "(", ")", ("kw", "FROM"), ("id", "x")],
    [("kw", "SELECT"), ("fn", "sum"), "(", ("id", "number"), ")", ("kw", "FROM"),
     ("id", "numbers"), "(", "10", ")"],
]
DENIED = [
    [("kw", "SELECT"), ("id", "file"), "(", "'/etc/hostname'", ")"],
    [("kw", "SELECT"), "*", ("kw", "FROM"), ("id", "system"), ".", ("id", "tables")],
    [("kw", "SELECT"), "1", ("kw", "SETTINGS"), ("id", "max_threads"), "=", "1"],
    [("kw", "SELECT"), "*", ("kw", "FROM"), ("id", "url"), "(", "'http://x/'", ",",
     "'CSV'", ")"],
]
GAPS = st.sampled_from([" ", "  ", "\n", "\t", " /* c; ' \" ` */ ", " -- x ' \n",
                        " /* SETTINGS x=1 */ ", "\n\n"])


@st.composite
def spelled(draw, tokens):
    out = []
    for token in tokens:
        if isinstance(token, tuple):
            kind, word = token
            if kind == "kw":
                word = "".join(c.upper() if draw(st.booleans()) else c.lower() for c in word)
            else:  # identifiers and function names: quoted any way ClickHouse allows
                word = draw(st.sampled_from([word, f"`{word}`", f'"{word}"']))
        else:
            word = token
        out.append(word)
        out.append(draw(GAPS))
    return draw(GAPS) + "".join(out)


def _verdict(store, sql: str) -> bool:
    try:
        tree = json.loads(store.query(guard.PARSE_SQL, {"q": sql})[0]["ast"])
        guard.check(tree)
    except guard.Refused:
        return False
    return True


@settings(max_examples=60, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_spelling_never_changes_the_verdict(stack, data):
    for tokens in ALLOWED:
        assert _verdict(stack["store"], data.draw(spelled(tokens)))
    for tokens in DENIED:
        assert not _verdict(stack["store"], data.draw(spelled(tokens)))
