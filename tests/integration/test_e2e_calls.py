"""End to end on the real stack: sipp calls -> Kamailio/rtpengine -> evapi -> ingest -> Kafka
-> Faust -> Kafka -> warehouse (chdb) -> read back over the ClickHouse HTTP interface.

The whole stack is started by the same supervisor as ``tawag up`` (Kafka, rtpengine,
Kamailio, ingest, streams, warehouse, dashboard), on ports and a data folder of its own,
with digest auth and the PBX on (the platform default): the supervisor provisions the
edge from a test-local TOML once Kamailio is ready, and every extension registers and
calls with its password. sipp places a known set of calls: answered ones with known talk
times (one from an outside number, sent by the carrier from the trunk to a recorded
DID), a 486, a 404, one nobody answers (the edge gives up after the extension's
no-answer time: 408) and one the caller cancels while it rings (487). The test then waits until
the warehouse holds a closed CDR for every call sipp placed and checks each against what
sipp saw. It fails if the pipeline drops a call (a missing call id), duplicates one (a
call id twice, or an extra CDR), or gets a field wrong.
"""

from __future__ import annotations

import json
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from stack_harness import running_stack, stack_settings

from core.settings import Settings
from edge import sipp
from warehouse.client import HttpClient, service_client
from warehouse.users import SERVICE_USER, service_password

pytestmark = pytest.mark.integration

NO_ANSWER_TIMEOUT_S = 3
PIPELINE_DEADLINE_S = 90
TALK_TOLERANCE_MS = 1000
WAV_TOLERANCE_S = 0.5
PASSWORDS = {u: f"e2e-pw-{u}" for u in ("101", "102", "103", "104", "105")}
TRUNK_SOURCE_PORT = 26111
RECORDED_DID = "74951230102"
OUTSIDE = "84951234567"
TRUNK_PORT = 26120
CARRIER_RING_MS = 700
"""The carrier rings the outside number this long before it answers (180, then 200)."""
PDD_TOLERANCE_MS = 300
"""The edge's offer and 180 against sipp's INVITE sent and 180 received (loopback)."""

