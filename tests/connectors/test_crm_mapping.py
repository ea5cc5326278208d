"""Pure CDR -> payload mappings of the three CRMs, checked against crm-contracts.md by hand."""

from __future__ import annotations

from crm_helpers import MANAGER_1, T0, make_cdr

from connectors.amocrm import mapping as amo
from connectors.base import Contact
from connectors.bitrix24 import mapping as b24
from connectors.onec import mapping as onec
from core.records import Disposition


def test_amocrm_call_item_uses_call_id_as_uniq_and_seconds():
    cdr = make_cdr("c-1@pbx", talk_ms=41_600)
    item = amo.to_call(cdr, phone="+79161234567", user="8375357", source="tawag",
                       link="https://pbx.test/r.mp3?sig=x")
    assert item == {"uniq": "c-1@pbx", "direction": "inbound", "duration": 42,
                    "source": "tawag", "phone": "79161234567", "call_status": 4,
                    "created_at": int(T0.timestamp()), "request_id": "c-1@pbx",
                    "link": "https://pbx.test/r.mp3?sig=x", "call_responsible": 8375357,
                    "created_by": 8375357}


def test_amocrm_call_status_follows_mikopbx():
    assert amo.call_status(make_cdr("a", disposition=Disposition.NO_ANSWER)) == 6
    assert amo.call_status(make_cdr("a", disposition=Disposition.BUSY)) == 7
    assert amo.call_status(make_cdr("a", disposition=Disposition.FAILED, sip_code=404)) == 5
    assert amo.call_status(make_cdr("a", disposition=Disposition.CANCELLED)) == 6


def test_amocrm_unsorted_and_task_and_event_payloads():
    cdr = make_cdr("c-2", disposition=Disposition.NO_ANSWER)
    unsorted = amo.to_unsorted_sip(cdr, phone="+79161234567", user="5", source="tawag", link=None)
    assert unsorted["metadata"]["uniq"] == "c-2" and "call_responsible" not in unsorted["metadata"]
    assert unsorted["_embedded"]["contacts"][0]["custom_fields_values"][0]["field_code"] == "PHONE"
    task = amo.to_missed_task(cdr, phone="+7916", entity_type="leads", entity_id="9",
                              responsible="504141", complete_till=100)
    assert task["task_type_id"] == 1 and task["entity_type"] == "leads"
    assert task["responsible_user_id"] == 504141 and task["entity_id"] == 9
    assert amo.to_call_event("+79161234567", ["1", "2"]) == {
        "add": [{"type": "phone_call", "phone_number": "+79161234567", "users": [1, 2]}]}


def test_amocrm_query_is_full_text_so_the_phone_is_checked_client_side():
    body = {"_embedded": {"contacts": [
        {"id": 1, "name": "79161234567 fan", "responsible_user_id": 3,
         "custom_fields_values": [{"field_code": "PHONE", "values": [{"value": "+7 999 000"}]}]},
        {"id": 2, "name": "Иван", "responsible_user_id": 4, "_embedded": {"leads": [{"id": 9}]},
         "custom_fields_values": [{"field_code": "PHONE",
                                   "values": [{"value": "8 (916) 123-45-67"}]}]}]}}
    assert amo.matching_contact(body, "+79161234567") == Contact(
        crm="amocrm", id="2", name="Иван", responsible_user_id="4", lead_ids=("9",))


def test_bitrix24_register_and_finish_params():
    cdr = make_cdr("c-3", talk_ms=95_000)
    reg = b24.to_register(call_id="c-3", phone="+79161234567", user="1269", direction="inbound",
                          started_at=T0, show=True, line_number="3")
    assert reg == {"USER_ID": 1269, "PHONE_NUMBER": "+79161234567", "TYPE": 2,
                   "CALL_START_DATE": "2026-11-26T07:00:00+00:00", "CRM_CREATE": 1, "SHOW": 1,
                   "EXTERNAL_CALL_ID": "c-3", "LINE_NUMBER": "3"}
    assert b24.to_finish(cdr, b24_call_id="externalCall.x.1", user="1269") == {
        "CALL_ID": "externalCall.x.1", "USER_ID": 1269, "DURATION": 95, "STATUS_CODE": "200",
        "ADD_TO_CHAT": 0}


def test_bitrix24_status_codes():
    def code(**kw):
        return b24.status_code(make_cdr("x", **kw))
    assert code(disposition=Disposition.NO_ANSWER) == "304"
    assert code(disposition=Disposition.CANCELLED, direction="outbound") == "603-S"
    assert code(disposition=Disposition.BUSY) == "486"
    assert code(disposition=Disposition.FAILED, sip_code=404) == "404"
    assert code(disposition=Disposition.FAILED, sip_code=500) == "OTHER"


def test_bitrix24_record_file_name_is_mp3_or_wav():
    params = b24.to_attach_record(b24_call_id="E", url="https://p/r.wav?sig=1", call_id="1-2@h")
    assert params == {"CALL_ID": "E", "FILENAME": "1-2-h.wav", "RECORD_URL": "https://p/r.wav?sig=1"}


def test_onec_filters_and_document():
    assert onec.phone_filter("+7 (495) 123-45-67") == \
        "Тип eq 'Телефон' and НомерТелефона eq '74951234567'"
    assert onec.fuzzy_phone_filter("+74951234567") == \
        "Тип eq 'Телефон' and substringof('4951234567', Представление)"
    assert onec.marker_filter("it's") == "Комментарий eq 'tawag:it''s'"
    party = Contact(crm="onec", id="bd5a", name="ООО «Ромашка»", responsible_user_id=MANAGER_1)
    doc = onec.to_phone_call(make_cdr("c-4", disposition=Disposition.NO_ANSWER),
                             phone="+74951234567", contact=party, responsible=MANAGER_1,
                             recording_url=None, tz="Europe/Moscow")
    assert doc["Date"] == "2026-11-26T10:00:00"  # Moscow local time, no zone
    assert doc["Рассмотрено"] is False and doc["Ответственный_Key"] == MANAGER_1
    assert doc["АбонентКонтакт_Type"] == "StandardODATA.Catalog_Контрагенты"
    assert doc["Тема"] == "Пропущенный входящий звонок" and doc["Комментарий"] == "tawag:c-4"


def test_an_interrupted_call_is_missed_only_if_nobody_answered_it():
    """The reconciler closes a call whose end was lost as ``interrupted``; if it had been
    answered the client was spoken to, and no callback task may be made for it."""
    from dataclasses import replace

    from connectors.mapping import is_missed

    answered = make_cdr("c1")
    talked = replace(answered, disposition=Disposition.INTERRUPTED, sip_code=None)
    rang = replace(make_cdr("c2", disposition=Disposition.NO_ANSWER),
                   disposition=Disposition.INTERRUPTED)
    assert not is_missed(answered) and not is_missed(talked)
    assert is_missed(rang)
    assert not is_missed(replace(rang, direction="outbound"))
