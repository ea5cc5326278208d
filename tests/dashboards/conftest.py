"""Shared fixtures of the dashboard tests: a real embedded warehouse with known data for
two tenants, served read-only over ``warehouse.http_server``, a users file, and AppTest
helpers that log a user in and open a page.

The app finds the warehouse and the users file the way it does in production, through
``TAWAG_*`` settings (``TAWAG_DATA_DIR`` holds ``dashboard-users.toml``).
"""

from __future__ import annotations

import wave
from collections.abc import Iterator
from pathlib import Path

import dash_known_data as known_data
import pytest
import streamlit as st
from dash_app import PASSWORDS, PORT, USERS

from dashboards.auth import hash_password
from warehouse import schema
from warehouse.client import ChdbClient
from warehouse.http_server import make_server, serve_in_thread
from warehouse.migrate import migrate
from warehouse.readers import ReaderPool
from warehouse.users import Authenticator, service_password


def users_toml() -> str:
    lines = []
    for name, user in USERS.items():
        lines += [f"[users.{name}]", f'role = "{user.role}"',
                  f'password = "{hash_password(PASSWORDS[name])}"']
        if user.tenant:
            lines.append(f'tenant = "{user.tenant}"')
    return "\n".join(lines) + "\n"


def write_silence(path: Path, seconds: float = 0.5, rate: int = 8000) -> None:
    """A playable WAV (16-bit mono silence), as the recording decoder leaves them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"\0\0" * int(seconds * rate))


@pytest.fixture(autouse=True)
def fresh_caches() -> Iterator[None]:
    """Streamlit's caches are per process: settings and results must not leak across tests."""
    st.cache_data.clear()
    st.cache_resource.clear()
    yield
    st.cache_data.clear()
    st.cache_resource.clear()


@pytest.fixture(scope="module")
def warehouse_dir(tmp_path_factory) -> Iterator[Path]:
    """The known data of :mod:`known_data`, served on PORT for the module's tests."""
    root = tmp_path_factory.mktemp("dash")
    store = ChdbClient(root / "chdb")
    migrate(store)
    known_data.load(store)
    reader = ReaderPool(root / "chdb", size=2, database=schema.DATABASE)
    (root / "dashboard-users.toml").write_text(users_toml())
    server = make_server("127.0.0.1", PORT, reader, Authenticator(
        root / "dashboard-users.toml", service_password(root)))
    thread = serve_in_thread(server)
    write_silence(root / "recordings" / known_data.RECORDING)
    yield root
    server.shutdown()
    server.server_close()
    thread.join()
    reader.close()
    store.close()


@pytest.fixture
def app_env(warehouse_dir, monkeypatch) -> Path:
    """Settings pointing at the served warehouse and the users file."""
    monkeypatch.setenv("TAWAG_WAREHOUSE_MODE", "embedded")
    monkeypatch.setenv("TAWAG_WAREHOUSE_HOST", "127.0.0.1")
    monkeypatch.setenv("TAWAG_WAREHOUSE_HTTP_PORT", str(PORT))
    monkeypatch.setenv("TAWAG_DATA_DIR", str(warehouse_dir))
    monkeypatch.setenv("TAWAG_TENANT", "acme")
    return warehouse_dir
