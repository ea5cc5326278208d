"""The owning process: migrates, serves reads, stops cleanly (in-process and as a child)."""

import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from core.settings import REPO_ROOT, load, to_environ
from warehouse.client import connect
from warehouse.migrate import load_migrations
from warehouse.service import run

DEAD_KAFKA = "127.0.0.1:38126"  # nothing listens here: the loader must keep retrying


def settings_for(tmp_path, port):
    return load({}, data_dir=tmp_path, warehouse_http_port=port, kafka_bootstrap=DEAD_KAFKA)


@pytest.mark.parametrize("with_loader", [False, True])
def test_run_serves_a_migrated_store_until_stopped(tmp_path, with_loader):
    settings = settings_for(tmp_path, 38124)
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(target=run, args=(settings, stop),
                              kwargs={"load": with_loader, "ready": ready})
    thread.start()
    try:
        assert ready.wait(30)
        assert httpx.get(settings.warehouse_url + "ping").text == "Ok.\n"
        client = connect(settings)
        rows = client.query("SELECT count() AS n FROM schema_migrations FINAL")
        assert rows == [{"n": len(load_migrations())}]
        client.close()
    finally:
        stop.set()
        thread.join(60)
    assert not thread.is_alive()
    with pytest.raises(httpx.ConnectError):
        httpx.get(settings.warehouse_url + "ping")


def wait_for_ping(url, proc, deadline_s=60.0):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, "warehouse exited early"
        try:
            if httpx.get(url + "ping", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("warehouse did not answer /ping in time")


def test_python_m_warehouse_stops_cleanly_on_sigterm(tmp_path):
    settings = settings_for(tmp_path, 38125)
    env = {**os.environ, **to_environ(settings)}
    log_path = tmp_path / "warehouse.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "warehouse"], cwd=REPO_ROOT, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_ping(settings.warehouse_url, proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log_path.read_text()
    assert "warehouse ready: http://127.0.0.1:38125/" in text
    assert "warehouse stopped" in text
