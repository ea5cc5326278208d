"""End to end with the CRMs: sipp calls through the real stack reach amoCRM and Bitrix24.

The stack is started by the same supervisor as ``tawag up`` -- Kafka, rtpengine,
Kamailio, ingest, streams, warehouse, dashboard and, because ``crm_enabled`` names two
CRMs, the ``connectors`` worker -- on ports 30150-30169 and a data folder of its own. The
fake amoCRM and Bitrix24 (tests/connectors/fakes, in this process) are configured only
through settings, as an operator would with ``TAWAG_CRM_*``; their OAuth tokens are put
in the token files the worker reads, as after the first authorisation.

The carrier (a trunk source, no digest auth) sends two calls to DIDs:

1. a known client (amoCRM contact owned by 8003 = extension 103) calls a recorded DID
   that rings 102, who answers: Bitrix24 pops the card for 102's user (1270) while it
   rings; each CRM gets exactly one call record with the talk time and a recording link
   that downloads the WAV through the worker's signed endpoint (and only signed);
   ``tawag.crm-contacts`` says the number's manager is extension 103;
2. an unknown number calls a DID that rings 103, who does not answer (408): amoCRM gets
   an incoming lead (unsorted/sip) and a missed-call task; Bitrix24 a lead.
"""

from __future__ import annotations

import io
import json
import os
import signal
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
import pytest
import stack_harness

from connectors.audio import wav_to_mp3
from connectors.tokens import FileTokenStore, Token
from core.settings import Settings, load
from edge import sipp
from tawag.supervisor import Supervisor, read_pid, read_state
from warehouse.client import service_client

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "connectors"))
from fakes.amocrm import FakeAmoCrm  # noqa: E402
from fakes.bitrix24 import FakeBitrix24  # noqa: E402
from fakes.server import FakeServer  # noqa: E402

pytestmark = pytest.mark.integration

NO_ANSWER_TIMEOUT_S = 3
DEADLINE_S = 90
TRUNK_SOURCE_PORT = 30170
AGENT_PORTS = {"102": 30172, "103": 30173}
PASSWORDS = {u: f"crm-e2e-{u}" for u in AGENT_PORTS}
RECORDED_DID, MISSED_DID, POP_DID = "74951230102", "74951230103", "74951230112"
POP_CALLS, POP_RING_MS = 12, 2500
"""The screen-pop measurement: calls from the known client, each ringing 102 this long."""
KNOWN, KNOWN_E164 = "89161234567", "+79161234567"
UNKNOWN, UNKNOWN_E164 = "84957654321", "+74957654321"
AMO_USERS = {"102": "8002", "103": "8003"}
B24_USERS = {"102": "1270", "103": "1271"}
HTTP_PORT = 30169

PROVISIONING = f"""
[tenant.acme]
domain = "pbx.test"
company_number = "+74951230000"
trunk = "127.0.0.1:30179"
trunk_sources = ["127.0.0.1:{TRUNK_SOURCE_PORT}"]

[tenant.acme.extension.102]
password = "{PASSWORDS['102']}"

[tenant.acme.extension.103]
password = "{PASSWORDS['103']}"
no_answer_timeout = {NO_ANSWER_TIMEOUT_S}

[tenant.acme.did."{RECORDED_DID}"]
to = "ext:102"
record = true

[tenant.acme.did."{POP_DID}"]
to = "ext:102"

[tenant.acme.did."{MISSED_DID}"]
to = "ext:103"
"""


def wait_for(what: str, condition: Callable[[], Any], timeout: float = DEADLINE_S) -> Any:
    return stack_harness.wait_for(what, condition, timeout)


