"""A call whose end is lost is closed ``interrupted`` and its agent released, in bounded time.

On the real stack (``tawag up``'s supervisor, sipp through the edge): 101 calls 102, 102
answers, and while they talk the ingest bridge is killed with SIGKILL (it must find the
open call on disk when it starts again) and then Kamailio is restarted: its dialogs are
in memory only, so the call's end can never come. Asserted, polling with a deadline: the
CDR closes with disposition and reason ``interrupted`` at the last time the call was known
alive (the reconciler's last sight of the dialog before the restart), 102 is on_call from
the answer to then and ``available`` from then on, within
``lost_end_grace_s`` + ``reconcile_interval_s`` + the pipeline's own latency of Kamailio
being back; ingest counted the interruption. The same after the whole stack is stopped
(``tawag down``) and started again mid-call.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from stack_harness import running_stack, stack_settings, wait_for

from core.settings import Settings
from edge import control as edge_control
from edge import sipp
from ingest.service import open_calls_file
from tawag.supervisor import Supervisor
from warehouse.client import service_client

pytestmark = pytest.mark.integration

BLOCK, RTP_MIN = 19000, 41000
AGENT, AGENT_PORT, AGENT_MEDIA = "102", 19702, 41700
CALLER_PORTS, CALLER_MEDIA = (19710, 19711), (41600, 41610)
"""One per test: the first test's caller may still be waiting out its sipp timeout."""
PASSWORDS = {"101": "lost-pw-101", "102": "lost-pw-102"}
GRACE_S, INTERVAL_S = 3.0, 1.0
PIPELINE_S = 15.0
"""Kafka -> streams -> warehouse, and the warehouse's loading batches, on a busy box."""
BOUND_S = GRACE_S + INTERVAL_S + PIPELINE_S
TALK_MS = 25_000
"""The caller hangs up this late (sipp's own timeout is 30 s); its BYE then meets a
Kamailio without the dialog, which sends no end for it."""

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
    settings = stack_settings(tmp_path_factory, "lost", block=BLOCK, rtp_min=RTP_MIN,
                              provisioning=PROVISIONING, lost_end_grace_s=GRACE_S,
                              reconcile_interval_s=INTERVAL_S)
    with running_stack(settings) as sup:
        yield sup


def cdr(settings: Settings, call_id: str) -> dict | None:
    rows = service_client(settings).query(
        "SELECT disposition, reason, closed, answered_at, ended_at, hangup_by FROM cdrs FINAL "
        "WHERE call_id = {id:String}", {"id": call_id})
    return rows[0] if rows else None


def agent_timeline(settings: Settings) -> list[dict]:
    return service_client(settings).query(
        "SELECT state, since, until FROM agent_states FINAL "
        "WHERE agent = {a:String} AND NOT deleted ORDER BY since", {"a": AGENT})


def interrupted_total(settings: Settings) -> float:
    text = httpx.get(f"http://127.0.0.1:{settings.ingest_metrics_port}/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("tawag_ingest_calls_interrupted_total{"))


def seen_on_edge(settings: Settings, call_id: str) -> bool:
    try:
        saved = json.loads(open_calls_file(settings).read_text())
    except (FileNotFoundError, ValueError):
        return False
    return any(c["call_id"] == call_id and c["seen_ts"] for c in saved["calls"])


def as_dt(value: object) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


@contextmanager
def talking_call(settings: Settings, tmp_path: Path, caller: int) -> Iterator[str]:
    """101 calls 102, who answers; yields the SIP Call-ID once the call is answered on
    the edge and its CDR is open in the warehouse (the callee is stopped afterwards)."""
    edge = sipp.Edge.from_settings(settings, tmp_path)
    assert sipp.register(edge, AGENT, port=AGENT_PORT, password=PASSWORDS[AGENT]).ok
    uas = sipp.start_uas_answer(edge, port=AGENT_PORT, media_port=AGENT_MEDIA)
    threading.Thread(target=lambda: sipp.call(
        edge, "101", AGENT, port=CALLER_PORTS[caller], media_port=CALLER_MEDIA[caller],
        talk_ms=TALK_MS, password=PASSWORDS["101"]), daemon=True).start()
    try:
        dialogs = wait_for("the answered dialog", lambda: [
            d for d in edge_control.kamailio_rpc(settings, "dlg.list") if d.get("state") == 4],
            timeout=30)
        call_id = dialogs[0]["call-id"]
        open_row = wait_for("the open CDR", lambda: cdr(settings, call_id), timeout=60)
        assert open_row["disposition"] == "in_progress" and not open_row["closed"]
        # ingest follows the call and has seen it alive on the edge (saved on disk)
        wait_for("the reconciler's sight of the call", lambda: seen_on_edge(settings, call_id),
                 timeout=10)
        yield call_id
    finally:
        uas.stop()


def assert_closed_and_released(settings: Settings, call_id: str, back: float,
                               what: str) -> None:
    """The CDR closes interrupted and 102 is available again, both within the bound."""
    closed = wait_for("the CDR closed", lambda: (row := cdr(settings, call_id))
                      and row["closed"] and row, timeout=BOUND_S)
    cdr_s = time.monotonic() - back
    assert (closed["disposition"], closed["reason"]) == ("interrupted", "interrupted")
    assert closed["hangup_by"] is None
    # the last time the call was known alive: the reconciler's last sight of it
    ended_at, answered_at = as_dt(closed["ended_at"]), as_dt(closed["answered_at"])
    assert answered_at < ended_at

    def released() -> list[dict] | None:
        rows = agent_timeline(settings)
        return rows if len(rows) > 1 and rows[-1]["state"] == "available" \
            and rows[-1]["until"] is None else None

    states = wait_for("102 released", released, timeout=max(1.0, BOUND_S - cdr_s))
    agent_s = time.monotonic() - back
    talk, free = states[-2:]
    assert (talk["state"], as_dt(talk["since"]), as_dt(talk["until"])) == (
        "on_call", answered_at, ended_at)
    assert (free["state"], as_dt(free["since"])) == ("available", ended_at)
    assert interrupted_total(settings) == 1
    print(f"\n{what}: lost end closed {cdr_s:.1f} s, agent released {agent_s:.1f} s after "
          f"the stack was back (bound {BOUND_S:.0f} s)")


def test_a_call_cut_by_an_edge_restart_closes_interrupted_and_releases_its_agent(
        supervisor: Supervisor, tmp_path: Path) -> None:
    settings = supervisor.settings
    with talking_call(settings, tmp_path, caller=0) as call_id:
        # the bridge dies holding the call (it must remember it), then the edge restarts
        supervisor.restart("ingest", signal.SIGKILL)
        supervisor.restart("kamailio")
        back = time.monotonic()
        assert edge_control.kamailio_rpc(settings, "dlg.list") == []
        assert_closed_and_released(settings, call_id, back, "kamailio restart")


def test_a_call_open_at_tawag_down_is_closed_interrupted_after_tawag_up(
        supervisor: Supervisor, tmp_path: Path) -> None:
    settings = supervisor.settings
    with talking_call(settings, tmp_path, caller=1) as call_id:
        supervisor.stop()  # what `tawag down` does
        supervisor.start(demo=False)
        back = time.monotonic()
        assert_closed_and_released(settings, call_id, back, "tawag down/up")
