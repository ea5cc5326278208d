"""Crash on the real stack with two Faust workers, then replay: nothing lost, nothing twice,
and the live warehouse equals a clean rebuild from the raw events row for row.

The full stack (supervisor, own ports 28xxx, RTP 35000-35499) runs. Extension 102 is an
agent that answers, 103 one that is busy; both register with a one-hour Expires, so no
registration lapses while the test runs (the 300 s default would, and Kamailio would then
send an expiry event at a moment the test does not control). One sipp run places CALLS
calls from 101, one at a time: every fifth to 103 (486 Busy Here), the rest to 102
(answered, TALK_MS of talk). While they flow, the Faust worker is killed with SIGKILL after
a quarter of the calls and the warehouse (loader + chdb owner) after half, and each is
started again. Before that, after a tenth of the calls, a second Faust worker of the same
app joins (README "Scaling out"): the group rebalances the partitions between the two while
calls flow, and the first one's SIGKILL hands its share to the second: calls and agents
in flight move between processes through the changelogs, twice. After the last call both
agents unregister (Expires: 0): the last events of the run, at a point the test chooses,
so the topic the replay reads is complete.
Afterwards:

- every call sipp placed has exactly one CDR in the live warehouse, closed, with the
  disposition sipp saw, and no other CDR exists; no raw event is stored twice;
- the counts in ``kpi_summary`` equal what sipp did (total, and answered through ASR: these
  are internal calls, outside the inbound-only queue KPIs);
- ``tawag.replay`` rebuilds cdrs / agent_states / agent_stats / callbacks / call_events
  from ``tawag.call-events`` into a fresh store, and each equals the live table row for
  row as readers see it (FINAL). ``cdrs`` and ``call_events`` are compared on every
  column; ``agent_states``, ``agent_stats`` and ``callbacks`` on every column but
  ``version``, which records the order the worker happened to meet the events of
  different calls in (see tawag/replay.py) - complete_until, every duration and count
  included. Every KPI of ``kpi_summary`` is the same on both.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from stack_harness import running_stack, stack_settings, wait_for

from core.settings import REPO_ROOT, Settings, to_environ
from edge import sipp
from streams.app import APP_ID
from tawag.readiness import assigned_members
from tawag.replay import DELIVERY_VERSIONED, compare, replay
from tawag.supervisor import Supervisor
from warehouse import schema
from warehouse.client import ChdbClient, HttpClient, service_client
from warehouse.queries.kpi import kpi_summary

pytestmark = pytest.mark.integration

CALLS = 300
TALK_MS = 100
DEADLINE_S = 120
SIPP_RUN_S = 300
"""sipp's own global timeout for the whole run (it takes about a minute)."""
ANSWERS, BUSY = "102", "103"
ANSWER_PORT, ANSWER_MEDIA, BUSY_PORT = 28102, 35700, 28103
CALLER_PORT, CALLER_MEDIA = 28110, 35600
REGISTER_EXPIRES_S = 3600
PASSWORDS = {"101": "crash-pw-101", ANSWERS: "crash-pw-102", BUSY: "crash-pw-103"}
SCENARIO = "uac_calls_auth_answer_or_busy.xml"

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


@pytest.fixture(scope="module")
def supervisor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Supervisor]:
    settings = stack_settings(tmp_path_factory, "crash", block=28000, rtp_min=35000,
                              provisioning=PROVISIONING)
    with running_stack(settings) as sup:
        yield sup


def planned(n: int) -> str:
    """Disposition of the n-th call (0-based): every fifth one is refused."""
    return "busy" if n % 5 == 4 else "answered"


def outcomes(trace: Path) -> dict[str, str]:
    """Call-ID -> ``answered`` (the BYE got its 200) or ``busy`` (486) from sipp's trace."""
    done: dict[str, str] = {}
    for m in sipp.parse_trace(trace.read_text(errors="replace")) if trace.exists() else []:
        if m.direction != "received" or m.call_id is None:
            continue
        if m.status == 486 and m.cseq_method == "INVITE":
            done[m.call_id] = "busy"
        elif m.status == 200 and m.cseq_method == "BYE":
            done[m.call_id] = "answered"
    return done


def _udp_bound(ip: str, port: int) -> bool:
    wanted = "".join(f"{int(o):02X}" for o in reversed(ip.split("."))) + f":{port:04X}"
    lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    return any(line.split()[1] == wanted for line in lines)


