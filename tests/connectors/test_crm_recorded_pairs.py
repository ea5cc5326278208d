"""Contract tests: request/response pairs published by the vendors (docs examples, the
official SDK's parser), replayed against both sides (issue 19).

Each pair in ``fixtures/recorded/*.json`` names its source. For every pair:

- the *connector* gets the recorded response (httpx.MockTransport) and must read it, and
  what it sends must use only the documented parameters;
- the *fake* gets the recorded request and must answer with the recorded response's shape
  (the same keys, recursively), so a fake drifting from the vendor fails here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from crm_helpers import MANAGER_1, make_cdr
from fakes.onec import PREFIX

from connectors.amocrm import AmoCrmClient
from connectors.base import Contact, LeakyBucket, MemoryProgress, Throttle
from connectors.bitrix24 import Bitrix24Client
from connectors.onec import OneCBasicAuth, OneCClient
from connectors.onec.mapping import query_string
from core.records import Disposition

RECORDED = Path(__file__).parent / "fixtures" / "recorded"
FIXTURES = Path(__file__).parent / "fixtures"


def pair(name: str) -> dict[str, Any]:
    return json.loads((RECORDED / f"{name}.json").read_text())


def shape(value: Any) -> Any:
    """Keys all the way down; list items by their first element; scalars erased."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return None


def no_throttle() -> Throttle:
    return Throttle(LeakyBucket(capacity=1e9, drain_per_s=1e9))


