"""End to end, two tenants and two CRM portals: each call reaches its own tenant's CRM.

The stack that ``tawag up`` starts (stack_harness, port block 18000, RTP 42000-42499,
sipp media 42600+) with no ``TAWAG_CRM_*`` at all: both connections come from the
provisioning file, as an operator writes them --

- tenant ``acme`` (SIP domain pbx.test, extension 102) -> a fake amoCRM,
- tenant ``globex`` (SIP domain globex.test, extension 202) -> a fake Bitrix24,

each with its OAuth tokens in its own token file under ``connectors/tenants/<name>/``.
The carrier sends DID calls for both tenants (each from its own trunk source), the
agents answer, and the test asserts:

1. each portal got exactly its tenant's calls, each once (amoCRM ``uniq``, Bitrix24
   ``EXTERNAL_CALL_ID`` of ``finish``), and no call of the other tenant;
2. while acme's amoCRM answers every request with 500, globex's calls placed meanwhile
   are finished in its Bitrix24 as fast as before (figures printed with ``-s``), acme's
   wait in acme's outbox, and once amoCRM is back every one of them arrives once.
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import stack_harness
from stack_harness import running_stack, stack_settings

from connectors.tokens import FileTokenStore, Token
from core.settings import Settings
from edge import sipp

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "connectors"))
from fakes.amocrm import FakeAmoCrm  # noqa: E402
from fakes.bitrix24 import FakeBitrix24  # noqa: E402
from fakes.server import FakeServer, FaultPlan, Reply  # noqa: E402

pytestmark = pytest.mark.integration

BLOCK, RTP_MIN = 18000, 42000
HTTP_PORT = BLOCK + 169
ACME_TRUNK, GLOBEX_TRUNK = BLOCK + 170, BLOCK + 171
AGENTS = {"acme": ("102", BLOCK + 172, "pbx.test"), "globex": ("202", BLOCK + 173, "globex.test")}
PASSWORDS = {"102": "acme-102-e2e", "202": "globex-202-e2e"}
DIDS = {"acme": "74951230102", "globex": "74957770202"}
CALLERS = {"acme": "89161234567", "globex": "89031112233"}
CALLS_EACH = 3
DEADLINE_S = 90
HELD_BACK_S = 5.0
"""A Bitrix24 finish this much later than the slowest one without an outage counts as held
back (an amoCRM backoff step reaches 30 s; a shared queue would wait for it)."""
BASELINE: dict[str, float] = {}
"""Slowest globex finish after its call ended without an outage (first test), s."""


def provisioning(amo: FakeAmoCrm, amo_url: str, b24: FakeBitrix24, b24_url: str) -> str:
    return f"""
[tenant.acme]
domain = "pbx.test"
trunk_sources = ["127.0.0.1:{ACME_TRUNK}"]

[tenant.acme.extension.102]
password = "{PASSWORDS['102']}"

[tenant.acme.did."{DIDS['acme']}"]
to = "ext:102"

[tenant.acme.crm.amocrm]
base_url = "{amo_url}"
client_id = "{amo.client_id}"
client_secret = "{amo.client_secret}"
redirect_uri = "https://tawag.test/cb"
users = {{ "102" = "8002" }}
default_user = "8000"

[tenant.globex]
domain = "globex.test"
trunk_sources = ["127.0.0.1:{GLOBEX_TRUNK}"]

[tenant.globex.extension.202]
password = "{PASSWORDS['202']}"

[tenant.globex.did."{DIDS['globex']}"]
to = "ext:202"

[tenant.globex.crm.bitrix24]
base_url = "{b24_url}/rest/"
oauth_url = "{b24_url}/oauth/token/"
client_id = "{b24.client_id}"
client_secret = "{b24.client_secret}"
users = {{ "202" = "1270" }}
default_user = "1"
"""


@pytest.fixture(scope="module")
def portals() -> Iterator[tuple[tuple[FakeAmoCrm, FakeServer], tuple[FakeBitrix24, FakeServer]]]:
    amo, b24 = FakeAmoCrm(), FakeBitrix24()
    amo.add_contact("Иван Петров", "+7 916 123-45-67", responsible=8002)
    b24.add_entity("Глеб Орлов", "+7 903 111-22-33", assigned=1270)
    servers = FakeServer(amo).start(), FakeServer(b24).start()
    yield (amo, servers[0]), (b24, servers[1])
    for server in servers:
        server.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, portals) -> Iterator[Settings]:
    (amo, amo_srv), (b24, b24_srv) = portals
    settings = stack_settings(
        tmp_path_factory, "tenants-crm", block=BLOCK, rtp_min=RTP_MIN,
        provisioning=provisioning(amo, amo_srv.url, b24, b24_srv.url),
        recordings_http_port=HTTP_PORT, crm_screen_pop_deadline_s=5.0)
    assert settings.crm_enabled == ()  # nothing from TAWAG_CRM_*: the file says it all
    tenants = settings.connectors_dir / "tenants"
    FileTokenStore(tenants / "acme" / "amocrm-token.json").save(Token(*amo.issue_tokens()))
    FileTokenStore(tenants / "globex" / "bitrix24-token.json").save(Token(*b24.issue_tokens()))
    with running_stack(settings) as sup:
        assert "connectors" in [r.name for r in sup.running]
        yield settings


def media(tenant: str) -> int:
    return RTP_MIN + 600 + 20 * list(AGENTS).index(tenant)


def place(edge: sipp.Edge, tenant: str) -> tuple[str, float]:
    """One answered DID call of ``tenant``: (call id, when it ended, monotonic)."""
    user, port, _ = AGENTS[tenant]
    uas = sipp.start_uas_answer(edge, port=port, media_port=media(tenant))
    trunk = ACME_TRUNK if tenant == "acme" else GLOBEX_TRUNK
    result = sipp.call(edge, CALLERS[tenant], DIDS[tenant], port=trunk,
                       media_port=RTP_MIN + 700, talk_ms=300)
    uas.wait()
    assert result.ok, result.received()
    return result.call_id, time.monotonic()


def finish_lags(b24: FakeBitrix24, ended: dict[str, float]) -> list[float]:
    """Wait until every call in ``ended`` is finished in Bitrix24; seconds from each
    call's end to when the test saw its finish (polled every 0.2 s), sorted."""
    seen: dict[str, float] = {}

    def done() -> bool:
        for call_id in set(b24_finished(b24)) & set(ended):
            seen.setdefault(call_id, time.monotonic())
        return len(seen) == len(ended)

    wait_for("globex's calls in its Bitrix24", done, timeout=60)
    return sorted(seen[c] - ended[c] for c in ended)


