"""Restarts and crashes on the real stack lose nothing and duplicate nothing.

Tried, while sipp keeps placing calls through the edge:
- the Faust worker is killed with SIGKILL (no clean shutdown, offsets maybe uncommitted);
- the warehouse process (loader + chdb owner) is killed with SIGKILL mid-run;
- Kamailio is restarted (the ingest bridge's evapi connection drops and must come back
  at once; registrations are in memory, so the extensions register again).
Asserted afterwards: every call sipp completed has exactly one closed CDR with the right
disposition, no other CDR exists, and no raw event is stored twice.

Provisioning through the real broker: the supervisor applied the test's TOML at start
(and recorded it in the compacted topic); ``tawag provision`` then changes a password
live; the file the stack started from is spoilt, and Kamailio is restarted through the
supervisor: it comes back with the live change, restored from the topic without reading
any file, so REGISTER works with the new password only.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from stack_harness import running_stack, stack_settings

from core.settings import REPO_ROOT, Settings, to_environ
from edge import provision, sipp
from tawag.supervisor import Supervisor
from warehouse.client import service_client

pytestmark = pytest.mark.integration

DEADLINE_S = 120
AGENT, AGENT_PORT, AGENT_MEDIA = "102", 27102, 34700
CALLER_PORT, CALLER_MEDIA = 27110, 34600
PASSWORDS = {"101": "restart-pw-101", "102": "restart-pw-102"}
NEW_102 = "changed-live-102"

PROVISIONING = f"""
[tenant.acme]
domain = "pbx.test"

[tenant.acme.extension.101]
password = "{PASSWORDS['101']}"

[tenant.acme.extension.102]
password = "{PASSWORDS['102']}"
"""


@pytest.fixture(scope="module")
def supervisor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Supervisor]:
    settings = stack_settings(tmp_path_factory, "restart", block=27000, rtp_min=34000,
                              provisioning=PROVISIONING)
    with running_stack(settings) as sup:
        yield sup


def answered_call(edge: sipp.Edge) -> str:
    uas = sipp.start_uas_answer(edge, port=AGENT_PORT, media_port=AGENT_MEDIA)
    result = sipp.call(edge, "101", AGENT, port=CALLER_PORT, media_port=CALLER_MEDIA,
                       talk_ms=300, password=PASSWORDS["101"])
    uas.wait()
    assert result.ok, result.received()
    return result.call_id


def tawag_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """``tawag ...`` as an operator runs it against this stack (settings via TAWAG_*)."""
    return subprocess.run([sys.executable, "-m", "tawag", *args],
                          env=os.environ | to_environ(settings), cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60, check=False)


def wait_for_cdrs(settings: Settings, call_ids: list[str]) -> list[dict]:
    client = service_client(settings)
    deadline = time.monotonic() + DEADLINE_S
    while True:
        rows = client.query(
            "SELECT call_id, disposition FROM cdrs FINAL "
            "WHERE closed AND call_id IN {ids:Array(String)}", {"ids": call_ids})
        if len(rows) == len(call_ids):
            return rows
        assert time.monotonic() < deadline, f"{len(rows)} of {len(call_ids)} calls arrived"
        time.sleep(0.25)


def test_crashes_and_an_edge_restart_lose_and_duplicate_nothing(
        supervisor: Supervisor, tmp_path: Path):
    settings = supervisor.settings
    edge = sipp.Edge.from_settings(settings, tmp_path)
    assert sipp.register(edge, AGENT, port=AGENT_PORT, password=PASSWORDS[AGENT]).ok
    placed: list[str] = []
    calls_done = threading.Semaphore(0)
    stop = threading.Event()

    def keep_calling() -> None:
        while not stop.is_set():
            placed.append(answered_call(edge))
            calls_done.release()

    caller = threading.Thread(target=keep_calling, daemon=True)
    caller.start()
    try:
        for name in ("streams", "warehouse"):
            for _ in range(2):  # let calls flow before and after each crash
                assert calls_done.acquire(timeout=30)
            supervisor.restart(name, signal.SIGKILL)
    finally:
        stop.set()
        caller.join(60)
    wait_for_cdrs(settings, placed)

    # a live change through the CLI, recorded in the topic
    changed = tmp_path / "changed.toml"
    changed.write_text(PROVISIONING.replace(PASSWORDS["102"], NEW_102))
    cli = tawag_cli(settings, "provision", str(changed))
    assert cli.returncode == 0, cli.stderr
    assert sipp.register(edge, AGENT, port=AGENT_PORT, password=NEW_102).ok
    # the file the stack started from is now unreadable: a restart must not need it
    settings.provisioning_file.write_text("[tenant.acme\n")
    spoilt = tawag_cli(settings, "provision", "--check", str(settings.provisioning_file))
    assert spoilt.returncode == 1
    assert spoilt.stderr.startswith(f"{settings.provisioning_file}:1: not valid TOML")

    supervisor.restart("kamailio")

    assert sipp.register(edge, AGENT, port=AGENT_PORT, password=PASSWORDS[AGENT],
                         expected_code=403).ok
    assert sipp.register(edge, AGENT, port=AGENT_PORT, password=NEW_102).ok
    recorded = provision.read_states(settings)["acme"]
    assert recorded.creds[f"{AGENT}@pbx.test"] == provision.ha1(AGENT, "pbx.test", NEW_102)
    assert NEW_102 not in recorded.to_json().decode()
    placed.append(answered_call(edge))

    rows = wait_for_cdrs(settings, placed)
    assert {r["disposition"] for r in rows} == {"answered"}
    client = service_client(settings)
    every = client.query("SELECT call_id, count() AS n FROM cdrs FINAL GROUP BY call_id")
    assert sorted(r["call_id"] for r in every) == sorted(placed)
    assert all(r["n"] == 1 for r in every)
    (dupes,) = client.query("SELECT count() - uniqExact(event_id) AS extra FROM call_events")
    assert dupes["extra"] == 0
