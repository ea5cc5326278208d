"""One end of a call's media: real RTP (PCMA, 20 ms) and RTCP (RFC 3550) over UDP.

rtpengine derives MOS, packet loss and jitter from the RTCP receiver report blocks
that pass through it, so the media-quality test needs endpoints that send sender
reports (SR) and report blocks with chosen values: sipp sends RTP but no RTCP.
The peer sends RTP from ``port`` and RTCP from ``port + 1`` to where the SDP of
rtpengine told it to, and notes every SR it receives, so that its own report blocks
carry a correct LSR (middle 32 bits of that SR's NTP time) and DLSR (time since).
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from dataclasses import dataclass

PT_PCMA = 8
SAMPLES_PER_PACKET = 160
"""20 ms at 8 kHz."""
PACKET_INTERVAL_S = 0.02
PCMA_SILENCE = b"\xd5" * SAMPLES_PER_PACKET
RTCP_SR, RTCP_RR = 200, 201
NTP_EPOCH_OFFSET = 2208988800
"""Seconds from 1900-01-01 (NTP) to 1970-01-01 (Unix)."""
DLSR_UNITS_PER_S = 65536
RECV_BUFFER = 2048


@dataclass(frozen=True)
class ReportBlock:
    """What we say about the stream we receive (RFC 3550 6.4.1)."""

    fraction_lost: int
    """Lost share since the last report, in 1/256."""
    cumulative_lost: int
    jitter: int
    """Interarrival jitter in RTP timestamp units (1/8000 s for PCMA)."""


@dataclass
class ReceivedSr:
    ssrc: int
    ntp_middle: int
    at: float
    """time.monotonic() when it arrived here."""


class RtpPeer:
    """RTP + RTCP sockets of one party; ``start_rtp`` streams until ``close``."""

    def __init__(self, ip: str, port: int, ssrc: int) -> None:
        self.ssrc = ssrc
        self.rtp = _bound(ip, port)
        self.rtcp = _bound(ip, port + 1)
        self.remote: tuple[str, int] | None = None
        self.rtp_received = 0
        self.srs: list[ReceivedSr] = []
        self._cond = threading.Condition()
        self._closed = False
        self._sent = 0
        self._threads = [threading.Thread(target=self._read_rtp, daemon=True),
                         threading.Thread(target=self._read_rtcp, daemon=True)]
        for thread in self._threads:
            thread.start()

    def start_rtp(self, remote: tuple[str, int]) -> None:
        """Send 20 ms PCMA packets to ``remote`` (RTCP goes to its port + 1)."""
        self.remote = remote
        sender = threading.Thread(target=self._send_rtp, daemon=True)
        self._threads.append(sender)
        sender.start()

    def wait(self, check: str, timeout: float = 10.0) -> None:
        """Wait until ``rtp`` (some RTP arrived) or ``sr`` (an SR arrived) holds."""
        tests = {"rtp": lambda: self.rtp_received >= 1 / PACKET_INTERVAL_S,
                 "sr": lambda: bool(self.srs)}
        with self._cond:
            if not self._cond.wait_for(tests[check], timeout):
                raise AssertionError(f"peer {self.ssrc:#x}: no {check} within {timeout}s")

    def send_sr(self) -> None:
        """A sender report with the current NTP time and our packet counts."""
        now = time.time() + NTP_EPOCH_OFFSET
        msw, lsw = int(now), int((now % 1) * (1 << 32))
        body = struct.pack("!IIIIII", self.ssrc, msw, lsw, self._sent * SAMPLES_PER_PACKET,
                           self._sent, self._sent * len(PCMA_SILENCE))
        self._send_rtcp(RTCP_SR, 0, body)

    def send_rr(self, about: int, block: ReportBlock, extra_delay_s: float) -> None:
        """A receiver report on ``about``'s stream, referring to its last SR seen here.

        ``extra_delay_s`` is left out of DLSR, so rtpengine measures that much more
        round-trip time on this leg than loopback gives (a network we do not have).
        """
        with self._cond:
            last = next(sr for sr in reversed(self.srs) if sr.ssrc == about)
        # the report leaves no earlier than the pretended network delay after the SR
        time.sleep(max(0.0, last.at + extra_delay_s - time.monotonic()))
        held = time.monotonic() - last.at - extra_delay_s
        dlsr = max(1, int(held * DLSR_UNITS_PER_S))
        lost = (block.fraction_lost << 24) | (block.cumulative_lost & 0xFFFFFF)
        report = struct.pack("!IIIIII", about, lost, self.rtp_received, block.jitter,
                             last.ntp_middle, dlsr)
        self._send_rtcp(RTCP_RR, 1, struct.pack("!I", self.ssrc) + report)

    def close(self) -> None:
        self._closed = True
        for thread in self._threads:
            thread.join()
        self.rtp.close()
        self.rtcp.close()

    def _send_rtcp(self, packet_type: int, count: int, body: bytes) -> None:
        assert self.remote is not None, "start_rtp first: RTCP goes where RTP goes"
        header = struct.pack("!BBH", 0x80 | count, packet_type, (len(body) + 4) // 4 - 1)
        self.rtcp.sendto(header + body, (self.remote[0], self.remote[1] + 1))

    def _send_rtp(self) -> None:
        assert self.remote is not None
        seq, started = 0, time.monotonic()
        while not self._closed:
            header = struct.pack("!BBHII", 0x80, PT_PCMA, seq & 0xFFFF,
                                 seq * SAMPLES_PER_PACKET, self.ssrc)
            self.rtp.sendto(header + PCMA_SILENCE, self.remote)
            seq += 1
            self._sent = seq
            time.sleep(max(0.0, started + seq * PACKET_INTERVAL_S - time.monotonic()))

    def _read_rtp(self) -> None:
        while not self._closed:
            try:
                self.rtp.recv(RECV_BUFFER)
            except TimeoutError:
                continue
            with self._cond:
                self.rtp_received += 1
                self._cond.notify_all()

    def _read_rtcp(self) -> None:
        while not self._closed:
            try:
                data = self.rtcp.recv(RECV_BUFFER)
            except TimeoutError:
                continue
            if len(data) >= 20 and data[1] == RTCP_SR:
                ssrc, msw, lsw = struct.unpack("!III", data[4:16])
                middle = ((msw & 0xFFFF) << 16) | (lsw >> 16)
                with self._cond:
                    self.srs.append(ReceivedSr(ssrc, middle, time.monotonic()))
                    self._cond.notify_all()


def _bound(ip: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((ip, port))
    sock.settimeout(0.2)
    return sock
