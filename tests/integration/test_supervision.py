"""``tawag up`` keeps the stack up when a part of it dies, on the real stack.

The stack is started exactly as an operator does: ``tawag up --no-demo`` as a process of
its own (on this module's ports), so its own watch loop, signal handling and state file
are what is tested. Then, from outside, as an operator's ``kill -9`` would:

- a second ``tawag up`` refuses to start over the running stack;
- the Faust worker (``streams``) is SIGKILLed: the supervisor starts it again with a new
  PID, Kamailio and rtpengine keep their PIDs and keep answering (readiness checks and a
  REGISTER), ``tawag status`` shows the restart and its SIGKILL, and a call placed after
  the kill gets its CDR in the warehouse;
- Ctrl-C (SIGINT) to ``tawag up`` stops every component by PID.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from stack_harness import stack_settings, wait_for

from core.settings import REPO_ROOT, Settings, to_environ
from edge import control as edge_ctl
from edge import sipp
from tawag.supervisor import read_pid, read_state, stop_recorded
from warehouse.client import service_client

pytestmark = pytest.mark.integration

STACK = ("kafka", "rtpengine", "kamailio", "ingest", "streams", "live", "warehouse", "dashboard",
         "api")
AGENT, AGENT_PORT, AGENT_MEDIA = "102", 25102, 38700
CALLER_PORT, CALLER_MEDIA = 25110, 38600
PASSWORDS = {"101": "super-pw-101", "102": "super-pw-102"}

PROVISIONING = f"""
[tenant.acme]
domain = "pbx.test"

[tenant.acme.extension.101]
password = "{PASSWORDS['101']}"

[tenant.acme.extension.102]
password = "{PASSWORDS['102']}"
"""


@dataclass
class Up:
    settings: Settings
    proc: subprocess.Popen
    output: Path

    def text(self) -> str:
        return self.output.read_text()


def tawag_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tawag", *args],
                          env=os.environ | to_environ(settings), cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    settings = stack_settings(tmp_path_factory, "super", block=25000, rtp_min=38000,
                              provisioning=PROVISIONING)
    output = tmp_path_factory.mktemp("super-out") / "tawag-up.log"
    with open(output, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tawag", "up", "--no-demo"],
                                env=os.environ | to_environ(settings), cwd=REPO_ROOT,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    running = Up(settings, proc, output)
    try:
        wait_for("tawag up to say the stack is up",
                 lambda: "Press Ctrl-C" in running.text() or proc.poll() is not None, 240)
        assert proc.poll() is None, running.text()
        yield running
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        stop_recorded(settings)  # whatever a failed test left running, by PID


def answered_call(edge: sipp.Edge) -> str:
    uas = sipp.start_uas_answer(edge, port=AGENT_PORT, media_port=AGENT_MEDIA)
    result = sipp.call(edge, "101", AGENT, port=CALLER_PORT, media_port=CALLER_MEDIA,
                       talk_ms=300, password=PASSWORDS["101"])
    uas.wait()
    assert result.ok, result.received()
    return result.call_id


def closed_cdr(settings: Settings, call_id: str) -> list[dict]:
    return service_client(settings).query(
        "SELECT call_id, disposition FROM cdrs FINAL WHERE closed AND call_id = {id:String}",
        {"id": call_id})


def test_a_second_tawag_up_refuses_to_start_over_the_running_stack(up: Up):
    pids = {name: read_pid(up.settings, name).pid for name in STACK}
    second = tawag_cli(up.settings, "up", "--no-demo")
    assert second.returncode == 1
    assert second.stderr.startswith(f"tawag: already running: {', '.join(STACK)}")
    assert {name: read_pid(up.settings, name).pid for name in STACK} == pids


def test_kill_9_of_the_faust_worker_restarts_it_alone(up: Up, tmp_path: Path):
    settings = up.settings
    pids = {name: read_pid(settings, name).pid for name in STACK}

    killed_at = time.monotonic()
    os.kill(pids["streams"], signal.SIGKILL)
    new_pid = wait_for("streams running again with a new PID", lambda: (
        (r := read_pid(settings, "streams")) and r.pid != pids["streams"] and r.pid), 120)
    wait_for("streams ready again (consumer group joined, recorded up)",
             lambda: read_state(settings)["streams"]["state"] == "up", 120)
    down_s = time.monotonic() - killed_at
    print(f"\nstreams: SIGKILL -> ready again in {down_s:.1f} s "
          f"(pid {pids['streams']} -> {new_pid})")

    # the SIP edge and every other component never stopped
    assert {name: read_pid(settings, name).pid for name in STACK if name != "streams"} \
        == {name: pid for name, pid in pids.items() if name != "streams"}
    assert edge_ctl.kamailio_ready(settings)
    assert edge_ctl.rtpengine_ready(settings)
    edge = sipp.Edge.from_settings(settings, tmp_path)
    assert sipp.register(edge, AGENT, port=AGENT_PORT, password=PASSWORDS[AGENT]).ok

    record = read_state(settings)["streams"]
    assert (record["restarts"], record["last_exit"]) == (1, "killed by SIGKILL")
    assert f"streams (pid {pids['streams']}) exited: killed by SIGKILL; restarting in 1 s" \
        in up.text()
    status = tawag_cli(settings, "status")
    print(status.stdout)
    assert status.returncode == 0, status.stdout
    rows = {line.split()[0]: line for line in status.stdout.splitlines()}
    assert rows["streams"].split()[:3] == ["streams", "up", str(new_pid)]
    assert rows["streams"].split()[4] == "1"
    assert "killed by SIGKILL" in rows["streams"]
    assert rows["kamailio"].split()[:3] == ["kamailio", "up", str(pids["kamailio"])]
    assert rows["kamailio"].split()[4] == "0"

    # the restarted worker does its job: a call placed now gets its CDR
    call_id = answered_call(edge)
    rows = wait_for(f"the CDR of call {call_id}", lambda: closed_cdr(settings, call_id), 120)
    assert [r["disposition"] for r in rows] == ["answered"]


def test_ctrl_c_stops_every_component_by_pid(up: Up):
    running = [read_pid(up.settings, name) for name in STACK]
    assert all(running)
    up.proc.send_signal(signal.SIGINT)
    assert up.proc.wait(120) == 0, up.text()
    assert not [r.name for r in running if r.alive()]
    assert not [n for n in STACK if (up.settings.run_dir / "supervisor" / f"{n}.pid").exists()]
    assert read_state(up.settings) == {}
