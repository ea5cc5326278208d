import json

import pytest

from core.events import Direction, EventType, InvalidEvent, from_json, to_json
from ingest.decode import DecodeContext, FramingError, decode_evapi, split_netstrings

CTX = DecodeContext(source="kamailio@test", country="RU", tenant_for_domain=lambda d: "acme")
T0 = 1795673495.0


def frame(**payload) -> bytes:
    return json.dumps(payload).encode()


def test_netstrings_split_and_keep_the_unfinished_rest():
    frames, rest = split_netstrings(b"3:abc,2:de,4:fg")
    assert frames == [b"abc", b"de"] and rest == b"4:fg"
    frames, rest = split_netstrings(rest + b"hi,")
    assert frames == [b"fghi"] and rest == b""


@pytest.mark.parametrize("bad", [b"xx:abc,", b"3:abcX", b":abc,", b"9" * 30])
def test_netstrings_that_lost_framing_raise(bad):
    with pytest.raises(FramingError):
        split_netstrings(bad)


def test_greeting_is_not_an_event():
    assert decode_evapi(frame(event="evapi.connected", ts=T0, client="x"), CTX) is None


def test_call_start_becomes_offered_with_normalised_numbers():
    ev = decode_evapi(frame(event="call.start", ts=T0, call_id="c1", **{"from": "84951234567"},
                            to="101", ruri_user="101", domain="pbx.test",
                            source="udp:127.0.0.1:5090"), CTX)
    assert ev.type is EventType.CALL_OFFERED
    assert ev.caller == "+74951234567" and ev.callee == "101"
    assert ev.direction is Direction.INBOUND and ev.did == "101"
    assert ev.tenant == "acme" and ev.ts.timestamp() == T0


def test_caller_cancel_is_cancelled_and_other_codes_fail():
    common = dict(ts=T0, call_id="c1", to="102", reason="x", **{"from": "101"})
    assert decode_evapi(frame(event="call.failed", code=487, **common), CTX).type \
        is EventType.CALL_CANCELLED
    busy = decode_evapi(frame(event="call.failed", code=486, origin="downstream", **common), CTX)
    assert busy.type is EventType.CALL_FAILED and busy.sip_code == 486
    assert busy.extra == {"origin": "downstream"}


def test_end_carries_millisecond_duration_from_answer_time():
    ev = decode_evapi(frame(event="call.end", ts=T0 + 4.25, call_id="c1", to="102",
                            start_ts=int(T0), answered_ts=T0, duration=4, reason="bye",
                            hangup_by="101", **{"from": "101"}), CTX)
    assert ev.type is EventType.CALL_ENDED
    assert ev.duration_ms == 4250 and ev.hangup_by == "101"


def test_answered_names_the_agent():
    ev = decode_evapi(frame(event="call.answered", ts=T0, call_id="c1", to="102", code=200,
                            **{"from": "101"}), CTX)
    assert ev.agent == "102" and ev.sip_code == 200


def test_registration_events():
    ev = decode_evapi(frame(event="register", ts=T0, aor="sip:101@pbx.test", user="101",
                            contact="<sip:101@127.0.0.1:5080>", expires=300), CTX)
    assert ev.type is EventType.AGENT_REGISTERED and ev.key == "acme:101"
    assert ev.extra["expires"] == 300


def test_same_payload_same_id_and_different_payload_different_id():
    raw = frame(event="call.answered", ts=T0, call_id="c1", to="102", code=200, **{"from": "1"})
    again = json.dumps(json.loads(raw), indent=2).encode()
    other = frame(event="call.answered", ts=T0 + 1, call_id="c1", to="102", code=200)
    assert decode_evapi(raw, CTX).event_id == decode_evapi(again, CTX).event_id
    assert decode_evapi(raw, CTX).event_id != decode_evapi(other, CTX).event_id


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\xfe", "not JSON"),
        (b'"just a string"', "not a JSON object"),
        (frame(event="call.teleported", ts=T0, call_id="c"), "unknown evapi event"),
        (frame(event="call.start", ts=T0), "missing call_id"),
        (frame(event="call.start", ts="yesterday", call_id="c"), "ts: expected epoch"),
        (frame(event="call.failed", ts=T0, call_id="c"), "missing code"),
        (frame(event="call.failed", ts=T0, call_id="c", code="486"), "code: expected"),
        (frame(event="register", ts=T0), "missing user"),
    ],
)
def test_malformed_payloads_raise_with_reason(raw, reason):
    with pytest.raises(InvalidEvent, match=reason):
        decode_evapi(raw, CTX)


