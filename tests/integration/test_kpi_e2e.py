"""KPIs end to end: sipp places a scripted mix on the real stack, and the warehouse's
``kpi_summary`` must equal the KPIs the test computes itself from what sipp saw.

The stack is started by the same supervisor as ``tawag up`` (Kafka, rtpengine, Kamailio
with digest auth and the PBX, ingest, streams, warehouse, dashboard) on ports 24xxx, RTP
36000-36499, and a data folder of its own, so the warehouse holds exactly the scripted
calls. The mix (:data:`SCRIPT`), placed one after the other by an outside caller from the
carrier's side (a trunk source, no digest auth) to each agent's DID: inbound calls, the
population of the queue KPIs (issue 13: the same calls on every page):

* answered after known ring times (0, 1, 3 and 6 s: the callee rings, then answers --
  ``uas_answer_after_ring.xml``), each with a known talk time;
* one refused busy (486); one nobody answers (extension 104's no-answer time, 3 s: the
  edge gives up with 408);
* the caller cancels after known ring times: two shorter than the short-abandon cut-off
  :data:`SHORT_ABANDON_S`, two longer, one of those beyond the service-level threshold.

The expected KPIs are computed *in the test*, independently of ``warehouse.queries.kpi``,
from sipp's message trace on the caller's side: the wait runs from the INVITE sent to the
INVITE's final response received, the talk from the 200 received to
the BYE sent. Counts and rates must be exact; means of durations within
:data:`DURATION_TOLERANCE_S` (also checked per call), because the edge stamps its events
a few ms away from sipp. Every wait must lie more than that tolerance away from the
thresholds, so the exact rates cannot flip on timing noise. The test fails if a call is
dropped (no closed CDR), duplicated (two CDR rows, an extra CDR, a raw event twice), or if
a KPI differs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from statistics import mean
from typing import Any

import pytest
from stack_harness import running_stack, stack_settings

from core.settings import Settings
from edge import sipp
from warehouse.client import HttpClient, service_client
from warehouse.queries.kpi import kpi_summary

pytestmark = pytest.mark.integration

THRESHOLD_S = 4.0
"""Service-level threshold T: waits of 0, 1 and 3 s are inside, 5.5 and 6 s outside."""
SHORT_ABANDON_S = 2.0
"""Short-abandon cut-off S: the 0.8 and 1.2 s cancels are short, 3 and 5.5 s are not."""
NO_ANSWER_TIMEOUT_S = 3
DURATION_TOLERANCE_S = 0.3
"""Per call: the edge's event times against sipp's trace times (loopback, same clock)."""
PIPELINE_DEADLINE_S = 90
WINDOW_MARGIN = timedelta(seconds=30)

CALLER = "+79160000001"
"""An outside number: the calls come from the trunk to the agents' DIDs."""
DIDS = {u: f"7495123{u}0" for u in ("102", "103", "104", "105")}
PASSWORDS = {u: f"kpi-pw-{u}" for u in ("101", "102", "103", "104", "105")}
AGENT_PORTS = {"102": 24102, "103": 24103, "104": 24104, "105": 24105}
CALLER_PORT, CALLER_MEDIA, AGENT_MEDIA = 24110, 36600, 36700

PROVISIONING = f"""
[tenant.acme]
domain = "pbx.test"
trunk_sources = ["127.0.0.1:{CALLER_PORT}"]

[tenant.acme.did."{DIDS['102']}"]
to = "ext:102"

[tenant.acme.did."{DIDS['103']}"]
to = "ext:103"

[tenant.acme.did."{DIDS['104']}"]
to = "ext:104"

[tenant.acme.did."{DIDS['105']}"]
to = "ext:105"

[tenant.acme.extension.101]
password = "{PASSWORDS['101']}"

[tenant.acme.extension.102]
password = "{PASSWORDS['102']}"

[tenant.acme.extension.103]
password = "{PASSWORDS['103']}"

[tenant.acme.extension.104]
password = "{PASSWORDS['104']}"
no_answer_timeout = {NO_ANSWER_TIMEOUT_S}

[tenant.acme.extension.105]
password = "{PASSWORDS['105']}"
"""


@dataclass(frozen=True)
class Scripted:
    """One call of the mix: what the callee does, for how long it rings and talks."""

    disposition: str
    ring_ms: int = 0
    talk_ms: int = 0


SCRIPT = (
    Scripted("answered", ring_ms=0, talk_ms=1500),
    Scripted("answered", ring_ms=1000, talk_ms=2000),
    Scripted("answered", ring_ms=3000, talk_ms=1000),
    Scripted("answered", ring_ms=6000, talk_ms=2500),
    Scripted("busy"),
    Scripted("no_answer", ring_ms=NO_ANSWER_TIMEOUT_S * 1000),
    Scripted("cancelled", ring_ms=800),
    Scripted("cancelled", ring_ms=1200),
    Scripted("cancelled", ring_ms=3000),
    Scripted("cancelled", ring_ms=5500),
)


