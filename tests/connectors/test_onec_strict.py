"""1C against a fake as strict as a real УТ 11 base (issue 19, items 1, 2, 7 and 8).

Sources: Romandredan/odata1c-gate -- tests/unit/test_client1c.py (live probe: ``+`` in
``$filter`` -> 500 «Операция не разрешена в предложении "ГДЕ"», ``%20`` -> 200),
docs/probes/P4-real-metadata.md (unknown ``$select`` field -> 400 code 6),
tests/fixtures/edmx/ut-real.edmx (``Catalog_Контрагенты`` has ``Партнер_Key``, no manager).
"""

from __future__ import annotations

import httpx
import pytest
from crm_helpers import MANAGER_1, ONEC_USERS, make_cdr, onec_client
from fakes.onec import PARTIES, PREFIX, WHERE_REFUSED, FakeOneC
from fakes.server import Reply, json_reply

from connectors.base import MemoryProgress, Misconfigured, Rejected, Unavailable
from connectors.onec import OneCBasicAuth, OneCClient
from connectors.wiring import build_targets
from core.records import Disposition
from core.settings import Settings

PHONE = "+74951234567"


def raw(fake: FakeOneC, server, path: str, **params: str) -> httpx.Response:
    http = httpx.Client(base_url=server.url + PREFIX, auth=OneCBasicAuth(fake.user, fake.password))
    return http.get(path, params={"$format": "json", **params})


# --- 1. spaces in $filter --------------------------------------------------------------
def test_fake_refuses_a_plus_encoded_filter_as_1c_does(onec):
    fake, server = onec
    # httpx's params= writes spaces as '+', as the connector did before the fix
    reply = raw(fake, server, "Catalog_Контрагенты_КонтактнаяИнформация",
                **{"$filter": "Тип eq 'Телефон'"})
    assert b"+eq+" in reply.request.url.raw_path
    assert reply.status_code == 500
    assert reply.json()["odata.error"]["message"]["value"] == WHERE_REFUSED


def test_lookup_sends_spaces_as_percent20_and_finds_the_client(onec):
    fake, server = onec
    party = fake.add_party("ООО «Ромашка»", PHONE, manager=MANAGER_1)
    seen: list[httpx.Request] = []
    client = onec_client(fake, server)
    client._http.event_hooks["request"].append(seen.append)
    assert client.find_contact(PHONE).id == party
    lookups = [r for r in seen if b"filter" in r.url.raw_path]
    assert lookups and all(b"+" not in r.url.raw_path and b"%20eq%20" in r.url.raw_path
                           for r in lookups)


# --- 2. $metadata, the manager on the partner, GUIDs -----------------------------------
def test_fake_answers_400_code_6_for_a_field_the_entity_lacks_even_without_rows(onec):
    fake, server = onec
    http = httpx.Client(base_url=server.url + PREFIX, auth=OneCBasicAuth(fake.user, fake.password))
    path = "Catalog_Контрагенты(guid'bd5a3c14-1111-2222-3333-444455556666')"
    query = "?$format=json&$select=Ref_Key,%D0%9E%D1%81%D0%BD%D0%BE%D0%B2%D0%BD%D0%BE%D0%B9" \
            "%D0%9C%D0%B5%D0%BD%D0%B5%D0%B4%D0%B6%D0%B5%D1%80_Key"  # ОсновнойМенеджер_Key
    reply = http.get(path + query)
    assert reply.status_code == 400 and reply.json()["odata.error"]["code"] == "6"
    assert "ОсновнойМенеджер_Key" in reply.json()["odata.error"]["message"]["value"]
    meta = http.get("$metadata")
    assert meta.status_code == 200 and b'EntityType Name="Catalog_\xd0' in meta.content


def test_start_check_refuses_the_manager_on_the_counterparty_with_a_clear_message(onec):
    fake, server = onec
    http = httpx.Client(base_url=server.url + PREFIX, auth=OneCBasicAuth(fake.user, fake.password))
    client = OneCClient(http, manager_owner=PARTIES)  # the old default: not in УТ 11
    with pytest.raises(Misconfigured) as info:
        client.check_schema()
    assert "Catalog_Контрагенты.ОсновнойМенеджер_Key" in str(info.value)
    onec_client(fake, server).check_schema()  # the partner's manager: published
    assert fake.metadata_reads == 2


def test_manager_comes_from_the_partner(onec):
    fake, server = onec
    fake.add_party("ООО «Ромашка»", PHONE, manager=MANAGER_1)
    contact = onec_client(fake, server).find_contact(PHONE)
    assert contact.responsible_user_id == MANAGER_1


def test_fake_refuses_a_responsible_that_is_not_a_guid_and_the_client_never_sends_one(onec):
    fake, server = onec
    http = httpx.Client(base_url=server.url + PREFIX, auth=OneCBasicAuth(fake.user, fake.password))
    bad = http.post("Document_ТелефонныйЗвонок?$format=json",
                    json={"Тема": "x", "Ответственный_Key": "u-101"})
    assert bad.status_code == 400
    client = onec_client(fake, server)
    progress = MemoryProgress()
    client.log_call(make_cdr("g-1", caller=PHONE), phone=PHONE, user="u-101", contact=None,
                    recording_url=None, progress=progress)
    assert "Ответственный_Key" not in fake.documents[progress["doc_ref"]]


def test_start_refuses_user_maps_that_are_not_guids(onec, tmp_path):
    fake, server = onec
    settings = Settings(data_dir=tmp_path, crm_enabled=("onec",),
                        crm_onec_base_url=server.url + PREFIX, crm_onec_user=fake.user,
                        crm_onec_password=fake.password, crm_onec_users={"101": "u-101"})
    with pytest.raises(Misconfigured, match="101"):
        build_targets(settings)
    [target] = build_targets(Settings(**{**settings.__dict__, "crm_onec_users": ONEC_USERS}))
    assert fake.metadata_reads == 1 and target.name == "onec"


# --- 8. phone fallback -----------------------------------------------------------------
def test_formatted_presentation_with_an_empty_digits_column_is_found(onec):
    fake, server = onec
    party = fake.add_party("ООО «Ромашка»", "+7 (495) 123-45-67", manager=MANAGER_1,
                           digits_column="")
    fake.add_party("Другой", "+7 (812) 123-45-67", manager=MANAGER_1, digits_column="")
    assert onec_client(fake, server).find_contact(PHONE).id == party


# --- 7. permanent vs temporary ---------------------------------------------------------
def test_a_500_from_the_documents_handler_is_permanent_a_502_is_not(onec):
    fake, server = onec
    client = onec_client(fake, server)
    client.check_schema()
    refusal = {"odata.error": {"code": "-1", "message": {
        "lang": "ru", "value": "Не удалось записать: Телефонный звонок"}}}
    fake.faults.add(json_reply(500, refusal))
    with pytest.raises(Rejected) as info:
        client.log_call(make_cdr("p-1", disposition=Disposition.NO_ANSWER), phone=PHONE,
                        user=None, contact=None, recording_url=None, progress=MemoryProgress())
    assert info.value.permanent and "Не удалось записать" in str(info.value)
    fake.faults.add(Reply(502))
    with pytest.raises(Unavailable):
        client.log_call(make_cdr("p-2"), phone=PHONE, user=None, contact=None,
                        recording_url=None, progress=MemoryProgress())
    fake.faults.add(json_reply(500, refusal))
    with pytest.raises(Unavailable):  # a read: the base itself is failing
        client.find_contact(PHONE)
