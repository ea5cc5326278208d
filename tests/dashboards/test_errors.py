"""Every page shows a warehouse failure through the one error surface of
:mod:`dashboards.errors`: the same words, a log line, no traceback and no figures.

Two failures, both real: a port where nothing listens (the warehouse is down), and a
warehouse that answers every query with a ClickHouse exception (a query error).
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from dash_app import open_page

from dashboards.streamlit_app import PAGES

PAGE_NAMES = [file.removesuffix(".py") for file, _, _ in PAGES]
CLICKHOUSE_ERROR = ("Code: 60. DB::Exception: Unknown table expression identifier "
                    "'tawag.cdrs' in scope SELECT. (UNKNOWN_TABLE)")


class FailingWarehouse(BaseHTTPRequestHandler):
    """ClickHouse's HTTP interface when every query fails: 404 and the exception text."""

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = CLICKHOUSE_ERROR.encode()
        self.send_response(404)
        self.send_header("X-ClickHouse-Exception-Code", "60")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST

    def log_message(self, *args: object) -> None:
        pass


def point_settings_at(monkeypatch: pytest.MonkeyPatch, port: int, data_dir) -> None:
    monkeypatch.setenv("TAWAG_WAREHOUSE_MODE", "embedded")
    monkeypatch.setenv("TAWAG_WAREHOUSE_HOST", "127.0.0.1")
    monkeypatch.setenv("TAWAG_WAREHOUSE_HTTP_PORT", str(port))
    monkeypatch.setenv("TAWAG_DATA_DIR", str(data_dir))
    monkeypatch.setenv("TAWAG_TENANT", "acme")


@pytest.fixture
def warehouse_down(monkeypatch, tmp_path) -> Iterator[int]:
    """A port bound but not listening: every connection is refused while the test runs."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        point_settings_at(monkeypatch, port, tmp_path)
        yield port


@pytest.fixture
def warehouse_failing(monkeypatch, tmp_path) -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FailingWarehouse)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    point_settings_at(monkeypatch, server.server_address[1], tmp_path)
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join()


def errors_after_running_the_sql_box(page: str, at):
    """The SQL page fails at the Run button too: click it, the error must be the same."""
    if page == "sql":
        at = at.button(key="sql_run").click().run()
        assert not at.exception, [e.value for e in at.exception]
    return [e.value for e in at.error]


@pytest.mark.parametrize("page", PAGE_NAMES)
def test_a_warehouse_that_is_down_shows_the_one_error_surface(page, warehouse_down, caplog):
    caplog.set_level(logging.WARNING, logger="dashboards.errors")
    at = open_page(page)

    shown = errors_after_running_the_sql_box(page, at)

    expected = (f"warehouse not reachable at http://127.0.0.1:{warehouse_down}/ — is the "
                "stack running? `tawag status`")
    assert shown and set(shown) == {expected}
    assert not at.metric and not at.dataframe
    assert any(r.name == "dashboards.errors" and "not reachable" in r.getMessage()
               for r in caplog.records)


@pytest.mark.parametrize("page", PAGE_NAMES)
def test_a_query_error_shows_the_one_error_surface(page, warehouse_failing, caplog):
    caplog.set_level(logging.WARNING, logger="dashboards.errors")
    at = open_page(page)

    shown = errors_after_running_the_sql_box(page, at)

    assert shown and all(s.startswith("the warehouse could not answer: ") for s in shown)
    assert all("UNKNOWN_TABLE" in s for s in shown)
    assert not at.metric and not at.dataframe
    assert any(r.name == "dashboards.errors" and "UNKNOWN_TABLE" in r.getMessage()
               for r in caplog.records)


@pytest.mark.parametrize("page", [p for p in PAGE_NAMES if p != "sql"])
def test_the_page_stops_at_the_error(page, warehouse_down):
    at = open_page(page)
    assert len(at.error) == 1
    assert not at.subheader and not at.info
