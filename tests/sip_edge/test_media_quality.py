"""RTP quality in call.end: real RTP and RTCP through rtpengine, checked against what was sent.

kamailio.cfg fills call.end's ``media`` from ``$rtpstat`` (packets, bytes, errors) and
from rtpengine's ``mos_average_*`` pvs, which rtpengine computes from the RTCP receiver
report blocks passing through it (rtpengine 10.5, daemon/ssrc.c):

* packet loss (%) = fraction_lost * 100 / 256, jitter (ms) = jitter * 1000 / clock rate;
* MOS needs the round trip of *both* legs (MOS-CQ): each leg's RTT is measured from an
  SR it forwarded to that leg's RR quoting it (LSR), minus the RR's DLSR;
* a reporter's blocks less than 1 s apart are discarded, and the first block before the
  other leg's RTT is known counts without a MOS;
* Kamailio averages MOS, loss and jitter over the SSRCs that have a MOS (integer maths).

Both parties here are Python (tests/sip_edge/sip_ua.py for SIP, rtp_peer.py for media)
because sipp sends no RTCP.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from edge_harness import EdgeStack, EvapiListener
from rtp_peer import ReportBlock, RtpPeer
from sip_ua import SipUa, media_address, sdp

from edge import sipp

pytestmark = pytest.mark.integration

CALLER, CALLEE = "101", "102"
CALLER_PORT, CALLEE_PORT = 25075, 25076
CALLER_MEDIA, CALLEE_MEDIA = 32700, 32710
"""Outside rtpengine's range of the test stack (32000-32499) and below ephemeral ports."""
CALLER_SSRC, CALLEE_SSRC = 0x1111AAAA, 0x2222BBBB
LEG_DELAY_S = 0.020
"""Round trip each party pretends to have on its leg (left out of DLSR)."""
CLOCK_RATE = 8000
CALLEE_SAYS = ReportBlock(fraction_lost=13, cumulative_lost=7, jitter=80)
"""The callee about the caller's stream: 13/256 = 5 % lost, 80/8000 s = 10 ms jitter."""
CALLER_SAYS = ReportBlock(fraction_lost=26, cumulative_lost=20, jitter=160)
"""The caller about the callee's stream: 26/256 = 10 % lost, 20 ms jitter."""
STATS_BLOCK_GAP_S = 1.05
"""rtpengine keeps one stats block per reporter per second and drops the ones between."""
RTT_SLACK_MS = 30
"""Loopback adds well under a millisecond per pass; this covers a busy 2-core machine."""


def loss_pct(block: ReportBlock) -> int:
    return block.fraction_lost * 100 // 256


def jitter_ms(block: ReportBlock) -> int:
    return block.jitter * 1000 // CLOCK_RATE


def rtpengine_mos(rtt_ms: float, jitter: int, loss: int) -> int:
    """rtpengine 10.5's mos_calc (daemon/ssrc.c), MOS * 10 truncated."""
    eff_rtt = int(rtt_ms) + jitter * 2 + 10
    r = 93.2 - eff_rtt / 40.0 if eff_rtt < 160 else 93.2 - (eff_rtt - 120) / 10.0
    r -= loss * 2.5
    return int((1.0 + 0.035 * r + 0.000007 * r * (r - 60) * (100 - r)) * 10)


@pytest.fixture(scope="module")
def sip(edge_stack: EdgeStack, tmp_path_factory: pytest.TempPathFactory) -> sipp.Edge:
    return sipp.Edge.from_settings(edge_stack.settings, tmp_path_factory.mktemp("sipp"))


@pytest.fixture
def parties(sip: sipp.Edge, evapi: EvapiListener) -> Iterator[tuple[SipUa, SipUa]]:
    """Caller and callee phones; the callee registered at its UA's port first."""
    registered = sipp.register(sip, CALLEE, port=CALLEE_PORT)
    assert registered.ok, registered.received()
    evapi.wait_for(lambda e: e.get("call_id") == registered.call_id)
    edge = (sip.host, sip.port)
    caller = SipUa(CALLER, "", CALLER_PORT, edge, sip.domain)
    callee = SipUa(CALLEE, "", CALLEE_PORT, edge, sip.domain)
    yield caller, callee
    caller.close()
    callee.close()


def test_call_end_carries_mos_loss_and_jitter_from_rtcp_and_the_rtp_counters(
    parties: tuple[SipUa, SipUa], evapi: EvapiListener
) -> None:
    caller, callee = parties
    caller_media = RtpPeer("127.0.0.1", CALLER_MEDIA, CALLER_SSRC)
    callee_media = RtpPeer("127.0.0.1", CALLEE_MEDIA, CALLEE_SSRC)
    try:
        outcome: dict[str, object] = {}
        dialing = threading.Thread(target=lambda: outcome.update(
            call=caller.invite(CALLEE, sdp("127.0.0.1", CALLER_MEDIA))))
        dialing.start()
        invite = callee.wait_request("INVITE")
        callee.answer(invite, sdp("127.0.0.1", CALLEE_MEDIA))
        dialing.join(10)
        final, dialog = outcome["call"]  # type: ignore[misc]
        assert final.status == 200 and dialog is not None
        # each party sends where rtpengine's SDP told it to (not to the other party)
        caller_media.start_rtp(media_address(dialog.remote_sdp))
        callee_media.start_rtp(media_address(invite.body))
        caller_media.wait("rtp")
        callee_media.wait("rtp")

        caller_media.send_sr()
        callee_media.send_sr()
        caller_media.wait("sr")
        callee_media.wait("sr")
        # first round: the callee's block has no MOS yet (the caller leg's RTT is not
        # known), the caller's block has both RTTs and gets one
        callee_media.send_rr(CALLER_SSRC, CALLEE_SAYS, LEG_DELAY_S)
        first_callee_rr = time.monotonic()
        caller_media.send_rr(CALLEE_SSRC, CALLER_SAYS, LEG_DELAY_S)
        time.sleep(max(0.0, first_callee_rr + STATS_BLOCK_GAP_S - time.monotonic()))
        callee_media.send_rr(CALLER_SSRC, CALLEE_SAYS, LEG_DELAY_S)

        bye = dialog.request("BYE")
        assert bye.status == 200
        assert callee.wait_request("BYE").call_id == dialog.call_id
    finally:
        caller_media.close()
        callee_media.close()

    end = evapi.wait_for(lambda e: e["event"] == "call.end" and e["call_id"] == dialog.call_id)
    media = end["media"]
    assert (end["reason"], end["hangup_by"]) == ("bye", CALLER)
    assert media["packets"] > 0 and media["errors"] == 0
    assert media["bytes"] >= media["packets"] * (12 + len(b"\xd5" * 160))
    # both SSRCs have a MOS; Kamailio averages their figures with integer division
    assert media["packet_loss"] == (loss_pct(CALLER_SAYS) + loss_pct(CALLEE_SAYS)) // 2
    assert media["jitter_ms"] == (jitter_ms(CALLER_SAYS) + jitter_ms(CALLEE_SAYS)) // 2
    end_to_end_ms = 2 * LEG_DELAY_S * 1000
    low = [rtpengine_mos(end_to_end_ms + RTT_SLACK_MS, jitter_ms(b), loss_pct(b))
           for b in (CALLER_SAYS, CALLEE_SAYS)]
    high = [rtpengine_mos(end_to_end_ms, jitter_ms(b), loss_pct(b))
            for b in (CALLER_SAYS, CALLEE_SAYS)]
    assert sum(low) // 2 / 10 <= media["mos"] <= sum(high) // 2 / 10
