"""Clients against httpx.MockTransport with recorded vendor JSON (fixtures/<crm>/).

Each test states the vendor behaviour it reproduces; the assertions are on the requests
the client sent and on the ConnectorError it raised.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from crm_helpers import make_cdr

from connectors.amocrm import AmoCrmClient, AmoOAuth
from connectors.base import (
    AuthExpired,
    LeakyBucket,
    MemoryProgress,
    RateLimited,
    Rejected,
    TaskRef,
    Throttle,
    Unavailable,
)
from connectors.bitrix24 import Bitrix24Client, Bitrix24OAuth
from connectors.onec import OneCBasicAuth, OneCClient
from connectors.tokens import MemoryTokenStore, Token

FIXTURES = Path(__file__).parent / "fixtures"
NOW = 1_800_000_000.0


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def no_throttle() -> Throttle:
    return Throttle(LeakyBucket(capacity=1e9, drain_per_s=1e9))


def amo(handler, token: Token | None = None) -> tuple[AmoCrmClient, MemoryTokenStore, list]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    store = MemoryTokenStore(token or Token("old-access", "old-refresh", NOW + 86400))
    auth = AmoOAuth(token_url="https://acme.amocrm.ru/oauth2/access_token", client_id="cid",
                    client_secret="csecret", redirect_uri="https://t/cb", store=store,
                    clock=lambda: NOW)
    http = httpx.Client(base_url="https://acme.amocrm.ru", auth=auth,
                        transport=httpx.MockTransport(record))
    return AmoCrmClient(http, throttle=no_throttle()), store, seen


def test_amocrm_refreshes_once_on_401_and_retries_with_the_new_token():
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth2/access_token":
            return httpx.Response(200, json=fixture("amocrm/token.json"))
        if request.headers["authorization"] == "Bearer old-access":
            return httpx.Response(401, json={"title": "Unauthorized", "status": 401,
                                             "type": "https://httpstatus.es/401",
                                             "detail": "Unauthorized"})
        return httpx.Response(200, json=fixture("amocrm/contacts_query.json"))

    client, store, seen = amo(handler)
    contact = client.find_contact("+79161234567")
    assert contact is not None and contact.responsible_user_id == "8375357"
    assert contact.lead_ids == ("9774766",)
    assert [r.url.path for r in seen] == ["/api/v4/contacts", "/oauth2/access_token",
                                          "/api/v4/contacts"]
    refresh = json.loads(seen[1].content)
    assert refresh["grant_type"] == "refresh_token" and refresh["refresh_token"] == "old-refresh"
    assert store.load().refresh_token == "def50200a1b2.new"  # stored: refresh tokens are single-use
    assert seen[0].url.params["query"] == "9161234567"


def test_amocrm_refreshes_before_expiry_without_a_wasted_401():
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth2/access_token":
            return httpx.Response(200, json=fixture("amocrm/token.json"))
        return httpx.Response(204)

    client, _, seen = amo(handler, Token("a", "r", NOW + 60))
    assert client.find_contact("+79161234567") is None  # 204 = no data
    assert [r.url.path for r in seen] == ["/oauth2/access_token", "/api/v4/contacts"]


def test_amocrm_second_401_is_auth_expired():
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth2/access_token":
            return httpx.Response(200, json=fixture("amocrm/token.json"))
        return httpx.Response(401, json={"detail": "Unauthorized"})

    client, _, _ = amo(handler)
    with pytest.raises(AuthExpired):
        client.find_contact("+79161234567")


@pytest.mark.parametrize("response,error", [
    (httpx.Response(429), RateLimited),
    (httpx.Response(503, text="maintenance"), Unavailable),
    (httpx.Response(400, json=fixture("amocrm/validation_error.json")), Rejected),
])
def test_amocrm_statuses_become_connector_errors(response, error):
    client, _, _ = amo(lambda request: response)
    with pytest.raises(error) as info:
        client.log_call(make_cdr("c"), phone="+79161234567", user=None, contact=None,
                        recording_url=None, progress=MemoryProgress())
    if error is Rejected:
        assert info.value.body["validation-errors"][0]["errors"][0]["path"] == "call_status"
    if error is RateLimited:
        assert info.value.retry_after == 1.0


def test_amocrm_connection_refused_is_unavailable():
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    client, _, _ = amo(handler)
    with pytest.raises(Unavailable):
        client.find_contact("+79161234567")


def test_amocrm_call_for_unknown_number_is_rejected_with_the_item_error():
    body = {"_total_items": 0, "errors": [{"request_id": "c", "status": 404,
                                           "title": "Not Found", "detail": "Entity not found"}],
            "_embedded": {"calls": []}}
    client, _, seen = amo(lambda request: httpx.Response(200, json=body))
    with pytest.raises(Rejected) as info:
        client.log_call(make_cdr("c"), phone="+79161234567", user="5", contact=None,
                        recording_url="https://r", progress=MemoryProgress())
    assert info.value.body[0]["detail"] == "Entity not found"
    sent = json.loads(seen[0].content)
    assert isinstance(sent, list) and sent[0]["uniq"] == "c" and sent[0]["link"] == "https://r"


def b24(handler) -> tuple[Bitrix24Client, MemoryTokenStore, list]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    store = MemoryTokenStore(Token("old-access", "old-refresh", NOW))
    auth = Bitrix24OAuth(oauth_url="https://oauth.bitrix.info/oauth/token/", client_id="app.1",
                         client_secret="csecret", store=store, clock=lambda: NOW)
    http = httpx.Client(base_url="https://portal.test/rest/", auth=auth,
                        transport=httpx.MockTransport(record))
    return Bitrix24Client(http, throttle=no_throttle()), store, seen


def test_bitrix24_refreshes_on_expired_token_and_keeps_the_token_out_of_the_url():
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "oauth.bitrix.info":
            return httpx.Response(200, json=fixture("bitrix24/token.json"))
        if json.loads(request.content)["auth"] == "old-access":
            return httpx.Response(401, json={"error": "expired_token",
                                             "error_description": "The access token provided "
                                                                  "has expired."})
        return httpx.Response(200, json=fixture("bitrix24/search.json"))

    client, store, seen = b24(handler)
    contact = client.find_contact("+19062195047")
    assert contact is not None and contact.responsible_user_id == "99"
    assert seen[1].method == "GET" and seen[1].url.params["grant_type"] == "refresh_token"
    assert json.loads(seen[2].content)["auth"] == "s1morf609228iwyjjpvfv6wsvuja4p8u"
    assert "auth" not in seen[2].url.params
    assert seen[2].url.path == "/rest/telephony.externalCall.searchCrmEntities"
    assert store.load().refresh_token == "4f9k4jpmg13usmybzuqknt2v9fh0q6rl"


def test_bitrix24_query_limit_is_rate_limited_and_error_core_is_rejected():
    limit = {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}
    client, _, _ = b24(lambda r: httpx.Response(503, json=limit))
    with pytest.raises(RateLimited):
        client.find_contact("+19062195047")
    core = {"error": "ERROR_CORE", "error_description": "Unknown TYPE"}
    client, _, _ = b24(lambda r: httpx.Response(400, json=core))
    with pytest.raises(Rejected) as info:
        client.find_contact("+19062195047")
    assert info.value.body == core


def test_bitrix24_log_call_resumes_after_finish_without_registering_again():
    """A retry after a crash between finish and attachRecord: only attachRecord is sent."""
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path.rsplit("/", 1)[1])
        return httpx.Response(200, json={"result": {"FILE_ID": 1}})

    client, _, _ = b24(handler)
    progress = MemoryProgress(b24_call_id="externalCall.x.1", finish_sent=True, finished=True)
    client.log_call(make_cdr("c"), phone="+7916", user="1", contact=None,
                    recording_url="https://rec.example.com/a.mp3", progress=progress)
    assert calls == ["telephony.externalCall.attachRecord"]


def onec(handler) -> tuple[OneCClient, list]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    http = httpx.Client(base_url="http://1c.local/ut/odata/standard.odata/",
                        auth=OneCBasicAuth("Оператор", "пароль"),
                        transport=httpx.MockTransport(record))
    return OneCClient(http), seen


def onec_metadata(request: httpx.Request) -> httpx.Response | None:
    if request.url.path.endswith("$metadata"):
        return httpx.Response(200, content=(FIXTURES / "onec/metadata.edmx").read_bytes())
    return None


def test_onec_lookup_sends_json_format_utf8_basic_auth_and_reads_the_partners_manager():
    def handler(request: httpx.Request) -> httpx.Response:
        if (meta := onec_metadata(request)) is not None:
            return meta
        if "КонтактнаяИнформация" in request.url.path:
            return httpx.Response(200, json=fixture("onec/contact_info.json"))
        if "Партнеры" in request.url.path:
            return httpx.Response(200, json=fixture("onec/partner.json"))
        return httpx.Response(200, json=fixture("onec/party.json"))

    client, seen = onec(handler)
    contact = client.find_contact("+7 (495) 123-45-67")
    assert contact is not None and contact.name == "ООО «Ромашка»"
    assert contact.responsible_user_id == "5a7b0000-0000-0000-0000-000000000001"
    assert seen[0].url.path.endswith("$metadata")
    assert all(r.url.params["$format"] == "json" for r in seen[1:])
    expected = "Basic " + base64.b64encode("Оператор:пароль".encode()).decode()
    assert seen[0].headers["authorization"] == expected
    guid = "bd5a3c14-1111-2222-3333-444455556666"
    assert seen[2].url.path.endswith(f"Catalog_Контрагенты(guid'{guid}')")
    assert seen[3].url.path.endswith("Catalog_Партнеры(guid'c0e3d8bc-d89a-11e6-8343-40167e2531c3')")


def test_onec_odata_error_is_rejected_with_its_body():
    client, _ = onec(lambda r: onec_metadata(r) or httpx.Response(
        404, json=fixture("onec/not_found.json")))
    with pytest.raises(Rejected) as info:
        client.close_task(TaskRef("onec", "bd5a3c14-1111-2222-3333-444455556666", "+7"),
                          note="n")
    assert info.value.body["odata.error"]["code"] == "9"
