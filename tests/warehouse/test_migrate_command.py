"""``tawag migrate`` (tawag.migrate_cmd): idempotent on a stopped store, read-only against a
running warehouse (only that process may open the chdb store)."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest
from conftest import SETTINGS

from tawag.migrate_cmd import PendingMigrations, migrate, warehouse_running
from warehouse import service
from warehouse.migrate import load_migrations

ALL = [m.name for m in load_migrations()]


def test_a_stopped_store_is_migrated_once(tmp_path):
    settings = replace(SETTINGS, data_dir=tmp_path, warehouse_http_port=28931)
    assert not warehouse_running(settings)
    assert migrate(settings) == ALL
    assert migrate(settings) == []  # idempotent: nothing new the second time


def test_a_running_warehouse_is_asked_not_opened(tmp_path):
    settings = replace(SETTINGS, data_dir=tmp_path, warehouse_http_port=28932)
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(target=service.run, args=(settings, stop),
                              kwargs={"load": False, "ready": ready}, daemon=True)
    thread.start()
    try:
        assert ready.wait(30)
        assert warehouse_running(settings)
        # opening the store here would fail (the service owns it); the answer comes over HTTP
        assert migrate(settings) == []
    finally:
        stop.set()
        thread.join(30)


def test_a_running_warehouse_that_lacks_a_migration_is_reported(tmp_path, monkeypatch):
    settings = replace(SETTINGS, data_dir=tmp_path, warehouse_http_port=28933)
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(target=service.run, args=(settings, stop),
                              kwargs={"load": False, "ready": ready}, daemon=True)
    thread.start()
    try:
        assert ready.wait(30)
        extra = replace(load_migrations()[-1], version=99, name="0099_future")
        monkeypatch.setattr("tawag.migrate_cmd.load_migrations",
                            lambda: [*load_migrations(), extra])
        with pytest.raises(PendingMigrations, match="0099_future"):
            migrate(settings)
    finally:
        stop.set()
        thread.join(30)
