"""``connectors.service.run`` on a real Kafka broker (ports 31190/31191) against the fakes.

Schema-v1 events and CDRs are produced the way the bridge and the Faust worker do (keyed
by call id); the run loop must screen-pop and deliver them, and a second run after a
stop must deliver only what is new (committed offsets + outbox keys).
"""

from __future__ import annotations

import dataclasses
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest
from crm_helpers import AMO_USERS, B24_USERS, inbound_call, wait_for
from kafka import KafkaProducer

from connectors import service
from connectors.tokens import FileTokenStore, Token
from core.events import to_json
from core.records import cdr_to_json
from core.settings import Settings, load
from tawag import kafka as tk

pytestmark = pytest.mark.integration
KNOWN = "+79161234567"


@pytest.fixture(scope="module")
def kafka_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    s = load(data_dir=tmp_path_factory.mktemp("crm-kafka"), kafka_bootstrap="127.0.0.1:31190",
             kafka_controller_port=31191, recordings_http_port=31192)
    if tk.missing_jars(s):
        pytest.skip(f"Kafka jars not installed in {s.kafka_libs}")
    tk.prepare_storage(s)
    s.log_dir.mkdir(parents=True, exist_ok=True)
    with (s.log_dir / "kafka.log").open("ab") as log:
        proc = subprocess.Popen(tk.kafka_command(s), stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: proc.poll() is not None or tk.kafka_ready(s, timeout=1.0),
                 timeout=120, what="Kafka ready")
        assert proc.poll() is None, "broker exited"
        tk.ensure_topics(s)
        yield s
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def start_run(settings: Settings, amo, b24) -> tuple[threading.Thread, threading.Event]:
    stop = threading.Event()
    settings = dataclasses.replace(
        settings, crm_enabled=("amocrm", "bitrix24"),
        crm_amocrm_base_url=amo[1].url, crm_amocrm_client_id=amo[0].client_id,
        crm_amocrm_client_secret=amo[0].client_secret, crm_amocrm_users=AMO_USERS,
        crm_bitrix24_base_url=b24[1].url + "/rest/",
        crm_bitrix24_oauth_url=b24[1].url + "/oauth/token/",
        crm_bitrix24_client_id=b24[0].client_id,
        crm_bitrix24_client_secret=b24[0].client_secret, crm_bitrix24_users=B24_USERS,
        crm_screen_pop_deadline_s=5.0, crm_recording_wait_s=0.0)
    thread = threading.Thread(target=service.run, args=(settings,), kwargs={"stop": stop},
                              daemon=True)
    thread.start()
    return thread, stop


def test_run_consumes_both_topics_and_resumes_without_repeats(kafka_settings, amo, b24):
    s = kafka_settings
    amo[0].add_contact("Иван", "+7 916 123-45-67", responsible=504141)
    b24[0].add_entity("Иван", "+7 916 123-45-67", assigned=99)
    state = s.data_dir / "connectors"
    FileTokenStore(state / "amocrm-token.json").save(Token(*amo[0].issue_tokens()))
    FileTokenStore(state / "bitrix24-token.json").save(Token(*b24[0].issue_tokens()))
    producer = KafkaProducer(bootstrap_servers=s.kafka_bootstrap, acks="all", linger_ms=0)

    def produce(call_id: str, *, card_first: bool = False) -> float:
        """Send a call's events, then its CDRs. With ``card_first`` the CDRs wait until the
        card is up: events and CDRs travel on two topics, and a worker that reads the
        closed CDR first rightly shows no card for a call that is over."""
        events, cdrs = inbound_call(call_id, KNOWN, answer="101")
        sent = time.time()
        for ev in events:
            producer.send(s.topic_call_events, key=call_id.encode(), value=to_json(ev))
        producer.flush()
        if card_first:
            wait_for(lambda: b24[0].call_for(call_id), timeout=30, what=f"card for {call_id}")
        for cdr in cdrs:
            producer.send(s.topic_cdrs, key=call_id.encode(), value=cdr_to_json(cdr))
        producer.flush()
        return sent

    thread, stop = start_run(s, amo, b24)
    try:
        produce("W00")  # warm-up: the consumer group's first join takes seconds
        wait_for(lambda: amo[0].calls, timeout=60, what="warm-up call logged")
        first = [f"Q{n:02d}" for n in range(10)]
        sent = {}
        for call_id in first:
            sent[call_id] = produce(call_id, card_first=True)
        # Kafka orders one call's messages (one key, one partition), not calls across
        # partitions, so the CRM order is the order the CDRs were consumed in.
        wait_for(lambda: len(amo[0].calls) == 11, timeout=30, what="first batch logged")
    finally:
        stop.set()
        thread.join(30)
    by_call = {reg["params"]["EXTERNAL_CALL_ID"]: cid for cid, reg in b24[0].registrations.items()}
    shown = {cid: at for cid, action, _, at in b24[0].card_log if action == "show"}
    ms = [(shown[by_call[c]] - sent[c]) * 1000 for c in first]
    print(f"\nscreen-pop through Kafka: median {statistics.median(ms):.1f} ms, "
          f"max {max(ms):.1f} ms over {len(ms)} calls")

    second = [f"R{n:02d}" for n in range(5)]
    for call_id in second:
        produce(call_id)
    thread, stop = start_run(s, amo, b24)
    try:
        wait_for(lambda: len(amo[0].calls) == 16, timeout=60, what="second batch logged")
        wait_for(lambda: len(b24[0].finished) == 16, timeout=30, what="Bitrix24 finished")
    finally:
        stop.set()
        thread.join(30)
    producer.close()
    logged = [c["uniq"] for c in amo[0].calls]
    assert sorted(logged[:11]) == sorted(["W00", *first]) and sorted(logged[11:]) == second
    finished = [row["EXTERNAL_CALL_ID"] for row in b24[0].finished.values()]
    assert sorted(finished[:11]) == sorted(["W00", *first]) and sorted(finished[11:]) == second
    assert len(amo[0].call_posts) == 16  # nothing re-sent after the restart
    assert len(b24[0].registrations) == 16