def test_forwarded_keeps_reason_and_targets():
    ev = decode_evapi(frame(event="call.forwarded", ts=T0, call_id="c1", to="104",
                            domain="pbx.test", reason="no_answer", forwarded_from="ext:104",
                            forwarded_to="tel:+79161234567", hop=1, **{"from": "101"}), CTX)
    assert ev.type is EventType.CALL_FORWARDED and ev.reason == "no_answer"
    assert ev.extra == {"forwarded_from": "ext:104", "forwarded_to": "tel:+79161234567", "hop": 1}
    assert (ev.caller, ev.callee, ev.call_id) == ("101", "104", "c1")


def test_ringing_keeps_its_leg_id():
    ev = decode_evapi(frame(event="call.ringing", ts=T0, call_id="c1", to="74951230001",
                            code=180, reason="Ringing", leg_id="c1#2", leg_to="103",
                            **{"from": "+79035550101"}), CTX)
    assert (ev.call_id, ev.leg_id) == ("c1", "c1#2")


def test_invite_auth_failure_is_an_agent_event_without_the_reason():
    ev = decode_evapi(frame(event="invite.auth_failed", ts=T0, user="101", auth_user="101",
                            domain="pbx.test", source="udp:127.0.0.1:5080", call_id="c9"), CTX)
    assert ev.type is EventType.AGENT_AUTH_FAILED and ev.agent == "101"
    assert ev.extra == {"source": "udp:127.0.0.1:5080", "auth_user": "101", "method": "INVITE"}


def test_end_carries_media_quality_and_the_recorded_flag():
    ev = decode_evapi(frame(event="call.end", ts=T0 + 3, call_id="c1", to="102",
                            answered_ts=T0, reason="bye", hangup_by="101", recorded=True,
                            media={"bytes": 48160, "packets": 280, "errors": 0, "mos": 4.3,
                                   "packet_loss": 0, "jitter_ms": 2},
                            **{"from": "101"}), CTX)
    assert ev.media == {"bytes": 48160.0, "packets": 280.0, "errors": 0.0, "mos": 4.3,
                        "packet_loss": 0.0, "jitter_ms": 2.0}
    assert ev.extra == {"recorded": True}


def test_end_without_media_has_none():
    ev = decode_evapi(frame(event="call.end", ts=T0, call_id="c1", to="102", duration=1,
                            reason="local", **{"from": "101"}), CTX)
    assert ev.media is None and ev.extra == {}


def test_recording_ready_names_the_file_for_the_cdr():
    ev = decode_evapi(frame(event="call.recording_ready", ts=T0, call_id="c1", to="102",
                            file="/var/rec/c1.wav", size=48044, duration=3.0,
                            **{"from": "101"}), CTX)
    assert ev.type is EventType.CALL_RECORDING_READY
    assert ev.extra == {"file": "/var/rec/c1.wav", "recording": "/var/rec/c1.wav",
                        "size": 48044, "duration": 3.0}


def test_transfer_names_the_transferor_the_target_and_the_transferee():
    ev = decode_evapi(frame(event="call.transferred", ts=T0, call_id="c1", to="103",
                            transferee="101", kind="blind", **{"from": "102"}), CTX)

    assert ev.type is EventType.CALL_TRANSFERRED and ev.key == "c1"
    assert (ev.caller, ev.callee) == ("102", "103")
    assert ev.extra == {"transferee": "101", "kind": "blind"}


