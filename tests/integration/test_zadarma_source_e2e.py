"""Zadarma as a source on the real path: notifications over HTTP -> the receiver -> Kafka
(``tawag.call-events``) -> the Faust worker's CDR fold -> the warehouse.

The stack is the supervisor's (as ``tawag up``), without the SIP edge, which these calls
never touch: Kafka, streams, warehouse and the API on ports 29xxx. Two receivers:

* the API process ``tawag up`` starts: refusals (401 / 403 / 400, each dead-lettered
  with its reason on ``tawag.dead-letter``), a retry answered 200 with no second event,
  and the ``zd_echo`` check;
* the same app served in this process with the receipt clock set by the test, so the
  notifications that carry no time (ringing, answer, end) are stamped at known instants:
  the warehouse's CDRs of an answered, a missed and an outbound call must then equal the
  CDRs the edge's events of the same calls fold into (tests/ingest/zadarma_calls.py).

Fixed ports: run under ``flock /tmp/tawag-stack.lock``.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import reduce
from urllib.parse import urlencode

import httpx
import pytest
import uvicorn
from stack_harness import stack_settings, wait_for
from zadarma_calls import CALLS, SECRET, TENANT, ZONE, comparable, edge_calls, signed

from api.app import create_app
from api.keys import KeyStore
from api.seen import SeenJournal
from api.zadarma_source import ZadarmaSource
from core.events import from_json
from core.settings import Settings
from ingest.bridge import kafka_producer
from ingest.zadarma import SourceContext, to_events
from streams.folds import cdr as cdr_fold
from tawag.supervisor import Supervisor, components
from warehouse.client import service_client
from warehouse.queries import cdr as cdr_q

pytestmark = pytest.mark.integration

BLOCK = 29000
RECEIVER_PORT = BLOCK + 510
PIPELINE_DEADLINE_S = 90
STACK = ("kafka", "streams", "warehouse", "api")

PROVISIONING = f"""
[tenant.{TENANT}]
domain = "pbx.test"
time_zone = "Europe/Moscow"

[tenant.{TENANT}.zadarma]
secret = "{SECRET}"

[tenant.globex]
domain = "globex.test"
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    settings = stack_settings(tmp_path_factory, "zadarma", block=BLOCK, rtp_min=43000,
                              provisioning=PROVISIONING)
    sup = Supervisor(settings, stack=[c for c in components(settings) if c.name in STACK],
                     out=io.StringIO())
    try:
        sup.start(demo=False)
        yield settings
    finally:
        sup.stop()


class Clock:
    """The in-process receiver's clock: the instant the test says it received at."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> float:
        return self.now.timestamp()


@pytest.fixture(scope="module")
def receiver(stack: Settings, tmp_path_factory) -> Iterator[tuple[str, Clock]]:
    clock = Clock()
    state = tmp_path_factory.mktemp("zadarma-receiver")
    source = ZadarmaSource(stack, SeenJournal(state / "seen.log"),
                           lambda: kafka_producer(stack.kafka_bootstrap), clock=clock)
    app = create_app(stack, client=None, keys=KeyStore(state / "keys.json"), zadarma=source)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=RECEIVER_PORT,
                                           log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{RECEIVER_PORT}"
    wait_for("the in-process receiver", lambda: server.started, 10)
    try:
        yield base, clock
    finally:
        server.should_exit = True
        thread.join(10)
        source.close()


def api_url(settings: Settings, tenant: str = TENANT) -> str:
    return f"http://{settings.api_host}:{settings.api_port}/zadarma/{tenant}"


def post(url: str, form: dict[str, str], signature: str | None) -> httpx.Response:
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if signature is not None:
        headers["Signature"] = signature
    return httpx.post(url, content=urlencode(form), headers=headers, timeout=30)


def read_topic(settings: Settings, topic: str) -> list[tuple[bytes | None, bytes]]:
    """Every record of ``topic`` up to its end offsets as they are now."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None,
                             enable_auto_commit=False)
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        end = consumer.end_offsets(parts)
        records: list[tuple[bytes | None, bytes]] = []

        def done() -> bool:
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend((m.key, m.value) for m in batch)
            return all(consumer.position(tp) >= end[tp] for tp in parts)
        wait_for(f"{topic} read to its end", done, 20)
        return records
    finally:
        consumer.close()