def replaying(responses: dict[str, Any], sent: list[httpx.Request]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        for suffix, body in responses.items():
            if request.url.path.endswith(suffix):
                if isinstance(body, bytes):
                    return httpx.Response(200, content=body)
                return httpx.Response(200, json=body)
        raise AssertionError(f"unexpected request {request.url}")
    return httpx.MockTransport(handle)


# --- Bitrix24 ------------------------------------------------------------------------------
def test_bitrix24_register_and_finish_pairs_on_the_connector():
    register, finish = pair("bitrix24_register"), pair("bitrix24_finish")
    sent: list[httpx.Request] = []
    http = httpx.Client(base_url="https://portal.test/rest/", transport=replaying({
        "register": register["response"], "finish": finish["response"]}, sent))
    progress = MemoryProgress()
    Bitrix24Client(http, throttle=no_throttle()).log_call(
        make_cdr("c1", talk_ms=95_000), phone="79062195047", user="1269", contact=None,
        recording_url=None, progress=progress)
    assert progress["b24_call_id"] == register["response"]["result"]["CALL_ID"]
    ours = [json.loads(r.content) for r in sent]
    assert set(ours[0]) <= set(register["request"]) | {"CALL_START_DATE", "CRM_CREATE"}
    assert set(ours[1]) <= set(finish["request"])
    assert ours[1]["CALL_ID"] == register["response"]["result"]["CALL_ID"]


def test_bitrix24_register_and_finish_pairs_on_the_fake(b24):
    fake, server = b24
    register, finish = pair("bitrix24_register"), pair("bitrix24_finish")
    access = fake.issue_tokens()[0]
    url = f"{server.url}/rest/"
    got = httpx.post(url + register["method"], json={**register["request"], "auth": access})
    assert shape(got.json()) == shape(register["response"])
    call_id = got.json()["result"]["CALL_ID"]
    done = httpx.post(url + finish["method"],
                      json={**finish["request"], "CALL_ID": call_id, "auth": access})
    assert shape(done.json()) == shape(finish["response"])


def test_bitrix24_search_pair_on_both():
    search = pair("bitrix24_search")
    http = httpx.Client(base_url="https://portal.test/rest/",
                        transport=replaying({"searchCrmEntities": search["response"]}, []))
    contact = Bitrix24Client(http, throttle=no_throttle()).find_contact("19062195047")
    assert (contact.id, contact.responsible_user_id) == ("651", "99")


def test_bitrix24_search_pair_on_the_fake(b24):
    fake, server = b24
    search = pair("bitrix24_search")
    fake.add_entity("John Doe", "19062195047", assigned=99)
    got = httpx.post(f"{server.url}/rest/{search['method']}",
                     json={**search["request"], "auth": fake.issue_tokens()[0]})
    assert shape(got.json()["result"]) == shape(search["response"]["result"])


# --- amoCRM --------------------------------------------------------------------------------
def amo_http(responses: dict[str, Any], sent: list[httpx.Request]) -> AmoCrmClient:
    http = httpx.Client(base_url="https://example.amocrm.ru", transport=replaying(responses, sent))
    return AmoCrmClient(http, throttle=no_throttle())


def test_amocrm_calls_pair_on_the_connector():
    calls = pair("amocrm_calls")
    sent: list[httpx.Request] = []
    progress = MemoryProgress()
    amo_http({"/api/v4/calls": calls["response"]}, sent).log_call(
        make_cdr("c2"), phone="+18305803077", user="8375357", contact=None,
        recording_url="https://example.com/record.mp3", progress=progress)
    assert progress["call_id"] == "78127313"
    [item] = json.loads(sent[0].content)
    documented = set(calls["request"][0]) | {"call_responsible", "request_id"}
    assert set(item) <= documented


def test_amocrm_calls_pair_on_the_fake(amo):
    fake, server = amo
    calls = pair("amocrm_calls")
    fake.add_contact("Example", "+1 830 580 3077", responsible=8375357)
    got = httpx.post(server.url + "/api/v4/calls", json=calls["request"],
                     headers={"Authorization": f"Bearer {fake.issue_tokens()[0]}"})
    assert got.status_code == 200 and shape(got.json()) == shape(calls["response"])


def test_amocrm_unsorted_pair_on_both(amo):
    unsorted = pair("amocrm_unsorted_sip")
    sent: list[httpx.Request] = []
    lead = amo_http({"/api/v4/leads/unsorted/sip": unsorted["response"]}, sent)\
        .create_lead_for_unknown(make_cdr("c3", disposition=Disposition.NO_ANSWER),
                                 phone="+79998888888", user=None, recording_url=None)
    assert (lead.id, lead.lead_ids) == ("11075541", ("1893",))
    [item] = json.loads(sent[0].content)
    assert set(item["metadata"]) <= set(unsorted["request"][0]["metadata"]) | {
        "call_responsible"}
    fake, server = amo
    got = httpx.post(server.url + "/api/v4/leads/unsorted/sip", json=unsorted["request"],
                     headers={"Authorization": f"Bearer {fake.issue_tokens()[0]}"})
    assert got.status_code == 200 and shape(got.json()) == shape(unsorted["response"])


# --- 1C ------------------------------------------------------------------------------------
def test_onec_contact_info_pair_on_both(onec):
    recorded = pair("onec_contact_info")
    party = json.loads((FIXTURES / "onec/party.json").read_text())
    partner = json.loads((FIXTURES / "onec/partner.json").read_text())
    http = httpx.Client(base_url="http://1c.local/ut/odata/standard.odata/",
                        transport=replaying({
                            "$metadata": (FIXTURES / "onec/metadata.edmx").read_bytes(),
                            "КонтактнаяИнформация": recorded["response"],
                            f"{partner['Ref_Key']}')": partner,
                            f"{party['Ref_Key']}')": party}, []))
    found = OneCClient(http).find_contact("+7 (495) 123-45-67")
    assert found == Contact(crm="onec", id=party["Ref_Key"], name=party["Description"],
                            responsible_user_id=partner["ОсновнойМенеджер_Key"],
                            entity_type="counterparty")
    fake, server = onec
    fake.add_party("ООО «Ромашка»", "+7 (495) 123-45-67", manager=MANAGER_1)
    client = httpx.Client(base_url=server.url + PREFIX,
                          auth=OneCBasicAuth(fake.user, fake.password))
    query = query_string({"$format": "json", **recorded["params"]})
    got = client.get(recorded["path"] + "?" + query)
    assert shape(got.json()) == shape(recorded["response"])
    missing = client.get("Catalog_Контрагенты(guid'00000000-0000-0000-0000-00000000abcd')"
                         "?$format=json")
    assert missing.status_code == 404 and missing.json() == recorded["not_found"]
