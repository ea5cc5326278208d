"""A warehouse HTTP interface on a free port, over a store with two tenants' calls.

For the tests that drive it with real ClickHouse clients (clickhouse-connect, the JDBC
driver): tenant ``acme`` has calls c1, c2; tenant ``beta`` has b1. Users: ``alice``
(acme), ``bob`` (beta), ``root`` (administrator).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from conftest import SETTINGS, T0, cdr_records, make_cdr

from core.records import Disposition
from warehouse import schema
from warehouse.client import ChdbClient
from warehouse.http_server import WarehouseHTTPServer, make_server, serve_in_thread
from warehouse.loader import Loader, routes_for
from warehouse.migrate import migrate
from warehouse.readers import ReaderPool
from warehouse.users import Authenticator, add_user

SERVICE_KEY = "service-secret"


@dataclass(frozen=True)
class Served:
    server: WarehouseHTTPServer
    passwords: dict[str, str]

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])


@contextmanager
def serve(tmp_path: Path) -> Iterator[Served]:
    store = ChdbClient(tmp_path / "chdb")
    try:
        migrate(store)
        calls = [make_cdr("c1", disposition=Disposition.ANSWERED, closed=True, version=2),
                 make_cdr("c2", started_at=T0 + timedelta(minutes=5), caller="+7 'quoted'"),
                 make_cdr("b1", tenant="beta", caller="+79990000000")]
        Loader(store, routes_for(SETTINGS), lambda d: None).load(cdr_records(calls))
        users = tmp_path / "users.toml"
        passwords = {"alice": add_user(users, "alice", tenant="acme"),
                     "bob": add_user(users, "bob", tenant="beta"),
                     "root": add_user(users, "root", tenant=None, admin=True)}
        reader = ReaderPool(tmp_path / "chdb", size=2, database=schema.DATABASE)
        srv = make_server("127.0.0.1", 0, reader, Authenticator(users, SERVICE_KEY))
        thread = serve_in_thread(srv)
        try:
            yield Served(srv, passwords)
        finally:
            srv.shutdown()
            srv.server_close()
            thread.join()
            reader.close()
    finally:
        store.close()