def dead_letters(settings: Settings) -> list[dict]:
    return [json.loads(v) for _, v in read_topic(settings, settings.topic_dead_letter)]


START = {"event": "NOTIFY_START", "call_start": "2026-10-06 10:00:00",
         "pbx_call_id": "in_0000000000000000000000000000000000dup01",
         "caller_id": "79160000001", "called_did": "74951234567"}


def test_zd_echo_is_answered_by_the_api_process(stack: Settings):
    resp = httpx.get(api_url(stack), params={"zd_echo": "8f14e45fce"}, timeout=10)
    assert (resp.status_code, resp.text) == (200, "8f14e45fce")


def test_refusals_are_dead_lettered_with_their_reason(stack: Settings):
    wrong = post(api_url(stack), START, signed(START, "not-the-secret"))
    unknown = post(api_url(stack, "globex"), START, signed(START))
    bad = START | {"call_start": "06.10.2026 10:00"}
    malformed = post(api_url(stack), bad, signed(bad))
    assert (wrong.status_code, unknown.status_code, malformed.status_code) == (401, 403, 400)
    assert all(r.headers["content-type"] == "application/problem+json"
               for r in (wrong, unknown, malformed))
    letters = {(d["source"], d["error"].split(" (")[0].split(":")[0], d["value"])
               for d in dead_letters(stack)}
    assert letters >= {
        ("zadarma@acme", "Signature does not verify", urlencode(START)),
        ("zadarma@globex", "no Zadarma account is configured for tenant 'globex'",
         urlencode(START)),
        ("zadarma@acme", "call_start", urlencode(bad)),
    }
    assert [k for k, _ in read_topic(stack, stack.topic_call_events)
            if k == START["pbx_call_id"].encode()] == []


def test_a_retry_is_answered_200_and_produces_no_second_event(stack: Settings):
    first = post(api_url(stack), START, signed(START))
    retry = post(api_url(stack), START, signed(START))
    assert (first.status_code, first.headers["Tawag-Notification"]) == (200, "accepted")
    assert (retry.status_code, retry.headers["Tawag-Notification"]) == (200, "duplicate")
    mine = [from_json(v) for k, v in read_topic(stack, stack.topic_call_events)
            if k == START["pbx_call_id"].encode()]
    assert [(ev.type.value, ev.ts.isoformat()) for ev in mine] == [
        ("call.offered", "2026-10-06T07:00:00+00:00")]


def expected_cdrs() -> dict[str, dict]:
    return {call_id: comparable(cdr_fold.to_cdr(reduce(
        cdr_fold.apply, events, cdr_fold.CallState(call_id))))
        for call_id, events in edge_calls().items()}


def stored(row: dict) -> dict:
    """A warehouse row in the shape of a folded CDR (flags as bools, no NaN)."""
    out = comparable(row)
    out["closed"], out["recorded"] = bool(out["closed"]), bool(out["recorded"])
    return {k: (None if isinstance(v, float) and v != v else v) for k, v in out.items()}


def test_zadarma_calls_give_the_cdrs_the_edge_gives_for_them(stack: Settings, receiver):
    base, clock = receiver
    for notifications in CALLS.values():
        for form, received_at in notifications:
            clock.now = received_at
            resp = post(f"{base}/zadarma/{TENANT}", form, signed(form))
            assert resp.status_code == 200, resp.text
    expected = expected_cdrs()
    ctx = SourceContext(TENANT, ZONE)
    versions = {cid: sum(len(to_events(form, ctx, at)) for form, at in notifications)
                for cid, notifications in CALLS.items()}
    client = service_client(stack)

    def all_folded() -> dict[str, dict] | None:
        rows = {cid: cdr_q.cdr(client, TENANT, cid) for cid in CALLS}
        done = all(row is not None and row["version"] == versions[cid]
                   for cid, row in rows.items())
        return rows if done else None
    rows = wait_for("every event of the three calls folded into the warehouse's CDRs",
                    all_folded, PIPELINE_DEADLINE_S)
    assert {cid: stored(row) for cid, row in rows.items()} == expected
    refused = [d for d in dead_letters(stack) if d.get("source") == f"zadarma@{TENANT}"]
    assert not [d for d in refused if any(cid in d["value"] for cid in CALLS)]