@dataclass(frozen=True)
class Observed:
    """One call as the caller's sipp saw it."""

    call_id: str
    disposition: str
    wait_s: float
    """Authenticated INVITE sent -> the INVITE's final response received."""
    talk_s: float
    """200 received -> BYE sent; 0 when not answered."""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    settings = stack_settings(tmp_path_factory, "kpi", block=24000, rtp_min=36000,
                              provisioning=PROVISIONING, no_answer_timeout=NO_ANSWER_TIMEOUT_S)
    with running_stack(settings):
        yield settings


# --- placing the mix ----------------------------------------------------------------------


def media(agent: str) -> int:
    return AGENT_MEDIA + 10 * (int(agent) - 100)


def place_answered(edge: sipp.Edge, call: Scripted) -> sipp.SippResult:
    ring = call.ring_ms or None  # 0: uas_answer.xml answers at once
    uas = sipp.start_uas_answer(edge, port=AGENT_PORTS["102"], media_port=media("102"),
                                ring_ms=ring)
    result = sipp.call(edge, CALLER, DIDS["102"], port=CALLER_PORT, media_port=CALLER_MEDIA,
                       talk_ms=call.talk_ms, password=None)
    uas.wait()
    return result


def place_refused(edge: sipp.Edge, callee: str, code: int, start_uas: Any) -> sipp.SippResult:
    uas = start_uas(edge, port=AGENT_PORTS[callee])
    result = sipp.call_expect_failure(edge, CALLER, DIDS[callee], code, port=CALLER_PORT,
                                      media_port=CALLER_MEDIA, password=None)
    uas.stop()
    return result


def place_cancelled(edge: sipp.Edge, call: Scripted) -> sipp.SippResult:
    uas = sipp.start_uas_ring(edge, port=AGENT_PORTS["105"])
    result = sipp.call_and_cancel(edge, CALLER, DIDS["105"], ring_ms=call.ring_ms,
                                  port=CALLER_PORT, media_port=CALLER_MEDIA, password=None)
    uas.stop()
    return result


def place(edge: sipp.Edge, call: Scripted) -> Observed:
    if call.disposition == "answered":
        result = place_answered(edge, call)
    elif call.disposition == "busy":
        result = place_refused(edge, "103", 486, sipp.start_uas_busy)
    elif call.disposition == "no_answer":
        result = place_refused(edge, "104", 408, sipp.start_uas_ring)
    else:
        result = place_cancelled(edge, call)
    assert result.ok and result.call_id, (call, result.received())
    return observe(result, call.disposition)


def observe(result: sipp.SippResult, disposition: str) -> Observed:
    """Wait and talk from the caller's trace.

    The wait starts at the INVITE the edge accepted: the one sent after a 407 challenge
    if there was one (a trunk's calls are not challenged).
    """
    messages = list(result.messages)
    challenged = [i for i, m in enumerate(messages) if m.status == 407]
    after = messages[challenged[-1] + 1:] if challenged else messages
    invite = next(m for m in after if m.direction == "sent" and m.method == "INVITE")
    final = next(m for m in after if m.direction == "received" and m.cseq_method == "INVITE"
                 and m.status is not None and m.status >= 200)
    assert invite.at is not None and final.at is not None, result.trace
    talk = result.talk_s if disposition == "answered" else 0.0
    assert talk is not None, result.trace
    assert result.call_id is not None
    return Observed(result.call_id, disposition, final.at - invite.at, talk)


# --- the KPIs, computed here from the definitions in warehouse/queries/kpi.py -------------


def ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def expected_kpis(calls: list[Observed], threshold_s: float,
                  short_s: float) -> dict[str, Any]:
    """Counts and KPIs of ``calls`` as the docstrings of the KPI library define them."""
    answered = [c for c in calls if c.disposition == "answered"]
    abandoned = [c for c in calls if c.disposition == "cancelled"]
    # every call is inbound; busy counts as queued (and never inside T)
    queued = [c for c in calls
              if c.disposition in ("answered", "cancelled", "no_answer", "busy")]
    short = [c for c in abandoned if c.wait_s < short_s]
    removed_in_t = [c for c in answered + abandoned if c.wait_s <= threshold_s]
    short_in_t = [c for c in short if c.wait_s <= threshold_s]
    return {
        "total": len(calls), "in_progress": 0, "offered": len(calls),
        "answered": len(answered), "abandoned": len(abandoned),
        "short_abandoned": len(short), "queued": len(queued),
        "answer_rate": ratio(len(answered), len(calls)),
        "asr": ratio(len(answered), len(calls)),
        "service_level_answered": ratio(
            sum(c.wait_s <= threshold_s for c in answered), len(answered)),
        "service_level_offered": ratio(len(removed_in_t), len(queued)),
        "service_level_offered_adjusted": ratio(len(removed_in_t) - len(short_in_t),
                                                len(queued) - len(short)),
        "abandonment_rate": ratio(len(abandoned), len(queued)),
        "abandonment_rate_adjusted": ratio(len(abandoned) - len(short),
                                           len(queued) - len(short)),
        "acd": mean(c.talk_s for c in answered),
        "asa": mean(c.wait_s for c in answered),
        "average_wait": mean(c.wait_s for c in queued),
    }