@pytest.fixture(scope="module")
def crms() -> Iterator[tuple[tuple[FakeAmoCrm, FakeServer], tuple[FakeBitrix24, FakeServer]]]:
    amo, b24 = FakeAmoCrm(), FakeBitrix24()
    amo.add_contact("Иван Петров", "+7 916 123-45-67", responsible=8003)
    b24.add_entity("Иван Петров", "+7 916 123-45-67", assigned=1271)
    servers = FakeServer(amo).start(), FakeServer(b24).start()
    yield (amo, servers[0]), (b24, servers[1])
    for server in servers:
        server.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, crms) -> Iterator[Settings]:
    (amo, amo_srv), (b24, b24_srv) = crms
    provisioning = tmp_path_factory.mktemp("crm-e2e-prov") / "tawag.toml"
    provisioning.write_text(PROVISIONING)
    settings = load(
        environ={},
        provisioning_file=provisioning,
        pike_density=0,
        data_dir=tmp_path_factory.mktemp("crm-e2e-data"),
        sip_port=30150, kamailio_http_port=30151, evapi_port=30152,
        rtpengine_ng_port=30153, rtpengine_cli_port=30154,
        rtp_port_min=37000, rtp_port_max=37499,
        kafka_bootstrap="127.0.0.1:30155", kafka_controller_port=30156,
        warehouse_http_port=30157, dashboard_port=30158, rtpengine_http_port=30159,
        supervisor_metrics_port=30160, ingest_metrics_port=30161, streams_metrics_port=30162,
        warehouse_metrics_port=30163, connectors_metrics_port=30164, api_port=30165,
        no_answer_timeout=NO_ANSWER_TIMEOUT_S,
        # --- what an operator sets as TAWAG_CRM_* ---
        crm_enabled=("amocrm", "bitrix24"),
        crm_amocrm_base_url=amo_srv.url, crm_amocrm_client_id=amo.client_id,
        crm_amocrm_client_secret=amo.client_secret,
        crm_amocrm_redirect_uri="https://tawag.test/cb",
        crm_amocrm_users=AMO_USERS, crm_amocrm_default_user="8000",
        crm_bitrix24_base_url=b24_srv.url + "/rest/",
        crm_bitrix24_oauth_url=b24_srv.url + "/oauth/token/",
        crm_bitrix24_client_id=b24.client_id, crm_bitrix24_client_secret=b24.client_secret,
        crm_bitrix24_users=B24_USERS, crm_bitrix24_default_user="1",
        crm_screen_pop_deadline_s=5.0,
        recordings_http_port=HTTP_PORT,
    )
    state = settings.data_dir / "connectors"
    FileTokenStore(state / "amocrm-token.json").save(Token(*amo.issue_tokens()))
    FileTokenStore(state / "bitrix24-token.json").save(Token(*b24.issue_tokens()))
    log = io.StringIO()
    sup = Supervisor(settings, out=log)
    stopping = threading.Event()
    # as `tawag up` runs it: a component that dies is restarted, the others run on
    watcher = threading.Thread(target=sup.watch, args=(stopping.is_set,), daemon=True)
    try:
        sup.start(demo=False)
        assert "connectors" in [r.name for r in sup.running], log.getvalue()
        watcher.start()
        yield settings
    finally:
        stopping.set()
        if watcher.is_alive():
            watcher.join(60)
        sup.stop()


def media(agent: str) -> int:
    return 37600 + 10 * (int(agent) - 100)


def crm_contacts(settings: Settings) -> list[dict[str, Any]]:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(settings.crm_topic_contacts,
                             bootstrap_servers=settings.kafka_bootstrap,
                             auto_offset_reset="earliest", consumer_timeout_ms=2000)
    try:
        return [json.loads(r.value) | {"key": r.key.decode()} for r in consumer]
    finally:
        consumer.close()


