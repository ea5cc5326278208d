"""Client selection and error mapping (no server needed)."""

import pytest

from core.settings import load
from warehouse.client import (
    DriverClient,
    HttpClient,
    UnavailableError,
    WarehouseClient,
    connect,
    quote_identifier,
)


def test_connect_uses_the_owners_http_interface_in_embedded_mode():
    client = connect(load({}, warehouse_mode="embedded", warehouse_http_port=38130))
    assert isinstance(client, HttpClient) and isinstance(client, WarehouseClient)
    with pytest.raises(UnavailableError, match="not answering"):
        client.query("SELECT 1")


def test_connect_uses_the_native_driver_as_the_reader_in_server_mode():
    settings = load({}, warehouse_mode="server", clickhouse_reader_password="pw",
                    clickhouse_user="writer")
    client = connect(settings)  # clickhouse-driver connects lazily
    assert isinstance(client, DriverClient)
    assert client._client.connection.user == "tawag_dashboards"  # never the writer
    assert DriverClient(settings)._client.connection.user == "writer"


def test_connect_refuses_an_unknown_mode():
    with pytest.raises(ValueError, match="warehouse_mode"):
        connect(load({}, warehouse_mode="cloud"))


@pytest.mark.parametrize("name", ["tawag.cdrs; DROP", "a b", "`x`", "1abc", "a.b.c"])
def test_only_plain_identifiers_reach_sql_text(name):
    with pytest.raises(ValueError):
        quote_identifier(name)


def test_a_store_locked_by_another_process_is_unavailable(tmp_path):
    import subprocess
    import sys
    import textwrap

    from warehouse.client import ChdbClient

    path = tmp_path / "chdb"
    owner = ChdbClient(path)
    try:
        script = textwrap.dedent(f"""
            from warehouse.client import ChdbClient, UnavailableError
            try:
                ChdbClient({str(path)!r})
            except UnavailableError as exc:
                print("unavailable:", exc)
        """)
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                             timeout=60)
        assert "unavailable:" in out.stdout and "HTTP interface" in out.stdout
    finally:
        owner.close()
