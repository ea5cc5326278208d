"""Each part of the stack killed with ``kill -9`` under call traffic: no call lost.

The stack runs as an operator runs it: ``tawag up --no-demo`` as a process of its own
(its watch loop restarts what dies), on this module's ports. For each part in turn, one
sipp run places CALLS calls from 101 one at a time (every fifth to the busy 103, the rest
answered by 102); after KILL_AFTER of them the part's PID (from the supervisor's PID file)
gets SIGKILL from outside. Then:

- sipp's calls all end as planned (the SIP side never notices);
- the part comes back on its own: a new PID, ``up`` again, its restart counted in the
  state file and in ``tawag status``;
- every call of the run has exactly one closed CDR with the disposition sipp saw, and no
  other CDR exists;
- ``tawag.replay`` from ``tawag.call-events`` into a fresh store equals the live tables
  (CDRs, agent states and stats, callbacks, raw events), as in test_crash_replay.

Per part it prints how long the part was down (kill -> ready again) and how long until
its backlog was processed (kill -> the last CDR of the run closed in the warehouse).
The ingest bridge case depends on the edge's evapi buffer (kamailio.cfg EVAPI_DRAIN):
the events of the gap wait in Kamailio, which sends its last EVAPI_RESEND events again to
the new bridge; the bridge drops those already spooled or in Kafka (``ingest.repeats``),
so ``call_events`` holds each event of the run once. (Before it did, the agent stage
answered each of those repeats by resending the agent's records of the day, and the
agent tables lagged minutes behind: the case failed on the replay comparison.)
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from stack_harness import stack_settings, wait_for
from test_crash_replay import outcomes, sipp_command, start, stop

from core.settings import REPO_ROOT, Settings, to_environ
from edge import sipp
from tawag.replay import compare, replay
from tawag.supervisor import read_pid, read_state, stop_recorded
from warehouse import schema
from warehouse.client import ChdbClient, HttpClient, service_client

pytestmark = pytest.mark.integration

BLOCK, RTP_MIN = 21000, 40000
CALLS = 120
KILL_AFTER = 30
TALK_MS = 100
SIPP_RUN_S = 300
DEADLINE_S = 180
"""Restart (the Faust worker waits out Kafka's session timeout) plus the backlog."""
ANSWERS, BUSY = "102", "103"
ANSWER_PORT, BUSY_PORT, CALLER_PORT = BLOCK + 102, BLOCK + 103, BLOCK + 110
ANSWER_MEDIA, CALLER_MEDIA = RTP_MIN + 700, RTP_MIN + 600
PASSWORDS = {"101": "kill-pw-101", ANSWERS: "kill-pw-102", BUSY: "kill-pw-103"}
SCENARIO = "uac_calls_auth_answer_or_busy.xml"
FIGURES: dict[str, str] = {}

PROVISIONING = f"""
[tenant.acme]
domain = "pbx.test"

[tenant.acme.extension.101]
password = "{PASSWORDS['101']}"

[tenant.acme.extension.102]
password = "{PASSWORDS[ANSWERS]}"

[tenant.acme.extension.103]
password = "{PASSWORDS[BUSY]}"
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
    settings = stack_settings(tmp_path_factory, "kill", block=BLOCK, rtp_min=RTP_MIN,
                              provisioning=PROVISIONING)
    output = tmp_path_factory.mktemp("kill-out") / "tawag-up.log"
    with open(output, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tawag", "up", "--no-demo"],
                                env=os.environ | to_environ(settings), cwd=REPO_ROOT,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    running = Up(settings, proc, output)
    try:
        wait_for("tawag up to say the stack is up",
                 lambda: "Press Ctrl-C" in running.text() or proc.poll() is not None, 240)
        assert proc.poll() is None, running.text()
        edge = sipp.Edge.from_settings(settings, tmp_path_factory.mktemp("kill-reg"))
        for agent, port in ((ANSWERS, ANSWER_PORT), (BUSY, BUSY_PORT)):
            assert sipp.register(edge, agent, port=port, password=PASSWORDS[agent],
                                 expires=3600).ok
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
        if FIGURES:
            print("\npart: kill -> ready again, kill -> last CDR of the run closed")
            print("\n".join(FIGURES.values()))


def planned(n: int) -> str:
    return "busy" if n % 5 == 4 else "answered"


def closed_cdrs(client: HttpClient, ids: list[str]) -> list[dict]:
    return client.query("SELECT call_id, disposition FROM cdrs FINAL "
                        "WHERE closed AND call_id IN {ids:Array(String)}", {"ids": ids})


def back_up(settings: Settings, name: str, old_pid: int) -> int | None:
    record = read_state(settings).get(name, {})
    running = read_pid(settings, name)
    if running and running.pid != old_pid and record.get("state") == "up":
        return running.pid
    return None


@pytest.mark.parametrize("part", [
    "streams",
    "warehouse",
    "ingest",
    "kafka",  # the ingest bridge spools to disk meanwhile (ingest/spool.py)
])
def test_kill_9_under_traffic_loses_no_call(up: Up, part: str, tmp_path: Path):
    settings = up.settings
    edge = sipp.Edge.from_settings(settings, tmp_path)
    restarts_before = read_state(settings)[part].get("restarts", 0)
    callees = [
        start(sipp_command(edge, "uas_answer.xml", tmp_path / "uas-answer.messages.log",
                           "-p", str(ANSWER_PORT), "-mp", str(ANSWER_MEDIA), "-rtp_echo"),
              tmp_path, "uas-answer", ANSWER_PORT),
        start(sipp_command(edge, "uas_busy.xml", tmp_path / "uas-busy.messages.log",
                           "-p", str(BUSY_PORT)), tmp_path, "uas-busy", BUSY_PORT),
    ]
    try:
        plan = tmp_path / "calls.csv"
        plan.write_text("SEQUENTIAL\n" + "".join(
            f"{BUSY if planned(n) == 'busy' else ANSWERS};\n" for n in range(CALLS)))
        prefix = f"kill-{part}-{secrets.token_hex(4)}"
        trace = tmp_path / "calls.messages.log"
        caller = start(sipp_command(
            edge, SCENARIO, trace, edge.remote, "-p", str(CALLER_PORT),
            "-mp", str(CALLER_MEDIA), "-key", "caller", "101", "-au", "101",
            "-ap", PASSWORDS["101"], "-inf", str(plan), "-m", str(CALLS), "-l", "1",
            "-r", "50", "-d", str(TALK_MS), "-recv_timeout", "10000",
            "-default_behaviors", "all,-abortunexp",
            "-timeout", f"{SIPP_RUN_S}s", "-timeout_error", "-cid_str", f"{prefix}-%u@%s"),
            tmp_path, "calls")
        wait_for(f"{KILL_AFTER} calls done", lambda: len(outcomes(trace)) >= KILL_AFTER
                 or caller.poll() is not None, DEADLINE_S)
        assert caller.poll() is None, "sipp ended before the kill"
        old_pid = read_pid(settings, part).pid
        killed_at, killed_wall = time.monotonic(), time.time()
        os.kill(old_pid, signal.SIGKILL)
        new_pid = wait_for(f"{part} up again with a new PID",
                           lambda: back_up(settings, part, old_pid), DEADLINE_S)
        down_s = time.monotonic() - killed_at
        assert caller.wait(SIPP_RUN_S + 10) == 0, (tmp_path / "calls.out").read_text()[-2000:]
        sipp_done_s = trace.stat().st_mtime - killed_wall  # its last message
    finally:
        for process in callees:
            stop(process)

    # the SIP side did exactly what sipp planned
    expected = {f"{prefix}-{n + 1}@{edge.local_ip}": planned(n) for n in range(CALLS)}
    assert outcomes(trace) == expected

    # every call has one closed, correct CDR
    live = service_client(settings)
    ids = list(expected)
    rows = wait_for(f"the {CALLS} closed CDRs of the run",
                    lambda: (r := closed_cdrs(live, ids)) and len(r) == CALLS and r,
                    DEADLINE_S)
    backlog_s = time.monotonic() - killed_at
    assert {r["call_id"]: r["disposition"] for r in rows} == expected
    every = live.query("SELECT call_id, count() AS n FROM cdrs FINAL "
                       "WHERE call_id IN {ids:Array(String)} GROUP BY call_id", {"ids": ids})
    assert len(every) == CALLS and all(r["n"] == 1 for r in every), "a call has two CDRs"
    assert not live.query("SELECT call_id FROM cdrs FINAL WHERE NOT closed")
    if part == "ingest":  # the edge's resend was dropped by the new bridge
        repeats = live.query("SELECT count() - uniqExact(event_id) AS n FROM call_events "
                             "WHERE call_id IN {ids:Array(String)}", {"ids": ids})
        assert repeats[0]["n"] == 0, "an event of the run reached call_events twice"

    # it came back on its own, and the supervisor says so
    record = read_state(settings)[part]
    assert (record["restarts"], record["last_exit"]) == (restarts_before + 1,
                                                         "killed by SIGKILL")
    status = tawag_cli(settings, "status")
    assert status.returncode == 0, status.stdout
    row = next(line.split() for line in status.stdout.splitlines()
               if line.split()[:1] == [part])
    assert row[:3] == [part, "up", str(new_pid)] and row[4] == str(restarts_before + 1), row

    FIGURES[part] = (f"{part:10s} down {down_s:6.1f} s, backlog processed {backlog_s:6.1f} s "
                     f"(sipp run ended {sipp_done_s:5.1f} s after the kill; "
                     f"pid {old_pid} -> {new_pid})")
    print("\n" + FIGURES[part])

    # the live tables equal a clean rebuild from the raw events
    store = tmp_path / "replay"
    report = replay(settings, store=store, compare_live=False)
    assert report.dead == 0
    replayed = ChdbClient(store)
    try:
        deadline = time.monotonic() + DEADLINE_S
        while True:
            diffs = {d.table: d for d in compare(live, replayed)}
            if all(d.equal for d in diffs.values()):
                break
            assert time.monotonic() < deadline, "\n".join(d.line() for d in diffs.values())
            time.sleep(1)
        assert diffs[schema.AGENT_STATS].live_rows > 0
        assert diffs[schema.AGENT_STATES].live_rows > 0
    finally:
        replayed.close()
