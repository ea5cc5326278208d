"""Per-tenant CRM connections (issue 12): each tenant's calls reach its own CRM only, and
one tenant's CRM outage does not hold back another tenant's deliveries.

The connections come from the provisioning file exactly as ``tawag connectors`` reads
it (``connectors.wiring.build_workers``: clients, token files, outbox per tenant); only
Kafka is left out -- CDRs are handed to the workers as the consume loop would.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest
from crm_helpers import FAST, RECORDING_SECRET, inbound_call, wait_for
from fakes.server import FaultPlan, Reply

from connectors.tenants import connection_settings, connections
from connectors.tokens import FileTokenStore, Token
from connectors.wiring import build_workers
from core.settings import Settings
from edge import provision

KNOWN = "+79161234567"


def provisioning(amo_url: str, amo, b24_url: str, b24) -> str:
    return f"""
[tenant.acme]
domain = "pbx.test"

[tenant.acme.crm.amocrm]
base_url = "{amo_url}"
client_id = "{amo.client_id}"
client_secret = "{amo.client_secret}"
redirect_uri = "https://tawag.test/cb"
users = {{ "101" = "8001" }}
default_user = "8000"

[tenant.globex]
domain = "globex.test"

[tenant.globex.crm]
recordings_base_url = "https://rec.globex.test/recordings"

[tenant.globex.crm.bitrix24]
base_url = "{b24_url}/rest/"
oauth_url = "{b24_url}/oauth/token/"
client_id = "{b24.client_id}"
client_secret = "{b24.client_secret}"
users = {{ "101" = 1269 }}
default_user = "1"

[tenant.initech]
domain = "initech.test"
"""


@pytest.fixture
def two_tenants(amo, b24, tmp_path: Path) -> Settings:
    (fa, sa), (fb, sb) = amo, b24
    fa.add_contact("Иван", "+7 916 123-45-67", responsible=8001)
    fb.add_entity("Иван", "+7 916 123-45-67", assigned=1269)
    prov = tmp_path / "tawag.toml"
    prov.write_text(provisioning(sa.url, fa, sb.url, fb))
    settings = Settings(data_dir=tmp_path / "var", provisioning_file=prov,
                        recordings_base_url="https://pbx.test/rec",
                        recordings_link_secret=RECORDING_SECRET, crm_recording_wait_s=0.0)
    tenants = settings.connectors_dir / "tenants"
    FileTokenStore(tenants / "acme" / "amocrm-token.json").save(Token(*fa.issue_tokens()))
    FileTokenStore(tenants / "globex" / "bitrix24-token.json").save(Token(*fb.issue_tokens()))
    return settings


def closed_cdrs(tenant: str, ids: list[str]) -> list:
    return [dataclasses.replace(inbound_call(cid, KNOWN)[1][-1], tenant=tenant) for cid in ids]


def test_provisioning_check_names_each_crm_mistake_with_its_line(tmp_path: Path):
    prov = tmp_path / "tawag.toml"
    prov.write_text("""[tenant.acme]
domain = "pbx.test"

[tenant.acme.crm.amocrm]
base_url = "https://acme.amocrm.ru"
client_id = "id"
client_secret = "secret"
redirect_uri = "https://tawag.test/cb"
users = { "101" = true }
colour = "red"

[tenant.globex]
domain = "globex.test"

[tenant.globex.crm.bitrix24]
base_url = "https://acme.amocrm.ru/"