PROVISIONING = f"""
[tenant.acme]
domain = "pbx.test"
company_number = "+74951230000"
trunk = "127.0.0.1:{TRUNK_PORT}"
trunk_sources = ["127.0.0.1:{TRUNK_SOURCE_PORT}"]

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

[tenant.acme.did."{RECORDED_DID}"]
to = "ext:102"
record = true
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    settings = stack_settings(tmp_path_factory, "e2e", block=26000, rtp_min=33000,
                              provisioning=PROVISIONING, no_answer_timeout=NO_ANSWER_TIMEOUT_S)
    with running_stack(settings):
        yield settings


@dataclass(frozen=True)
class Placed:
    result: sipp.SippResult
    caller: str
    callee: str
    disposition: str
    sip_code: int
    talk_ms: int = 0
    agent: str | None = None
    pdd_ms: int | None = None
    """INVITE sent (after the digest challenge) to the first 18x received, for trunk calls."""


AGENT_PORTS = {"102": 26102, "103": 26103, "104": 26104, "105": 26105}
CALLER_PORT, CALLER_MEDIA = 26110, 33600


def media(agent: str) -> int:
    return 33700 + 10 * (int(agent) - 100)


def answered(edge: sipp.Edge, caller: str, callee: str, talk_ms: int) -> Placed:
    uas = sipp.start_uas_answer(edge, port=AGENT_PORTS[callee], media_port=media(callee))
    result = sipp.call(edge, caller, callee, port=CALLER_PORT, media_port=CALLER_MEDIA,
                       talk_ms=talk_ms, password=PASSWORDS[caller])
    uas.wait()
    assert result.ok, result.received()
    measured = round(result.talk_s * 1000)
    return Placed(result, caller, callee, "answered", 200, measured, agent=callee)


def answered_from_outside(edge: sipp.Edge, did: str, agent: str, talk_ms: int) -> Placed:
    """The carrier (a trunk source, no digest auth) sends a call to a DID of ``agent``."""
    uas = sipp.start_uas_answer(edge, port=AGENT_PORTS[agent], media_port=media(agent))
    result = sipp.call(edge, OUTSIDE, did, port=TRUNK_SOURCE_PORT, media_port=CALLER_MEDIA,
                       talk_ms=talk_ms)
    uas.wait()
    assert result.ok, result.received()
    measured = round(result.talk_s * 1000)
    return Placed(result, OUTSIDE, did, "answered", 200, measured, agent=agent)


def first_18x_ms(result: sipp.SippResult) -> int:
    """Caller side: the INVITE the edge accepted (after the 407) to the first 18x."""
    messages = list(result.messages)
    challenged = [i for i, m in enumerate(messages) if m.status == 407]
    after = messages[challenged[-1] + 1:] if challenged else messages
    invite = next(m for m in after if m.direction == "sent" and m.method == "INVITE")
    ringing = next(m for m in after if m.direction == "received" and m.status is not None
                   and 180 <= m.status < 190)
    assert invite.at is not None and ringing.at is not None, result.trace
    return round((ringing.at - invite.at) * 1000)


def answered_through_trunk(edge: sipp.Edge, number: str, talk_ms: int) -> Placed:
    """101 dials an outside number: the edge sends it to the trunk, where the carrier
    rings CARRIER_RING_MS and answers (post-dial delay: INVITE to its 180)."""
    carrier = sipp.start_uas_answer(edge, port=TRUNK_PORT, media_port=media("109"),
                                    ring_ms=CARRIER_RING_MS)
    result = sipp.call(edge, "101", number, port=CALLER_PORT, media_port=CALLER_MEDIA,
                       talk_ms=talk_ms, password=PASSWORDS["101"])
    carrier.wait()
    assert result.ok, result.received()
    return Placed(result, "101", number, "answered", 200, round(result.talk_s * 1000),
                  agent="101", pdd_ms=first_18x_ms(result))


def failed(edge: sipp.Edge, callee: str, code: int, disposition: str, uas=None) -> Placed:
    callee_side = uas(edge, port=AGENT_PORTS[callee]) if uas else None
    result = sipp.call_expect_failure(edge, "101", callee, code, port=CALLER_PORT,
                                      media_port=CALLER_MEDIA, password=PASSWORDS["101"])
    if callee_side:
        callee_side.stop()
    assert result.ok, result.received()
    return Placed(result, "101", callee, disposition, code)


def place_known_calls(settings: Settings, work_dir: Path) -> list[Placed]:
    edge = sipp.Edge.from_settings(settings, work_dir)
    for agent, port in AGENT_PORTS.items():
        assert sipp.register(edge, agent, port=port, password=PASSWORDS[agent]).ok
    placed = [
        answered(edge, "101", "102", 2000),
        answered(edge, "101", "103", 3500),
        # from outside: normalised to E.164, recorded by the DID's policy
        answered_from_outside(edge, RECORDED_DID, "102", 1500),
        # to an outside number through the trunk: its post-dial delay is measured
        answered_through_trunk(edge, "+79161112233", 1500),
        failed(edge, "103", 486, "busy", sipp.start_uas_busy),
        failed(edge, "199", 404, "failed"),          # nobody registered as 199
        failed(edge, "104", 408, "no_answer", sipp.start_uas_ring),
    ]
    ringing = sipp.start_uas_ring(edge, port=AGENT_PORTS["105"])
    cancel = sipp.call_and_cancel(edge, "101", "105", ring_ms=1200, port=CALLER_PORT,
                                  media_port=CALLER_MEDIA, password=PASSWORDS["101"])
    ringing.stop()
    assert cancel.ok, cancel.received()
    placed.append(Placed(cancel, "101", "105", "cancelled", 487))
    return placed


def closed_cdrs(client: HttpClient, call_ids: list[str]) -> list[dict]:
    return client.query(
        "SELECT call_id, caller, callee, agent, disposition, sip_code, talk_ms, closed, "
        "pdd_ms "
        "FROM cdrs FINAL WHERE closed AND call_id IN {ids:Array(String)}",
        {"ids": call_ids})


def test_every_sipp_call_becomes_exactly_one_right_cdr(stack: Settings, tmp_path: Path):
    placed = place_known_calls(stack, tmp_path)
    call_ids = [p.result.call_id for p in placed]
    assert len(set(call_ids)) == len(placed)

    client = service_client(stack)
    deadline = time.monotonic() + PIPELINE_DEADLINE_S
    while len(rows := closed_cdrs(client, call_ids)) < len(placed):
        assert time.monotonic() < deadline, (
            f"only {len(rows)} of {len(placed)} calls reached the warehouse")
        time.sleep(0.25)

    all_cdrs = client.query("SELECT call_id, count() AS n FROM cdrs FINAL GROUP BY call_id")
    assert sorted(r["call_id"] for r in all_cdrs) == sorted(call_ids), "dropped or extra calls"
    assert all(r["n"] == 1 for r in all_cdrs), "a call has more than one CDR row"

    by_id = {r["call_id"]: r for r in rows}
    for p in placed:
        cdr = by_id[p.result.call_id]
        assert cdr["disposition"] == p.disposition, p
        assert cdr["sip_code"] == p.sip_code, p
        assert cdr["caller"] == ("+74951234567" if p.caller == OUTSIDE else p.caller)
        assert cdr["callee"] == ("+" + p.callee if p.callee == RECORDED_DID else p.callee)
        assert cdr["agent"] == p.agent
        assert abs(cdr["talk_ms"] - p.talk_ms) <= TALK_TOLERANCE_MS, (p, cdr["talk_ms"])
        if p.pdd_ms is None:  # only a call sent to the trunk has a post-dial delay
            assert cdr["pdd_ms"] is None, (p, cdr)
        else:
            assert abs(cdr["pdd_ms"] - p.pdd_ms) <= PDD_TOLERANCE_MS, (p, cdr["pdd_ms"])

    # The raw events behind them: each stored once, one offer and one end per call (a
    # leg's own call.failed, leg_id "<Call-ID>#<branch>", is one branch's end, not the call's).
    (dupes,) = client.query(
        "SELECT count() - uniqExact(event_id) AS extra FROM call_events")
    assert dupes["extra"] == 0
    per_call = client.query(
        "SELECT call_id, countIf(type = 'call.offered') AS offers, "
        "countIf(type IN ('call.ended', 'call.failed', 'call.cancelled') "
        "AND position(ifNull(leg_id, ''), '#') = 0) AS ends "
        "FROM call_events WHERE call_id IN {ids:Array(String)} GROUP BY call_id",
        {"ids": call_ids})
    assert len(per_call) == len(placed)
    assert all(r["offers"] == 1 and r["ends"] == 1 for r in per_call), per_call

    # Only the DID call was recorded (its policy); its WAV lands as call.recording_ready.
    recorded = next(p for p in placed if p.callee == RECORDED_DID)
    deadline = time.monotonic() + PIPELINE_DEADLINE_S
    while not (ready := client.query(
            "SELECT call_id, extra FROM call_events WHERE type = 'call.recording_ready'")):
        assert time.monotonic() < deadline, "no call.recording_ready reached the warehouse"
        time.sleep(0.25)
    assert [r["call_id"] for r in ready] == [recorded.result.call_id]
    extra = json.loads(ready[0]["extra"])
    wav_path = Path(extra["file"])
    assert wav_path.parent == stack.recordings_wav_dir
    with wave.open(str(wav_path)) as wav:
        seconds = wav.getnframes() / wav.getframerate()
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 8000)
    assert abs(seconds - recorded.talk_ms / 1000) < WAV_TOLERANCE_S
    assert extra["size"] == wav_path.stat().st_size and extra["duration"] == round(seconds, 3)
    (cdr,) = client.query("SELECT recording FROM cdrs FINAL WHERE call_id = {id:String}",
                          {"id": recorded.result.call_id})
    assert cdr["recording"] == str(wav_path)


def test_dashboard_and_sql_interface_answer(stack: Settings):
    health = httpx.get(f"http://127.0.0.1:{stack.dashboard_port}/_stcore/health", timeout=5)
    assert health.status_code == 200
    anonymous = httpx.post(stack.warehouse_url, content=b"SELECT 1", timeout=5)
    assert anonymous.status_code == 401 and "AUTHENTICATION_FAILED" in anonymous.text
    refused = httpx.post(stack.warehouse_url, content=b"DROP TABLE cdrs", timeout=5,
                         auth=(SERVICE_USER, service_password(stack.data_dir)))
    assert refused.status_code == 403 and "read-only" in refused.text