def amo_uniqs(amo: FakeAmoCrm) -> list[str]:
    return sorted(c["uniq"] for c in amo.calls)


def b24_finished(b24: FakeBitrix24) -> list[str]:
    return sorted(r["EXTERNAL_CALL_ID"] for r in b24.finished.values())


def wait_for(what: str, condition: Any, timeout: float = DEADLINE_S) -> Any:
    return stack_harness.wait_for(what, condition, timeout)


@pytest.fixture(scope="module")
def edge(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> sipp.Edge:
    base = sipp.Edge.from_settings(stack, tmp_path_factory.mktemp("tenants-sipp"))
    for tenant, (user, port, domain) in AGENTS.items():
        agent_edge = dataclasses.replace(base, domain=domain)
        assert sipp.register(agent_edge, user, port=port, password=PASSWORDS[user]).ok, tenant
    return base


def test_each_portal_gets_exactly_its_tenants_calls(stack: Settings, portals, edge):
    (amo, _), (b24, _) = portals
    placed: dict[str, list[str]] = {"acme": [], "globex": []}
    globex_ended = {}
    for _ in range(CALLS_EACH):
        placed["acme"].append(place(edge, "acme")[0])
        call_id, globex_ended[call_id] = place(edge, "globex")
        placed["globex"].append(call_id)

    lag = finish_lags(b24, globex_ended)
    BASELINE["globex"] = lag[-1]
    print(f"\nno outage: globex's {len(lag)} calls finished in Bitrix24 "
          f"{statistics.median(lag):.1f} s (median), {lag[-1]:.1f} s (max) after their call "
          "ended (the call record waits crm_recording_wait_s for a recording)")
    wait_for("acme's calls in its amoCRM", lambda: len(amo.calls) >= CALLS_EACH)
    time.sleep(2)  # a duplicate or a stray call would arrive within this (not a sync wait)
    assert amo_uniqs(amo) == sorted(placed["acme"])
    assert b24_finished(b24) == sorted(placed["globex"])
    assert {r["params"]["EXTERNAL_CALL_ID"] for r in b24.registrations.values()} <= set(
        placed["globex"])
    assert all(c["phone"].endswith("9161234567") for c in amo.calls)
    # each tenant's state is its own: tokens and journal under connectors/tenants/<name>
    tenants = stack.connectors_dir / "tenants"
    assert sorted(p.name for p in tenants.iterdir()) == ["acme", "globex"]
    assert (tenants / "acme" / "outbox.jsonl").exists()
    assert (tenants / "globex" / "outbox.jsonl").exists()
    assert not (stack.connectors_dir / "outbox.jsonl").exists()


def test_acmes_crm_outage_does_not_hold_back_globex(stack: Settings, portals, edge):
    (amo, _), (b24, _) = portals
    before_amo, before_b24 = set(amo_uniqs(amo)), set(b24_finished(b24))
    before_requests = len(amo.requests)
    amo.faults.add(Reply(500, b"Internal Server Error"), 10**6)
    try:
        acme, globex_ended = [], {}
        for _ in range(CALLS_EACH):
            acme.append(place(edge, "acme")[0])
            call_id, ended = place(edge, "globex")
            globex_ended[call_id] = ended
        lag = finish_lags(b24, globex_ended)
        assert set(amo_uniqs(amo)) == before_amo  # acme's amoCRM took nothing meanwhile
        print(f"\nacme's amoCRM down (500): globex's {len(lag)} calls finished in Bitrix24 "
              f"{statistics.median(lag):.1f} s (median), {lag[-1]:.1f} s (max) after "
              f"their call ended; amoCRM answered {len(amo.requests) - before_requests} "
              "requests with 500 meanwhile")
        assert lag[-1] < BASELINE.get("globex", 10.0) + HELD_BACK_S
    finally:
        amo.faults = FaultPlan()  # acme's amoCRM is back
    wait_for("acme's backlog in its amoCRM", lambda: set(amo_uniqs(amo)) >= before_amo | set(acme))
    time.sleep(2)  # a duplicate would arrive within this (not a sync wait)
    assert amo_uniqs(amo) == sorted(before_amo | set(acme))  # each once
    assert b24_finished(b24) == sorted(before_b24 | set(globex_ended))
