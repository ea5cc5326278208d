"""``POST /calls``' originations (api.originations) without the edge: how one is tied to
its call, per tenant, and expires. The edge here is a stand-in implementing
:class:`connectors.click_to_call.EdgeControl`; the real one is exercised in
tests/integration/test_api_click_to_call_e2e.py."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from api.originations import Originations, tenant_domain
from connectors.click_to_call import ClickToCallLinks, EdgeOriginator, OriginationRefused
from connectors.outbox import Outbox
from core.events import Direction, Event, EventType
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
