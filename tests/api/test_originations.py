"""``POST /calls``' originations (api.originations) without the edge: how one is tied to
its call, per tenant, and expires. The edge here is a stand-in implementing
:class:`connectors.click_to_call.EdgeControl`; the real one is exercised in
tests/integration/test_api_click_to_call_e2e.py."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from kafka.errors import RebalanceInProgressError

from api.consume import consume
from api.originations import Originations, tenant_domain
from api.subscriptions import SubscriptionStore
from api.webhooks import Webhooks
from connectors.click_to_call import ClickToCallLinks, EdgeOriginator, OriginationRefused
from connectors.outbox import Outbox
from core.events import Direction, Event, EventType, to_json
from core.settings import load
from edge.control import EdgeError, Registration

CLIENT = "+79161234567"
PROVISIONING = """
[tenant.acme]
domain = "pbx.test"
[tenant.acme.extension.101]
password = "secret-101"
[tenant.beta]
domain = "beta.test"
[tenant.beta.extension.101]
password = "secret-b101"
"""


class Edge:
    """Extensions ``ext:<domain>:<user>`` provisioned, all registered; records bridges."""

    EdgeError = EdgeError

    def __init__(self, provisioned: set[str], *, down: bool = False) -> None:
        self.provisioned, self.down, self.bridged = provisioned, down, []

    def pbx_value(self, settings, key: str) -> str | None:
        if self.down:
            raise EdgeError("htable.get: connection refused")
        return "1" if key in self.provisioned else None

    def registrations(self, settings, user: str) -> list[Registration]:
        return [Registration(f"sip:{user}@127.0.0.1:5090")]

    def bridge_call(self, settings, first: str, refer_to: str, *, proxy=None) -> None:
        self.bridged.append((first, refer_to))


def originations(tmp_path: Path, edge: Edge, now: float = 100.0) -> Originations:
    prov = tmp_path / "tawag.toml"
    prov.write_text(PROVISIONING)
    settings = load(environ={}, data_dir=tmp_path, provisioning_file=prov,
                    no_answer_timeout=5)
    box = Outbox(tmp_path / "originations.jsonl")
    return Originations(box, EdgeOriginator(settings, ClickToCallLinks(box), edge,
                                            now=lambda: now), clock=lambda: now)


def offered(tenant: str, call_id: str, caller: str, at: float) -> Event:
    return Event(f"{call_id}-1", EventType.CALL_OFFERED, ts=datetime.fromtimestamp(at, UTC),
                 tenant=tenant, source="test", call_id=call_id, leg_id=call_id,
                 direction=Direction.OUTBOUND, caller=caller, callee=CLIENT)


def test_the_tenants_own_call_connects_it(tmp_path):
    edge = Edge({"ext:pbx.test:101", "ext:beta.test:101"})
    origins = originations(tmp_path, edge)
    row = origins.place("beta", "101", "8 916 123-45-67", key_id="k1")
    assert (row["state"], row["number"], row["expires_at"]) == ("pending", CLIENT, 120.0)
    assert edge.bridged == [("sip:101@127.0.0.1:5090", f"<sip:{CLIENT}@beta.test>")]
    origins.handle_event(offered("acme", "A1", "101", 101.0))  # acme's 101: not this one
    assert origins.get("beta", row["id"])["state"] == "pending"
    origins.handle_event(offered("beta", "B1", "101", 101.0))
    assert {k: origins.get("beta", row["id"])[k] for k in ("state", "call_id")} == {
        "state": "connected", "call_id": "B1"}
    assert origins.get("acme", row["id"]) is None  # another tenant's id is nobody's
    assert origins.expire(1e12) == 0  # a connected one never expires


def test_no_call_in_the_window_expires_it_and_a_late_call_claims_nothing(tmp_path):
    origins = originations(tmp_path, Edge({"ext:pbx.test:101"}))
    row = origins.place("acme", "101", CLIENT)
    assert origins.expire(119.0) == 0
    assert origins.expire(121.0) == 1
    origins.handle_event(offered("acme", "A2", "101", 110.0))
    assert {k: origins.get("acme", row["id"])[k] for k in ("state", "call_id")} == {
        "state": "expired", "call_id": None}
    # and it survives a restart of the API (the journal)
    again = Outbox(tmp_path / "originations.jsonl")
    assert again.mark(f"api-origination|{row['id']}")["state"] == "expired"


@pytest.mark.parametrize(("tenant", "extension", "number", "edge", "status"), [
    ("acme", "101", "12", Edge({"ext:pbx.test:101"}), 400),
    ("acme", "101", CLIENT, Edge({"ext:beta.test:101"}), 404),  # beta's, not acme's
    ("zeta", "101", CLIENT, Edge({"ext:pbx.test:101"}), 404),  # no such tenant
    ("acme", "101", CLIENT, Edge({"ext:pbx.test:101"}, down=True), 503),
])
def test_refusals_place_and_keep_nothing(tmp_path, tenant, extension, number, edge, status):
    origins = originations(tmp_path, edge)
    with pytest.raises(OriginationRefused) as refused:
        origins.place(tenant, extension, number)
    assert refused.value.status == status
    assert edge.bridged == []
    assert origins.outbox.marks("") == {}


def test_a_tenants_domain_comes_from_provisioning(tmp_path):
    settings = originations(tmp_path, Edge(set())).originate.settings
    assert [tenant_domain(settings, t) for t in ("acme", "beta", "zeta")] == [
        "pbx.test", "beta.test", None]


class RebalancingConsumer:
    """kafka-python's consumer as api.consume.consume drives it: scripted batches, then
    empty polls; its first commit is refused the way a rebalance refuses it (a CI run's
    webhook thread ended there, and no origination expired after)."""

    def __init__(self, batches: list[list[Any]], stop: threading.Event, polls: int) -> None:
        self.batches, self.stop, self.polls, self.commits = batches, stop, polls, []
        self.now = 105.0  # the loop's clock: 5 s a poll

    def poll(self, timeout_ms: int) -> dict[str, list[Any]]:
        self.polls -= 1
        self.now += 5.0
        if self.polls <= 0:
            self.stop.set()
        return {"tp": self.batches.pop(0)} if self.batches else {}

    def commit(self) -> None:
        self.commits.append(len(self.commits) == 0)
        if self.commits[-1]:
            raise RebalanceInProgressError("the group is rebalancing")


def test_a_commit_refused_by_a_rebalance_does_not_stop_the_loop(tmp_path, caplog):
    settings = load(environ={}, data_dir=tmp_path)
    origins = originations(tmp_path, Edge({"ext:pbx.test:101"}))
    row = origins.place("acme", "101", CLIENT)
    hooks = Webhooks(Outbox(tmp_path / "outbox.jsonl"), SubscriptionStore(
        tmp_path / "subscriptions.json"), http=None, max_age_s=60)
    first = SimpleNamespace(topic=settings.topic_call_events, offset=0,
                            value=to_json(offered("acme", "A1", "102", 101.0)))
    second = SimpleNamespace(topic=settings.topic_call_events, offset=1,
                             value=to_json(offered("acme", "A2", "102", 102.0)))
    stop = threading.Event()
    consumer = RebalancingConsumer([[first], [second]], stop, polls=5)
    with caplog.at_level(logging.WARNING):
        consume(consumer, hooks, settings, stop=stop, originations=origins,
                clock=lambda: consumer.now)
    assert consumer.commits == [True, False]  # refused, then the next batch's went through
    assert "commit refused by a rebalance" in caplog.text
    assert origins.get("acme", row["id"])["state"] == "expired"  # the loop went on
