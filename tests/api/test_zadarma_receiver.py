"""The Zadarma receiver (api.zadarma_source) on the ASGI app, Kafka replaced by a recording
producer: verification, refusals with dead letters, de-duplication that survives a restart,
and 503 (nothing remembered) while Kafka does not acknowledge. The same over real HTTP and
Kafka: tests/integration/test_zadarma_source_e2e.py."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlencode

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.keys import KeyStore
from api.seen import SeenJournal
from api.zadarma_source import ZadarmaSource
from core import zadarma
from core.events import EventType, from_json
from core.settings import load

SECRET = "zadarma-api-secret"
START = {"event": "NOTIFY_START", "call_start": "2026-10-05 09:15:07",
         "pbx_call_id": "in_ae6b03b3b0765d127ec0b739209346bbc4f0d52d",
         "caller_id": "79161234567", "called_did": "74951234567"}


def signed(form, secret=SECRET):
    return zadarma.signature(zadarma.signed_string(form), secret)


class Future:
    def __init__(self, ok: bool) -> None:
        self.ok = ok

    def get(self, timeout=None):
        if not self.ok:
            raise TimeoutError("KafkaTimeoutError: no broker")
        return None


class RecordingProducer:
    """Kafka as the receiver sees it: records what it acknowledges."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.down = False

    def send(self, topic, *, key, value):
        if not self.down:
            self.sent.append((topic, key, value))
        return Future(not self.down)

    def flush(self, timeout=None):
        pass

    def close(self, timeout=None):
        pass

    def topic(self, name):
        return [(k, v) for t, k, v in self.sent if t == name]


@pytest.fixture
def setup(tmp_path: Path):
    prov = tmp_path / "tawag.toml"
    prov.write_text('[tenant.acme]\ndomain = "pbx.test"\ntime_zone = "Europe/Moscow"\n\n'
                    f'[tenant.acme.zadarma]\nsecret = "{SECRET}"\n\n'
                    '[tenant.globex]\ndomain = "globex.test"\n')
    settings = load(environ={}, provisioning_file=prov, data_dir=tmp_path / "data")
    producer = RecordingProducer()

    def client():
        source = ZadarmaSource(settings, SeenJournal(tmp_path / "seen.log"), lambda: producer,
                               clock=lambda: 1_791_180_000.0)
        return TestClient(create_app(settings, client=None,
                                     keys=KeyStore(tmp_path / "keys.json"), zadarma=source))
    return settings, producer, client


def post(client, form, signature, tenant="acme"):
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if signature is not None:
        headers["Signature"] = signature
    return client.post(f"/zadarma/{tenant}", content=urlencode(form), headers=headers)


def dead_letters(producer):
    return [json.loads(v) for _, v in producer.topic("tawag.dead-letter")]


def test_zd_echo_is_answered_raw_for_a_tenant_with_an_account(setup):
    _, _, client = setup
    http = client()
    resp = http.get("/zadarma/acme", params={"zd_echo": "d41d8cd98f"})
    assert (resp.status_code, resp.text, resp.headers["content-type"]) == (
        200, "d41d8cd98f", "text/plain; charset=utf-8")
    assert http.get("/zadarma/globex", params={"zd_echo": "x"}).status_code == 404
    assert http.get("/zadarma/acme").status_code == 422  # no zd_echo: not Zadarma's check


def test_a_verified_notification_becomes_its_event_on_the_call_events_topic(setup):
    settings, producer, client = setup
    resp = post(client(), START, signed(START))
    assert (resp.status_code, resp.headers["Tawag-Notification"]) == (200, "accepted")
    [(key, value)] = producer.topic("tawag.call-events")
    ev = from_json(value)
    assert (key, ev.type, ev.tenant, ev.call_id, ev.caller) == (
        START["pbx_call_id"].encode(), EventType.CALL_OFFERED, "acme", START["pbx_call_id"],
        "+79161234567")
    assert ev.ts.isoformat() == "2026-10-05T06:15:07+00:00"  # Moscow's 09:15:07
    assert dead_letters(producer) == []


def test_a_retry_is_answered_200_and_produces_nothing_even_after_a_restart(setup):
    _, producer, client = setup
    first = client()
    assert post(first, START, signed(START)).status_code == 200
    again = post(first, START, signed(START))
    assert (again.status_code, again.headers["Tawag-Notification"]) == (200, "duplicate")
    restarted = client()  # a new process: the journal on disk is all it knows
    assert post(restarted, START, signed(START)).headers["Tawag-Notification"] == "duplicate"
    assert len(producer.topic("tawag.call-events")) == 1


@pytest.mark.parametrize("signature,status,reason", [
    (None, 401, "no Signature header (event 'NOTIFY_START')"),
    (signed(START, "not-the-secret"), 401, "Signature does not verify (event 'NOTIFY_START')"),
])
def test_an_unverifiable_notification_is_refused_and_dead_lettered(setup, signature, status,
                                                                   reason):
    _, producer, client = setup
    resp = post(client(), START, signature)
    assert resp.status_code == status
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["detail"] == reason
    assert producer.topic("tawag.call-events") == []
    assert dead_letters(producer) == [{"source": "zadarma@acme", "error": reason,
                                       "value": urlencode(START)}]


def test_a_tenant_without_an_account_is_refused_403(setup):
    _, producer, client = setup
    resp = post(client(), START, signed(START), tenant="globex")
    assert resp.status_code == 403
    [letter] = dead_letters(producer)
    assert letter["source"] == "zadarma@globex" and "no Zadarma account" in letter["error"]


def test_a_malformed_notification_is_refused_400_and_dead_lettered(setup):
    _, producer, client = setup
    bad = START | {"call_start": "05.10.2026 09:15"}
    resp = post(client(), bad, signed(bad))  # signed: the account sent it, it is malformed
    assert resp.status_code == 400
    assert resp.json()["type"].endswith("/malformed-notification")
    [letter] = dead_letters(producer)
    assert letter["error"].startswith("call_start: expected 'Y-m-d H:i:s'")
    assert producer.topic("tawag.call-events") == []
    # and it is not remembered: a corrected notification of that call still goes through
    assert post(client(), START, signed(START)).headers["Tawag-Notification"] == "accepted"


def test_kafka_away_answers_503_and_the_retry_produces_once_it_is_back(setup):
    _, producer, client = setup
    http = client()
    producer.down = True
    resp = post(http, START, signed(START))
    assert (resp.status_code, resp.headers["Retry-After"]) == (503, "30")
    producer.down = False
    assert post(http, START, signed(START)).headers["Tawag-Notification"] == "accepted"
    assert len(producer.topic("tawag.call-events")) == 1


def test_the_journal_forgets_ids_older_than_it_keeps(tmp_path: Path):
    path = tmp_path / "seen.log"
    journal = SeenJournal(path, clock=lambda: 1_000.0)
    journal.add("old")
    journal.close()
    path.write_text(path.read_text() + "17")  # a torn last line
    later = SeenJournal(path, keep_s=100, clock=lambda: 2_000.0)
    later.add("new")
    later.close()
    reopened = SeenJournal(path, keep_s=100, clock=lambda: 2_050.0)
    assert "old" not in reopened and "new" in reopened and len(reopened) == 1