def test_calls_through_the_stack_reach_the_crms(stack: Settings, crms, tmp_path: Path):
    (amo, _), (b24, _) = crms
    edge = sipp.Edge.from_settings(stack, tmp_path)
    for agent, port in AGENT_PORTS.items():
        assert sipp.register(edge, agent, port=port, password=PASSWORDS[agent]).ok

    # 1. known client -> recorded DID -> 102 answers
    uas = sipp.start_uas_answer(edge, port=AGENT_PORTS["102"], media_port=media("102"))
    answered = sipp.call(edge, KNOWN, RECORDED_DID, port=TRUNK_SOURCE_PORT,
                         media_port=37700, talk_ms=2000)
    uas.wait()
    assert answered.ok, answered.received()
    # 2. unknown number -> DID of 103, who lets it ring out (408)
    ringing = sipp.start_uas_ring(edge, port=AGENT_PORTS["103"])
    missed = sipp.call_expect_failure(edge, UNKNOWN, MISSED_DID, 408,
                                      port=TRUNK_SOURCE_PORT, media_port=37700)
    ringing.stop()
    assert missed.ok, missed.received()

    # Card popped on ring, for 102's Bitrix24 user (and only while it rang)
    shows = wait_for("the Bitrix24 card", lambda: [
        row for row in b24.card_log if row[1] == "show" and row[2] == 1270])
    assert shows and all(row[2] in (1270, 1271) for row in b24.card_log)
    assert any(row[1] == "show" and row[2] == 1271 for row in b24.card_log), \
        "the missed call's card was not shown to 103's user"

    # One call record per call, with the talk time and a recording link
    calls = wait_for("amoCRM call records", lambda: [
        c for c in amo.calls if c["uniq"] == answered.call_id])
    assert len(calls) == 1
    talk_s = answered.talk_s
    assert talk_s is not None and abs(calls[0]["duration"] - talk_s) <= 1
    assert calls[0]["direction"] == "inbound" and calls[0]["call_status"] == 4
    assert calls[0]["phone"].endswith("9161234567")
    link = calls[0]["link"]
    assert link.startswith(f"http://127.0.0.1:{HTTP_PORT}/recordings/") and "sig=" in link
    # amoCRM plays MP3: the stored link names the MP3 of the call's one WAV
    mp3 = httpx.get(link, timeout=10)
    assert mp3.status_code == 200 and mp3.headers["content-type"] == "audio/mpeg"
    recorded = sorted(stack.recordings_wav_dir.glob("*.wav"))
    assert len(recorded) == 1
    assert unquote(urlsplit(link).path).endswith(f"/{recorded[0].stem}.mp3")
    assert mp3.content == wav_to_mp3(recorded[0].read_bytes())
    assert httpx.get(link.split("?")[0], timeout=5).status_code == 403
    assert httpx.get(link.replace("sig=", "sig=x"), timeout=5).status_code == 403

    finished = wait_for("Bitrix24 finish of both calls", lambda: len(b24.finished) >= 2
                        and b24.finished)
    rows = list(finished.values())
    assert sorted(r["EXTERNAL_CALL_ID"] for r in rows) == sorted(
        [answered.call_id, missed.call_id])
    done = next(r for r in rows if r["EXTERNAL_CALL_ID"] == answered.call_id)
    assert done["PORTAL_USER_ID"] == 1270 and done["CALL_STATUS"] == 1
    assert abs(done["CALL_DURATION"] - talk_s) <= 1
    record = wait_for("Bitrix24 attachRecord", lambda: b24.records.get(done["CALL_ID"]))
    # Bitrix24 gets the file itself (its portal cannot reach a private link): the WAV
    assert record["RECORD_URL"] is None and record["content"] == recorded[0].read_bytes()
    failed = next(r for r in rows if r["EXTERNAL_CALL_ID"] == missed.call_id)
    assert failed["CALL_STATUS"] == 0

    # A lead for the unknown number, a task for the missed call
    unsorted = wait_for("the amoCRM incoming lead", lambda: amo.unsorted)
    assert [str(u["metadata"]["phone"])[-10:] for u in unsorted] == ["4957654321"]
    tasks = wait_for("the amoCRM missed-call task", lambda: list(amo.tasks.values()))
    assert len(tasks) == 1 and tasks[0]["responsible_user_id"] == 8000
    assert [lead["PHONE"][-10:] for lead in b24.leads] == ["4957654321"]
    assert len([c for c in amo.calls if c["uniq"] == answered.call_id]) == 1

    # Routing: the known number's manager, as one of our extensions
    contacts = wait_for("tawag.crm-contacts", lambda: [
        r for r in crm_contacts(stack) if r["phone"] == KNOWN_E164])
    by_crm = {r["crm"]: r for r in contacts}
    assert by_crm["amocrm"]["extension"] == "103"
    assert by_crm["amocrm"]["key"] == f"acme:{KNOWN_E164}:amocrm"
    assert by_crm["bitrix24"]["extension"] == "103"


def test_connectors_health_and_status(stack: Settings):
    assert httpx.get(f"http://127.0.0.1:{HTTP_PORT}/health", timeout=5).status_code == 200
    from tawag.supervisor import status

    assert ("connectors", True) in [(row.name, row.up) for row in status(stack)]