[tenant.globex.crm.onec]
base_url = "http://1c.globex.test/base/odata/standard.odata/"
""")
    assert [str(e) for e in provision.check(prov)] == [
        f"{prov}:10: crm.amocrm: unknown key 'colour' (known: base_url, client_id, "
        "client_secret, default_user, redirect_uri, users)",
        f"{prov}:9: crm.amocrm.users: a table of extension = CRM user",
        f"{prov}:18: crm.onec: user is required",
        f"{prov}:18: crm.onec: password is required",
        f"{prov}:16: crm.bitrix24.base_url 'https://acme.amocrm.ru/' is already tenant "
        "'acme''s portal",
    ]


def test_each_tenant_gets_its_own_connection_and_inherits_nothing(two_tenants: Settings):
    env = dataclasses.replace(two_tenants, crm_enabled=("amocrm",),
                              crm_amocrm_base_url="https://other.amocrm.ru",
                              crm_amocrm_users={"101": "9999"}, tenant="acme")
    conns = {c.tenant: c for c in connections(env)}
    # acme's table replaces the TAWAG_CRM_* connection of the default tenant
    assert sorted(conns) == ["acme", "globex"]
    assert conns["acme"].settings.crm_amocrm_users == {"101": "8001"}
    globex = conns["globex"].settings
    assert globex.crm_enabled == ("bitrix24",) and globex.crm_amocrm_base_url == ""
    assert globex.crm_amocrm_users == {} and globex.crm_bitrix24_users == {"101": "1269"}
    assert globex.recordings_base_url == "https://rec.globex.test/recordings"
    assert conns["acme"].state_dir != conns["globex"].state_dir
    # a single-tenant install (no crm tables) keeps its one connection in connectors_dir
    single = dataclasses.replace(env, provisioning_file=env.data_dir / "absent.toml")
    [only] = connections(single)
    assert (only.tenant, only.state_dir) == ("acme", env.connectors_dir)
    assert connection_settings(env, "x", {}).crm_enabled == ()


def test_tenant_of_an_event_comes_from_its_sip_domain(two_tenants: Settings):
    assert two_tenants.tenant_for_domain("globex.test") == "globex"
    assert two_tenants.tenant_for_domain("pbx.test") == "acme"
    assert two_tenants.tenant_for_domain("unknown.test") == two_tenants.tenant


@pytest.mark.parametrize("outage", [500, 429])
def test_one_tenants_crm_outage_does_not_delay_another_and_nothing_crosses(
        two_tenants: Settings, amo, b24, outage: int):
    (fa, _), (fb, _) = amo, b24
    workers, outboxes = build_workers(two_tenants, backoff=FAST)
    acme_ids = [f"acme-{n}" for n in range(6)]
    globex_ids = [f"globex-{n}" for n in range(6)]
    fa.faults.add(Reply(outage), 10**6)  # acme's amoCRM answers only 500 (or 429) for now
    workers.start()
    try:
        started = time.monotonic()
        for acme, globex in zip(closed_cdrs("acme", acme_ids), closed_cdrs("globex", globex_ids),
                                strict=True):
            workers.handle_cdr(acme)
            workers.handle_cdr(globex)
        workers.handle_cdr(closed_cdrs("initech", ["initech-1"])[0])  # no CRM: not synced
        wait_for(lambda: len(fb.finished) == len(globex_ids), timeout=10,
                 what="globex's calls in its Bitrix24 while acme's amoCRM is down")
        globex_s = time.monotonic() - started
        assert fa.calls == [] and len(outboxes["acme"].pending()) == len(acme_ids)
        print(f"\nacme's amoCRM answering {outage}: globex's {len(globex_ids)} calls finished "
              f"in Bitrix24 in {globex_s:.2f} s")

        fa.faults = FaultPlan()  # acme's CRM is back
        wait_for(workers.idle, timeout=20, what="acme's backlog delivered")
    finally:
        workers.stop()
        for outbox in outboxes.values():
            outbox.close()
    assert sorted(c["uniq"] for c in fa.calls) == acme_ids  # each once, only acme's
    assert sorted(r["EXTERNAL_CALL_ID"] for r in fb.finished.values()) == globex_ids
    assert all(r["params"]["EXTERNAL_CALL_ID"] in globex_ids
               for r in fb.registrations.values())
    assert "initech" not in outboxes


def test_an_invalid_crm_table_connects_nothing_not_even_the_environments_crm(tmp_path: Path,
                                                                              caplog):
    prov = tmp_path / "tawag.toml"
    prov.write_text('[tenant.acme]\ndomain = "pbx.test"\n\n[tenant.acme.crm.amocrm]\n'
                    'base_url = "https://acme.amocrm.ru"\n')  # no credentials
    env = Settings(data_dir=tmp_path, provisioning_file=prov, tenant="acme",
                   crm_enabled=("amocrm",), crm_amocrm_base_url="https://old.amocrm.ru")
    assert connections(env) == []
    assert "tenant acme: its [tenant.acme.crm] table is invalid" in caplog.text