DURATIONS = ("acd", "asa", "average_wait")


def assert_unambiguous(calls: list[Observed]) -> None:
    """No wait within the tolerance of T or S: the edge and sipp classify it alike."""
    for call in calls:
        for limit in (THRESHOLD_S, SHORT_ABANDON_S):
            assert abs(call.wait_s - limit) > DURATION_TOLERANCE_S, (call, limit)


# --- reading the warehouse ----------------------------------------------------------------


def wait_closed(client: HttpClient, call_ids: list[str]) -> dict[str, dict]:
    """Each call's closed CDR, polled until all are in (or the deadline fails the test)."""
    deadline = time.monotonic() + PIPELINE_DEADLINE_S
    while True:
        rows = client.query(
            "SELECT call_id, disposition, ring_ms, talk_ms FROM cdrs FINAL "
            "WHERE closed AND call_id IN {ids:Array(String)}", {"ids": call_ids})
        if len(rows) >= len(call_ids):
            return {r["call_id"]: r for r in rows}
        assert time.monotonic() < deadline, f"only {len(rows)} of {len(call_ids)} calls closed"
        time.sleep(0.25)


def assert_each_call_once(client: HttpClient, call_ids: list[str]) -> None:
    """No call dropped, none twice, nothing extra: one CDR row per placed call id."""
    rows = client.query("SELECT call_id, count() AS n FROM cdrs FINAL GROUP BY call_id")
    assert sorted(r["call_id"] for r in rows) == sorted(call_ids), "dropped or extra calls"
    assert all(r["n"] == 1 for r in rows), "a call has more than one CDR row"
    (dupes,) = client.query("SELECT count() - uniqExact(event_id) AS extra FROM call_events")
    assert dupes["extra"] == 0, "a raw event was stored twice"


def assert_per_call(cdrs: dict[str, dict], calls: list[Observed]) -> None:
    tolerance_ms = DURATION_TOLERANCE_S * 1000
    for call in calls:
        cdr = cdrs[call.call_id]
        assert cdr["disposition"] == call.disposition, (call, cdr)
        assert abs(cdr["ring_ms"] - call.wait_s * 1000) <= tolerance_ms, (call, cdr)
        assert abs(cdr["talk_ms"] - call.talk_s * 1000) <= tolerance_ms, (call, cdr)


def report(expected: dict[str, Any], actual: dict[str, Any]) -> str:
    """Side by side, for the assertion message and ``pytest -s``."""
    return "\n".join(f"{key:<32} expected {expected[key]!s:<22} warehouse {actual[key]}"
                     for key in expected)


def test_warehouse_kpis_equal_the_kpis_of_what_sipp_did(stack: Settings, tmp_path: Path):
    edge = sipp.Edge.from_settings(stack, tmp_path)
    for agent, port in AGENT_PORTS.items():
        assert sipp.register(edge, agent, port=port, password=PASSWORDS[agent]).ok
    started = datetime.now(UTC)
    calls = [place(edge, scripted) for scripted in SCRIPT]
    finished = datetime.now(UTC)
    assert [c.disposition for c in calls] == [s.disposition for s in SCRIPT]
    assert_unambiguous(calls)
    call_ids = [c.call_id for c in calls]
    assert len(set(call_ids)) == len(SCRIPT)

    client = service_client(stack)
    cdrs = wait_closed(client, call_ids)
    assert_each_call_once(client, call_ids)
    assert_per_call(cdrs, calls)

    actual = kpi_summary(client, "acme", started - WINDOW_MARGIN, finished + WINDOW_MARGIN,
                         threshold_s=THRESHOLD_S, short_abandon_s=SHORT_ABANDON_S)
    expected = expected_kpis(calls, THRESHOLD_S, SHORT_ABANDON_S)
    print("\n" + report(expected, actual))
    for key, value in expected.items():
        if key in DURATIONS:
            assert actual[key] == pytest.approx(value, abs=DURATION_TOLERANCE_S), (
                key, report(expected, actual))
        else:
            assert actual[key] == value, (key, report(expected, actual))