def test_screen_pop_while_it_rings_end_to_end(stack: Settings, crms, tmp_path: Path):
    """SIP ringing at the edge -> Bitrix24 shows the card, for calls placed one by one.

    Latency per call: the fake portal's wall-clock time of the ``show`` for 102's user
    minus the ``call.ringing`` event's time (the edge's clock: one machine, one clock).
    Each card must be up before the call is answered (the agent picks up after
    POP_RING_MS): the card pops while the phone rings. The figures are printed (``-s``).
    """
    (_, _), (b24, _) = crms
    edge = sipp.Edge.from_settings(stack, tmp_path)
    assert sipp.register(edge, "102", port=AGENT_PORTS["102"], password=PASSWORDS["102"]).ok
    placed = []
    for _ in range(POP_CALLS):
        uas = sipp.start_uas_answer(edge, port=AGENT_PORTS["102"], media_port=media("102"),
                                    ring_ms=POP_RING_MS)
        result = sipp.call(edge, KNOWN, POP_DID, port=TRUNK_SOURCE_PORT, media_port=37700,
                           talk_ms=300)
        uas.wait()
        assert result.ok, result.received()
        placed.append(result.call_id)

    client = service_client(stack)

    def ringing_and_answer() -> dict[tuple[str, str], float] | None:
        """(call id, type) -> first event time, s; None until every call has both."""
        rows = client.query(
            "SELECT call_id, type, min(toUnixTimestamp64Milli(ts)) AS ms FROM call_events "
            "WHERE call_id IN {ids:Array(String)} AND type IN ('call.ringing', "
            "'call.answered') GROUP BY call_id, type", {"ids": placed})
        times = {(r["call_id"], r["type"]): int(r["ms"]) / 1000 for r in rows}
        return times if len(times) == 2 * POP_CALLS else None

    at = wait_for("the calls' ringing and answer events", ringing_and_answer)

    def shown() -> dict[str, float] | None:
        tawag_call = {cid: reg["params"]["EXTERNAL_CALL_ID"]
                      for cid, reg in b24.registrations.items()}
        times = {tawag_call[cid]: t for cid, action, user, t in b24.card_log
                 if action == "show" and user == 1270 and tawag_call.get(cid) in placed}
        return times if len(times) == POP_CALLS else None

    show_at = wait_for("a card for every call", shown)
    latency_ms = sorted((show_at[c] - at[(c, "call.ringing")]) * 1000 for c in placed)
    print(f"\nscreen-pop SIP 180 -> Bitrix24 card, {POP_CALLS} calls through the stack: "
          f"median {statistics.median(latency_ms):.0f} ms, max {latency_ms[-1]:.0f} ms")
    late = [c for c in placed if show_at[c] >= at[(c, "call.answered")]]
    assert late == [], f"cards shown only after the answer: {late}"
    assert all(ms > 0 for ms in latency_ms)  # the card follows the ringing, never precedes it


KILL_CALLS, KILL_AFTER = 8, 3


def test_connectors_killed_under_traffic_log_every_call_once(stack: Settings, crms,
                                                              tmp_path: Path):
    """What is tried: inbound calls from the known client, one after another; after
    KILL_AFTER of them the connectors worker gets SIGKILL from outside (no clean-up: its
    outbox and offsets as they were), and the calls go on while it is down. The
    supervisor's watch loop brings it back. Asserted: the SIP side never noticed, and each
    call is in amoCRM once (``uniq`` = call id) and finished in Bitrix24 once."""
    (amo, _), (b24, _) = crms
    edge = sipp.Edge.from_settings(stack, tmp_path)
    assert sipp.register(edge, "102", port=AGENT_PORTS["102"], password=PASSWORDS["102"]).ok
    old = read_pid(stack, "connectors")
    assert old is not None
    placed = []
    for n in range(KILL_CALLS):
        if n == KILL_AFTER:
            os.kill(old.pid, signal.SIGKILL)
            killed_at = time.monotonic()
        uas = sipp.start_uas_answer(edge, port=AGENT_PORTS["102"], media_port=media("102"))
        result = sipp.call(edge, KNOWN, POP_DID, port=TRUNK_SOURCE_PORT, media_port=37700,
                           talk_ms=300)
        uas.wait()
        assert result.ok, result.received()
        placed.append(result.call_id)
    back = wait_for("connectors up again with a new PID", lambda: (
        (r := read_pid(stack, "connectors")) and r.pid != old.pid
        and read_state(stack).get("connectors", {}).get("state") == "up" and r))
    down_s = time.monotonic() - killed_at
    assert read_state(stack)["connectors"]["last_exit"] == "killed by SIGKILL"

    def logged() -> dict[str, int] | None:
        counts = {c: sum(1 for x in amo.calls if x["uniq"] == c) for c in placed}
        return counts if all(counts.values()) else None

    assert wait_for("an amoCRM call record for every call", logged) == dict.fromkeys(placed, 1)

    def finished() -> dict[str, int] | None:
        counts = {c: sum(1 for r in b24.finished.values() if r["EXTERNAL_CALL_ID"] == c)
                  for c in placed}
        return counts if all(counts.values()) else None

    assert wait_for("a Bitrix24 finish for every call", finished) == dict.fromkeys(placed, 1)
    assert back.pid != old.pid
    print(f"\nconnectors   down {down_s:6.1f} s, backlog processed "
          f"{time.monotonic() - killed_at:6.1f} s ({KILL_CALLS - KILL_AFTER} calls placed "
          f"after the kill; pid {old.pid} -> {back.pid})")
