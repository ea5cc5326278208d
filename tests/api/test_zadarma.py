"""Zadarma's notification format (crm-contracts.md §4), checked against the contract's own
example and field lists; the reference signature below is written from §4.1 alone."""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl

import pytest
from api_helpers import cdr

from api import zadarma
from core.events import Direction, Event, EventType
from core.records import Disposition

SECRET = "zadarma-api-secret"
START = datetime(2026, 10, 5, 6, 15, 7, tzinfo=UTC)  # 09:15:07 in Moscow
ZONE = "Europe/Moscow"


def php_signature(signed: str, secret: str) -> str:
    """``base64_encode(hash_hmac('sha1', $signed, $secret))``: PHP's hash_hmac is hex."""
    return base64.b64encode(
        hmac.new(secret.encode(), signed.encode(), hashlib.sha1).hexdigest().encode()).decode()


# §4.2, in the documented order ("internal" optional in NOTIFY_ANSWER and NOTIFY_END)
FIELDS = {
    "NOTIFY_START": ["event", "call_start", "pbx_call_id", "caller_id", "called_did"],
    "NOTIFY_INTERNAL": ["event", "call_start", "pbx_call_id", "caller_id", "called_did",
                        "internal"],
    "NOTIFY_ANSWER": ["event", "caller_id", "destination", "call_start", "pbx_call_id",
                      "internal"],
    "NOTIFY_END": ["event", "call_start", "pbx_call_id", "caller_id", "called_did", "internal",
                   "duration", "disposition", "status_code", "is_recorded",
                   "call_id_with_rec"],
    "NOTIFY_OUT_START": ["event", "call_start", "pbx_call_id", "internal", "destination"],
    "NOTIFY_OUT_END": ["event", "call_start", "pbx_call_id", "caller_id", "destination",
                       "internal", "duration", "disposition", "status_code", "is_recorded",
                       "call_id_with_rec"],
    "NOTIFY_RECORD": ["event", "call_id_with_rec", "pbx_call_id"],
}


def example_cdr(**changes):
    """The call of the contract's NOTIFY_END example."""
    return replace(cdr("acme", "c-example", 0), **{
        "started_at": START, "caller": "+79161234567", "did": "+74957654321",
        "callee": "101", "agent": "101", "talk_ms": 42_000,
        "disposition": Disposition.ANSWERED, "recorded": True, **changes})


def test_the_contract_example_of_notify_end():
    [(name, form)] = zadarma.from_cdr(replace(example_cdr(), did="+74951234567"), ZONE)
    assert name == "NOTIFY_END" and list(form) == FIELDS["NOTIFY_END"]
    assert {k: v for k, v in form.items() if k not in ("pbx_call_id", "call_id_with_rec")} == {
        "event": "NOTIFY_END", "call_start": "2026-10-05 09:15:07", "caller_id": "79161234567",
        "called_did": "74951234567", "internal": "101", "duration": "42",
        "disposition": "answered", "status_code": "16", "is_recorded": "1"}
    assert form["pbx_call_id"].startswith("in_") and form["call_id_with_rec"]
    # the example's Signature line
    assert zadarma.signature(form, SECRET) == php_signature(
        "79161234567" + "74951234567" + "2026-10-05 09:15:07", SECRET)
    # and the body a PHP $_POST would read back
    assert dict(parse_qsl(zadarma.encode(form).decode())) == form


def test_signature_helper_matches_the_contract_snippet():
    assert zadarma.signature({"event": "NOTIFY_RECORD", "pbx_call_id": "in_1",
                              "call_id_with_rec": "1458313316.343456"}, SECRET) == \
        php_signature("in_1" + "1458313316.343456", SECRET)


def inbound(kind, minutes=0, **fields):
    base = {"tenant": "acme", "source": "t", "call_id": "c-example",
            "direction": Direction.INBOUND, "caller": "+79161234567", "callee": "101",
            "did": "+74957654321"}
    return Event(f"e-{kind}", kind, ts=START + timedelta(minutes=minutes), **{**base, **fields})


def test_every_notification_has_exactly_its_fields_and_one_call_start():
    forms = []
    forms += zadarma.from_event(inbound(EventType.CALL_OFFERED), START, ZONE)
    forms += zadarma.from_event(inbound(EventType.CALL_RINGING, agent="101"), START, ZONE)
    forms += zadarma.from_event(inbound(EventType.CALL_ANSWERED, 1, agent="101"), START, ZONE)
    forms += zadarma.from_cdr(example_cdr(), ZONE)
    forms += zadarma.from_event(inbound(EventType.CALL_RECORDING_READY, 2), START, ZONE)
    out = {"tenant": "acme", "source": "t", "call_id": "o1", "direction": Direction.OUTBOUND,
           "caller": "102", "callee": "+79161112233"}
    forms += zadarma.from_event(Event("o-1", EventType.CALL_OFFERED, ts=START, **out), START,
                                ZONE)
    forms += zadarma.from_cdr(replace(example_cdr(), call_id="o1", direction="outbound",
                                      caller="102", callee="+79161112233", agent="102"), ZONE)
    assert [name for name, _ in forms] == [
        "NOTIFY_START", "NOTIFY_INTERNAL", "NOTIFY_ANSWER", "NOTIFY_END", "NOTIFY_RECORD",
        "NOTIFY_OUT_START", "NOTIFY_OUT_END"]
    for name, form in forms:
        assert list(form) == FIELDS[name], name
        assert form["event"] == name
        assert all(isinstance(v, str) for v in form.values())
    incoming = [f for _, f in forms[:4]]
    assert {f["call_start"] for f in incoming} == {"2026-10-05 09:15:07"}
    assert len({f["pbx_call_id"] for _, f in forms[:5]}) == 1  # stable across the call
    assert forms[5][1]["pbx_call_id"].startswith("out_")
    assert forms[5][1]["destination"] == "79161112233" and forms[5][1]["internal"] == "102"


@pytest.mark.parametrize(("disposition", "sip_code", "word", "cause"), [
    (Disposition.ANSWERED, 200, "answered", "16"),
    (Disposition.BUSY, 486, "busy", "17"),
    (Disposition.NO_ANSWER, 408, "no answer", "19"),
    (Disposition.CANCELLED, 487, "cancel", "16"),
    (Disposition.FAILED, 404, "failed", "1"),
    (Disposition.FAILED, 599, "failed", "31"),
])
def test_disposition_words_are_zadarmas(disposition, sip_code, word, cause):
    [(_, form)] = zadarma.from_cdr(example_cdr(disposition=disposition, sip_code=sip_code,
                                               talk_ms=0), ZONE)
    assert (form["disposition"], form["status_code"], form["duration"]) == (word, cause, "0")
    assert word in {"answered", "busy", "cancel", "no answer", "failed", "no money",
                    "unallocated number", "no limit", "no day limit", "line limit",
                    "no money, no limit"}  # §4.2's list


def test_internal_calls_and_open_calls_give_nothing():
    assert zadarma.from_cdr(replace(example_cdr(), direction="internal"), ZONE) == []
    assert zadarma.from_cdr(replace(example_cdr(), closed=False), ZONE) == []
    assert zadarma.from_event(inbound(EventType.CALL_ANSWERED, agent="101"), None, ZONE) == []
