"""edge.sipp reads outcomes from sipp's -trace_msg file; checked on a captured trace."""

from __future__ import annotations

from pathlib import Path

from edge import sipp

TRACE = (
    "\n----------------------------------------------- 2026-11-26\t06:56:42.100000\n"
    "UDP message sent (218 bytes):\n\n"
    "INVITE sip:104@pbx.test SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:25084;branch=z9hG4bK-1-1-0\r\n"
    "Call-ID: cancel-101-104-ab-1@127.0.0.1\r\n"
    "CSeq: 1 INVITE\r\n"
    "Content-Type: application/sdp\r\n\r\n"
    "v=0\r\na=rtpmap:8 PCMA/8000\r\n\n"
    "----------------------------------------------- 2026-11-26\t06:56:42.200000\n"
    "UDP message received [332] bytes :\n\n"
    "SIP/2.0 200 canceling\r\n"
    "Call-ID: cancel-101-104-ab-1@127.0.0.1\r\n"
    "CSeq: 1 CANCEL\r\n\r\n\n"
    "----------------------------------------------- 2026-11-26\t06:56:42.300000\n"
    "UDP message received [205] bytes :\n\n"
    "SIP/2.0 487 Request Terminated\r\n"
    "Call-ID: cancel-101-104-ab-1@127.0.0.1\r\n"
    "CSeq: 1 INVITE\r\n\r\n\n"
)


def test_parse_trace_reads_direction_first_line_and_headers() -> None:
    invite, cancelled, terminated = sipp.parse_trace(TRACE)

    assert (invite.direction, invite.method, invite.status) == ("sent", "INVITE", None)
    assert invite.call_id == "cancel-101-104-ab-1@127.0.0.1"
    assert (cancelled.direction, cancelled.status, cancelled.cseq_method) == (
        "received",
        200,
        "CANCEL",
    )
    assert terminated.first_line == "SIP/2.0 487 Request Terminated"


def test_final_code_is_the_invites_not_the_cancels() -> None:
    messages = tuple(sipp.parse_trace(TRACE))
    result = sipp.SippResult("uac_cancel.xml", 0, messages[0].call_id, 0.0, 1.0, messages, 487)

    assert result.final_code == 487
    assert result.ok
    assert not sipp.SippResult("x", 0, None, 0.0, 1.0, messages, 486).ok
    assert not sipp.SippResult("x", 1, None, 0.0, 1.0, messages, 487).ok


def test_uas_scenarios_exist_for_every_driver_function() -> None:
    names = {path.name for path in Path(sipp.SCENARIO_DIR).glob("*.xml")}

    assert {
        "register.xml",
        "uas_answer.xml",
        "uas_answer_hangup.xml",
        "uas_busy.xml",
        "uas_ring.xml",
        "uac_call.xml",
        "uac_call_until_bye.xml",
        "uac_fail.xml",
        "uac_cancel.xml",
    } <= names