def test_offer_keeps_speed_dial_mask_and_transfer_links_in_extra():
    ev = decode_evapi(frame(event="call.start", ts=T0, call_id="c2", to="*774501",
                            ruri_user="*774501", mask_code="4501", masked_to="+7********99",
                            transferred_from="c1", referred_by="102", **{"from": "101"}), CTX)

    assert ev.callee == "*774501"
    assert ev.extra == {"sip_source": None, "mask_code": "4501", "masked_to": "+7********99",
                        "transferred_from": "c1", "referred_by": "102"}


def test_answered_names_who_really_answered():
    ev = decode_evapi(frame(event="call.answered", ts=T0, call_id="c3", to="74951230001",
                            agent="102", code=200, **{"from": "+79035550101"}), CTX)

    assert (ev.callee, ev.agent) == ("+74951230001", "102")


def test_pickup_names_who_took_the_call():
    ev = decode_evapi(frame(event="call.picked_up", ts=T0, call_id="c4", to="102",
                            picked_up_by="103", **{"from": "101"}), CTX)

    assert (ev.type, ev.agent, ev.callee) == (EventType.CALL_PICKED_UP, "103", "102")
    assert ev.extra == {"picked_up_by": "103"}


def test_ringing_keeps_the_member_rung_in_extra():
    ev = decode_evapi(frame(event="call.ringing", ts=T0, call_id="c1", to="sales",
                            code=180, reason="Ringing", leg_id="c1#2", leg_to="103",
                            **{"from": "101"}), CTX)

    assert ev.extra == {"leg_to": "103"}


@pytest.mark.parametrize(("name", "kind"), [("call.held", EventType.CALL_HELD),
                                            ("call.resumed", EventType.CALL_RESUMED)])
def test_hold_and_resume_name_who_held(name, kind):
    ev = decode_evapi(frame(event=name, ts=T0, call_id="c1", leg_id="c1", to="102",
                            held_by="101", **{"from": "101"}), CTX)

    assert (ev.type, ev.key, ev.leg_id, ev.agent) == (kind, "c1", "c1", "101")
    assert ev.extra == {"held_by": "101"}
    assert from_json(to_json(ev)) == ev


def test_hold_without_held_by_is_invalid():
    with pytest.raises(InvalidEvent, match="held_by"):
        decode_evapi(frame(event="call.held", ts=T0, call_id="c1", to="102",
                           **{"from": "101"}), CTX)


def test_transferees_new_dialog_keeps_the_call_id_and_names_its_dialog():
    ev = decode_evapi(frame(event="call.start", ts=T0, call_id="c1", leg_id="c9", to="103",
                            transferred_from="c1", referred_by="102", replaces="c5",
                            **{"from": "101"}), CTX)

    assert (ev.call_id, ev.leg_id, ev.key) == ("c1", "c9", "c1")
    assert (ev.extra["transferred_from"], ev.extra["replaces"]) == ("c1", "c5")


def test_route_decided_is_keyed_by_its_call_and_says_rule_target_and_default():
    ev = decode_evapi(frame(event="route.decided", ts=T0, call_id="c9", **{"from": "+79035550101"},
                            to="74951230001", domain="pbx.test", rule="whitelist",
                            target="ext:102", default_target="group:sales", decision_us=41), CTX)
    assert ev.type is EventType.ROUTE_DECIDED and ev.key == "c9"
    assert (ev.caller, ev.callee, ev.did) == ("+79035550101", "+74951230001", "+74951230001")
    assert ev.direction is Direction.INBOUND
    assert ev.extra == {"rule": "whitelist", "target": "ext:102",
                        "default_target": "group:sales", "decision_us": 41}
    with pytest.raises(InvalidEvent, match="route.decided: missing rule"):
        decode_evapi(frame(event="route.decided", ts=T0, call_id="c9", target="ext:102"), CTX)
