"""Participants of a CDR through the loader into the store, and back with analysts' SQL."""

from __future__ import annotations

import json
from datetime import timedelta

from conftest import SETTINGS, T0, cdr_records, make_cdr

from core.records import Disposition, Forward, Leg, LegOutcome, cdr_to_json
from warehouse.loader import Loader, Record, decode_cdr, routes_for

ROUTES = routes_for(SETTINGS)


def ms(n: int):
    return T0 + timedelta(milliseconds=n)


GROUP_CALL = make_cdr(
    "g1", version=6, event_count=6, agent="103", disposition=Disposition.ANSWERED, closed=True,
    legs=(Leg("g1#0", "102", ms(100), ms(5000), False, LegOutcome.CANCELLED),
          Leg("g1#1", "103", ms(110), ms(5000), True, LegOutcome.ANSWERED)),
    forwards=(Forward(ms(50), "ext:101", "group:sales", "busy", 1),),
    recorded=True, recording="/rec/g1.wav", recording_bytes=1000, recording_duration_ms=3000,
    rtp_packets=300, rtp_bytes=48000, rtp_errors=0)


def test_legs_are_one_row_each_with_array_join(store):
    Loader(store, ROUTES, dead_letters=lambda d: None).load(cdr_records([GROUP_CALL]))
    rows = store.query(
        "SELECT leg.target AS target, leg.outcome AS outcome, leg.answered AS answered, "
        "dateDiff('millisecond', leg.rang_from, leg.rang_until) AS rang_ms "
        "FROM tawag.cdrs FINAL ARRAY JOIN legs AS leg ORDER BY target")
    assert rows == [
        {"target": "102", "outcome": "cancelled", "answered": False, "rang_ms": 4900},
        {"target": "103", "outcome": "answered", "answered": True, "rang_ms": 4890}]
    (call,) = store.query(
        "SELECT forwards[1].forwarded_to AS fwd, forwards[1].reason AS why, hold_ms, "
        "recorded, recording_bytes, recording_duration_ms, rtp_packets, rtp_errors "
        "FROM tawag.cdrs FINAL")
    assert call == {"fwd": "group:sales", "why": "busy", "hold_ms": 0, "recorded": True,
                    "recording_bytes": 1000, "recording_duration_ms": 3000,
                    "rtp_packets": 300, "rtp_errors": 0}


def test_a_revision_without_participants_loads_with_empty_arrays(store):
    old = {k: v for k, v in json.loads(cdr_to_json(make_cdr("o1"))).items()
           if k not in ("legs", "forwards", "transfers", "hold_ms", "recorded")}
    record = Record(SETTINGS.topic_cdrs, 0, 0, json.dumps(old).encode())
    Loader(store, ROUTES, dead_letters=lambda d: None).load([record])
    (row,) = store.query("SELECT length(legs) AS n, hold_ms, recorded FROM tawag.cdrs FINAL")
    assert row == {"n": 0, "hold_ms": 0, "recorded": False}


def test_a_leg_with_an_unknown_outcome_is_a_dead_letter():
    raw = json.loads(cdr_to_json(GROUP_CALL))
    raw["legs"][0]["outcome"] = "vanished"
    record = Record(SETTINGS.topic_cdrs, 0, 0, json.dumps(raw).encode())
    try:
        decode_cdr(record)
    except ValueError as exc:
        assert "vanished" in str(exc)
    else:
        raise AssertionError("a leg outcome the schema does not know was accepted")