def sipp_command(edge: sipp.Edge, scenario: str, trace: Path, *args: str) -> list[str]:
    """sipp for many calls (no ``-m 1``), its message trace in ``trace``."""
    return ["sipp", "-sf", str(sipp.SCENARIO_DIR / scenario), "-i", edge.local_ip,
            "-mi", edge.local_ip, "-key", "domain", edge.domain, "-nostdin",
            "-trace_msg", "-message_file", str(trace),
            "-trace_err", "-error_file", str(trace.with_suffix(".errors.log")), *args]


def start(command: list[str], work_dir: Path, label: str,
          port: int | None = None) -> subprocess.Popen[bytes]:
    """Start sipp; with ``port`` return once it listens there (sipp has no ready signal)."""
    out = (work_dir / f"{label}.out").open("wb")
    process = subprocess.Popen(command, cwd=work_dir, stdin=subprocess.DEVNULL, stdout=out,
                               stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 5
    while port is not None and not _udp_bound("127.0.0.1", port):
        assert process.poll() is None, f"sipp {label} exited: see {out.name}"
        assert time.monotonic() < deadline, f"sipp {label} does not listen on {port}"
        time.sleep(0.02)
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    """End a sipp callee by its PID."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_calls(trace: Path, caller: subprocess.Popen[bytes], n: int) -> None:
    """Until sipp's trace shows ``n`` finished calls (or sipp is gone)."""
    deadline = time.monotonic() + DEADLINE_S
    while len(outcomes(trace)) < n:
        assert caller.poll() is None, f"sipp ended after {len(outcomes(trace))} calls"
        assert time.monotonic() < deadline, f"{len(outcomes(trace))} of {n} calls done"
        time.sleep(0.2)


def second_worker(settings: Settings, work_dir: Path) -> subprocess.Popen[bytes]:
    """Another Faust worker of the same app (own static member id and metrics port)."""
    other = replace(settings, streams_instance_id="streams-2",
                    streams_metrics_port=settings.streams_metrics_port + 10,
                    data_dir=work_dir / "worker-2")
    log = (work_dir / "worker-2.log").open("wb")
    return subprocess.Popen([sys.executable, "-m", "tawag", "streams"], stdin=subprocess.DEVNULL,
                            stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
                            env=os.environ | to_environ(other))


def wait_rows(client: HttpClient, sql: str, params: dict, n: int) -> list[dict]:
    """Until ``sql`` returns ``n`` rows on the live warehouse."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        rows = client.query(sql, params)
        if len(rows) == n:
            return rows
        assert time.monotonic() < deadline, f"{len(rows)} of {n} rows for {sql}"
        time.sleep(0.5)


def test_crashes_lose_nothing_and_replay_equals_live(supervisor: Supervisor, tmp_path: Path):
    settings = supervisor.settings
    edge = sipp.Edge.from_settings(settings, tmp_path)
    for agent, port in ((ANSWERS, ANSWER_PORT), (BUSY, BUSY_PORT)):
        assert sipp.register(edge, agent, port=port, password=PASSWORDS[agent],
                             expires=REGISTER_EXPIRES_S).ok
    start_time = datetime.now(UTC) - timedelta(minutes=1)
    callees = [
        start(sipp_command(edge, "uas_answer.xml", tmp_path / "uas-answer.messages.log",
                           "-p", str(ANSWER_PORT), "-mp", str(ANSWER_MEDIA), "-rtp_echo"),
              tmp_path, "uas-answer", ANSWER_PORT),
        start(sipp_command(edge, "uas_busy.xml", tmp_path / "uas-busy.messages.log",
                           "-p", str(BUSY_PORT)), tmp_path, "uas-busy", BUSY_PORT),
    ]
    second = None
    try:
        plan = tmp_path / "calls.csv"
        plan.write_text("SEQUENTIAL\n" + "".join(
            f"{BUSY if planned(n) == 'busy' else ANSWERS};\n" for n in range(CALLS)))
        prefix = f"crash-{secrets.token_hex(4)}"
        trace = tmp_path / "calls.messages.log"
        caller = start(sipp_command(
            edge, SCENARIO, trace, edge.remote, "-p", str(CALLER_PORT),
            "-mp", str(CALLER_MEDIA), "-key", "caller", "101", "-au", "101",
            "-ap", PASSWORDS["101"], "-inf", str(plan), "-m", str(CALLS), "-l", "1",
            "-r", "50", "-d", str(TALK_MS), "-recv_timeout", "10000",
            # Kamailio's UDP workers can pass a 180 on after the 200 (seen at load, once
            # in 300 calls): a stray provisional reply must not abort a call
            "-default_behaviors", "all,-abortunexp",
            "-timeout", f"{SIPP_RUN_S}s", "-timeout_error", "-cid_str", f"{prefix}-%u@%s"),
            tmp_path, "calls")
        wait_calls(trace, caller, CALLS // 10)
        second = second_worker(settings, tmp_path)  # joins mid-run: the group rebalances
        wait_for("two Faust workers sharing the partitions",
                 lambda: assigned_members(settings, APP_ID) >= 2 or second.poll(), DEADLINE_S)
        assert second.poll() is None, (tmp_path / "worker-2.log").read_text()[-2000:]
        assert len(outcomes(trace)) < CALLS, "the calls ended before the second worker joined"
        for name, after in (("streams", CALLS // 4), ("warehouse", CALLS // 2)):
            wait_calls(trace, caller, after)  # calls flow before each crash
            supervisor.restart(name, signal.SIGKILL)
        assert caller.wait(SIPP_RUN_S + 10) == 0, (tmp_path / "calls.out").read_text()[-2000:]
    finally:
        for process in callees:
            stop(process)
        if second is not None:
            stop(second)
    for agent, port in ((ANSWERS, ANSWER_PORT), (BUSY, BUSY_PORT)):
        assert sipp.unregister(edge, agent, port=port, password=PASSWORDS[agent]).ok

    seen = outcomes(trace)
    expected = {f"{prefix}-{n + 1}@{edge.local_ip}": planned(n) for n in range(CALLS)}
    assert seen == expected

    live = service_client(settings)
    ids = list(expected)
    rows = wait_rows(live, "SELECT call_id, disposition FROM cdrs FINAL "
                     "WHERE closed AND call_id IN {ids:Array(String)}", {"ids": ids}, CALLS)
    assert {r["call_id"]: r["disposition"] for r in rows} == expected
    every = live.query("SELECT call_id, count() AS n FROM cdrs FINAL GROUP BY call_id")
    assert sorted(r["call_id"] for r in every) == sorted(ids)
    assert all(r["n"] == 1 for r in every), "a call has two CDR rows"
    # the unregistrations are the last events: once stored, the topic is complete
    wait_rows(live, "SELECT agent FROM call_events WHERE type = 'agent.unregistered' "
              "AND agent IN {agents:Array(String)}", {"agents": [ANSWERS, BUSY]}, 2)
    (dupes,) = live.query("SELECT count() - uniqExact(event_id) AS extra FROM call_events")
    assert dupes["extra"] == 0

    end = datetime.now(UTC) + timedelta(minutes=1)
    live_kpis = kpi_summary(live, "acme", start_time, end)
    answered = sum(d == "answered" for d in expected.values())
    # internal calls: the queue counts (inbound only) are empty; ASR counts every direction
    assert (live_kpis["total"], live_kpis["offered"]) == (CALLS, 0)
    assert live_kpis["asr"] == pytest.approx(answered / CALLS)

    store = tmp_path / "replay"
    report = replay(settings, store=store, compare_live=False)
    assert report.dead == 0 and report.cdr_revisions >= CALLS
    replayed = ChdbClient(store)
    try:
        # derived tables may still be catching up live (agent rows go through a
        # repartition hop): compare until equal, bounded by the deadline
        deadline = time.monotonic() + DEADLINE_S
        while True:
            diffs = {d.table: d for d in compare(live, replayed)}
            if all(d.equal for d in diffs.values()):
                break
            assert time.monotonic() < deadline, "\n".join(d.line() for d in diffs.values())
            time.sleep(1)
        assert set(diffs) >= {schema.CDRS, schema.CALL_EVENTS, *DELIVERY_VERSIONED}
        assert diffs[schema.AGENT_STATS].live_rows > 0 and diffs[schema.AGENT_STATES].live_rows > 0
        assert kpi_summary(replayed, "acme", start_time, end) == live_kpis
    finally:
        replayed.close()
