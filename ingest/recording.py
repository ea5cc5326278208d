"""Call recordings: rtpengine's pcap -> a playable WAV, and the call.recording_ready payload.

rtpengine (``--recording-method=pcap --recording-format=eth``) writes every recorded call
to ``<recordings_dir>/pcaps/<call-id>-<random>.pcap``: both directions, raw RTP in
Ethernet/IPv4/UDP framing. The kernel-less setup cannot make WAVs itself, so this module
does: it parses the pcap (:func:`read_rtp`), decodes G.711 (PCMA/PCMU) with small lookup
tables, mixes both directions on the RTP timeline into one 8 kHz 16-bit mono WAV
(:func:`pcap_to_wav`) and describes it as an evapi-shaped ``call.recording_ready`` payload
(:func:`on_call_end`), which ``ingest.decode`` turns into ``EventType.CALL_RECORDING_READY``.

It is the step run for each ``call.end`` payload that carries ``"recorded": true``, once
rtpengine has closed the file (:func:`recording_closed`)::

    if recording_closed(settings, dialog_of(end)):
        ready = on_call_end(end, settings.recordings_dir, settings.recordings_wav_dir)

rtpengine knows a dialog by its SIP Call-ID, and a recording belongs to one dialog: a
transferred call (one Tawag ``call_id``) has a dialog per transfer, whose ``call.end``
names it in ``leg_id`` (:func:`dialog_of`). Each dialog's pcap is converted and announced
on its own, with the Tawag ``call_id`` and that ``leg_id``.

In the ingest process a :class:`Recorder` thread does that for every recorded call and
the bridge produces the payload as a ``call.recording_ready`` event (key = call id).
"""

from __future__ import annotations

import logging
import queue
import struct
import threading
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from core.settings import Settings
from edge.rtpengine import NgError, ng_command

__all__ = [
    "RtpPacket",
    "ALAW_TABLE",
    "ULAW_TABLE",
    "read_rtp",
    "decode_g711",
    "pcap_to_wav",
    "find_pcap",
    "dialog_of",
    "on_call_end",
    "recording_closed",
    "Recorder",
]

log = logging.getLogger("tawag.ingest.recording")

SAMPLE_RATE = 8000
PCMU, PCMA = 0, 8
PCAP_MAGIC_US = 0xA1B2C3D4
PCAP_MAGIC_NS = 0xA1B23C4D
LINKTYPE_ETHERNET = 1
ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_VLAN = 0x8100
IPPROTO_UDP = 17
RTP_VERSION = 2
RTP_HEADER = 12
INT16_MIN, INT16_MAX = -32768, 32767


@dataclass(frozen=True)
class RtpPacket:
    """One RTP packet from the pcap: its stream (ssrc), timing and G.711 payload."""

    ssrc: int
    payload_type: int
    seq: int
    timestamp: int
    arrival: float
    payload: bytes


# --- G.711 (ITU-T G.711 expansion, as in Sun's g711.c) --------------------------------------


def _alaw(code: int) -> int:
    code ^= 0x55
    magnitude = (code & 0x0F) << 4
    segment = (code & 0x70) >> 4
    if segment == 0:
        magnitude += 8
    else:
        magnitude = (magnitude + 0x108) << (segment - 1)
    return magnitude if code & 0x80 else -magnitude


def _ulaw(code: int) -> int:
    code = ~code & 0xFF
    magnitude = (((code & 0x0F) << 3) + 0x84) << ((code & 0x70) >> 4)
    return 0x84 - magnitude if code & 0x80 else magnitude - 0x84


ALAW_TABLE: tuple[int, ...] = tuple(_alaw(c) for c in range(256))
"""A-law byte -> 16-bit linear sample."""
ULAW_TABLE: tuple[int, ...] = tuple(_ulaw(c) for c in range(256))
"""mu-law byte -> 16-bit linear sample."""


def decode_g711(payload: bytes, payload_type: int) -> list[int]:
    """16-bit samples of a PCMA (8) or PCMU (0) payload."""
    table = ALAW_TABLE if payload_type == PCMA else ULAW_TABLE
    return [table[b] for b in payload]


# --- pcap ---------------------------------------------------------------------------------


def read_rtp(data: bytes) -> list[RtpPacket]:
    """The G.711 RTP packets of a pcap (Ethernet, IPv4, UDP); anything else is skipped."""
    endian, scale = _pcap_format(data)
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    if linktype != LINKTYPE_ETHERNET:
        raise ValueError(f"pcap: link type {linktype}, expected Ethernet (1)")
    packets = []
    pos = 24
    while pos + 16 <= len(data):
        sec, frac, incl, _ = struct.unpack(endian + "IIII", data[pos:pos + 16])
        frame = data[pos + 16:pos + 16 + incl]
        pos += 16 + incl
        packet = _rtp_of_frame(frame, sec + frac / scale)
        if packet is not None and packet.payload_type in (PCMU, PCMA):
            packets.append(packet)
    return packets


def _pcap_format(data: bytes) -> tuple[str, float]:
    if len(data) < 24:
        raise ValueError("pcap: shorter than its global header")
    for endian in ("<", ">"):
        magic = struct.unpack(endian + "I", data[:4])[0]
        if magic == PCAP_MAGIC_US:
            return endian, 1e6
        if magic == PCAP_MAGIC_NS:
            return endian, 1e9
    raise ValueError("pcap: unknown magic number")


def _rtp_of_frame(frame: bytes, arrival: float) -> RtpPacket | None:
    offset = 12
    ethertype = struct.unpack("!H", frame[offset:offset + 2])[0] if len(frame) > 14 else 0
    if ethertype == ETHERTYPE_VLAN:
        offset += 4
        ethertype = struct.unpack("!H", frame[offset:offset + 2])[0]
    if ethertype != ETHERTYPE_IPV4:
        return None
    ip = offset + 2
    ihl = (frame[ip] & 0x0F) * 4
    if frame[ip + 9] != IPPROTO_UDP:
        return None
    udp_length = struct.unpack("!H", frame[ip + ihl + 4:ip + ihl + 6])[0]
    return _parse_rtp(frame[ip + ihl + 8:ip + ihl + udp_length], arrival)


def _parse_rtp(rtp: bytes, arrival: float) -> RtpPacket | None:
    if len(rtp) < RTP_HEADER or rtp[0] >> 6 != RTP_VERSION:
        return None
    csrc_count, has_extension, has_padding = rtp[0] & 0x0F, rtp[0] & 0x10, rtp[0] & 0x20
    start = RTP_HEADER + 4 * csrc_count
    if has_extension and len(rtp) >= start + 4:
        start += 4 + 4 * struct.unpack("!H", rtp[start + 2:start + 4])[0]
    end = len(rtp) - (rtp[-1] if has_padding and rtp else 0)
    seq, timestamp, ssrc = struct.unpack("!HII", rtp[2:12])
    return RtpPacket(ssrc, rtp[1] & 0x7F, seq, timestamp, arrival, rtp[start:end])


# --- WAV ----------------------------------------------------------------------------------


def mix(packets: list[RtpPacket]) -> list[int]:
    """Both directions on one timeline: each stream placed by its RTP timestamps,
    anchored at its first packet's arrival; overlapping samples are summed and clipped."""
    if not packets:
        return []
    t0 = min(p.arrival for p in packets)
    streams: dict[int, list[RtpPacket]] = {}
    for packet in packets:
        streams.setdefault(packet.ssrc, []).append(packet)
    placed: list[tuple[int, list[int]]] = []
    for stream in streams.values():
        first = min(stream, key=lambda p: p.arrival)
        base = round((first.arrival - t0) * SAMPLE_RATE)
        for packet in stream:
            offset = base + ((packet.timestamp - first.timestamp) & 0xFFFFFFFF)
            placed.append((offset, decode_g711(packet.payload, packet.payload_type)))
    length = max(offset + len(samples) for offset, samples in placed)
    out = [0] * length
    for offset, samples in placed:
        for i, sample in enumerate(samples):
            out[offset + i] += sample
    return [min(INT16_MAX, max(INT16_MIN, s)) for s in out]


def pcap_to_wav(pcap: Path, wav_path: Path) -> float:
    """Write the call in ``pcap`` as 8 kHz 16-bit mono WAV; returns its duration (s)."""
    samples = mix(read_rtp(pcap.read_bytes()))
    wav_path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(wav_path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(SAMPLE_RATE)
        wav.writeframes(struct.pack(f"<{len(samples)}h", *samples))
    return len(samples) / SAMPLE_RATE


# --- the step run at call end -------------------------------------------------------------


def find_pcap(recordings_dir: Path, call_id: str) -> Path | None:
    """rtpengine's pcap of a call (``pcaps/<url-escaped call-id>-<random>.pcap``), newest."""
    name = _glob_escape(quote(call_id, safe=""))
    found = sorted((recordings_dir / "pcaps").glob(f"{name}-*.pcap"),
                   key=lambda p: p.stat().st_mtime, reverse=True)
    return found[0] if found else None


def _glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def dialog_of(end: dict[str, Any]) -> str:
    """The SIP Call-ID of the dialog a ``call.end`` payload ends: its ``leg_id`` (a
    transferee's dialog, under the Tawag call it continues), else its ``call_id``."""
    return str(end.get("leg_id") or end["call_id"])


def on_call_end(end: dict[str, Any], recordings_dir: Path, wav_dir: Path) -> dict[str, Any] | None:
    """For a recorded dialog's ``call.end`` payload, the WAV and its evapi-shaped
    ``call.recording_ready`` payload (the Tawag ``call_id``, the dialog in ``leg_id``
    when it is not the call's own); None if the dialog was not recorded."""
    if not end.get("recorded"):
        return None
    call_id, dialog = str(end["call_id"]), dialog_of(end)
    pcap = find_pcap(recordings_dir, dialog)
    if pcap is None:
        return None
    wav_path = wav_dir / (pcap.stem + ".wav")
    duration = pcap_to_wav(pcap, wav_path)
    return {
        "event": "call.recording_ready",
        "ts": time.time(),
        "call_id": call_id,
        **({"leg_id": dialog} if dialog != call_id else {}),
        "from": end.get("from"),
        "to": end.get("to"),
        "domain": end.get("domain"),
        "file": str(wav_path),
        "size": wav_path.stat().st_size,
        "duration": round(duration, 3),
        "pcap": str(pcap),
    }


def recording_closed(settings: Settings, call_id: str) -> bool:
    """True once rtpengine has no session for the call (so its pcap is complete)."""
    try:
        reply = ng_command(settings.sip_host, settings.rtpengine_ng_port,
                           {"command": "query", "call-id": call_id})
    except NgError:
        return False
    return reply.get("result") != "ok"


# --- the recorder: the step in the ingest process -------------------------------------------

CLOSE_TIMEOUT_S = 30.0
"""How long the recorder waits for rtpengine to close a call's pcap before giving up."""
CLOSE_POLL_S = 0.1


class Recorder:
    """Turns recorded calls into WAVs and ``call.recording_ready`` payloads, off the
    evapi reading thread: :meth:`submit` queues a ``call.end`` payload that says
    ``"recorded": true``; a worker thread waits until rtpengine has closed the pcap
    (``closed(call_id)``, with a deadline), decodes it to a WAV in ``wav_dir`` and hands
    the evapi-shaped payload to ``emit``::

        recorder = Recorder(settings.recordings_dir, settings.recordings_wav_dir,
                            closed=lambda cid: recording_closed(settings, cid),
                            emit=bridge.emit_payload)
        recorder.start()
        ...
        recorder.stop()
    """

    def __init__(self, recordings_dir: Path, wav_dir: Path, *,
                 closed: Callable[[str], bool], emit: Callable[[dict[str, Any]], None],
                 close_timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        self.recordings_dir = recordings_dir
        self.wav_dir = wav_dir
        self.closed = closed
        self.emit = emit
        self.close_timeout_s = close_timeout_s
        self.done = 0
        self.failed = 0
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="tawag-recorder", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, end: dict[str, Any]) -> None:
        """Queue a ``call.end`` payload; ignored unless it says ``"recorded": true``."""
        if end.get("recorded") is True and end.get("call_id"):
            self._queue.put(end)

    def stop(self, timeout: float = 5.0) -> None:
        """Finish what is queued (within ``timeout``), then end the worker."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _work(self) -> None:
        while (end := self._queue.get()) is not None:
            try:
                ready = self.process(end)
            except Exception:  # one bad pcap must not stop the recorder
                log.exception("recording of %s failed", end.get("call_id"))
                ready = None
            if ready is None:
                self.failed += 1
            else:
                self.emit(ready)
                self.done += 1

    def process(self, end: dict[str, Any]) -> dict[str, Any] | None:
        """Wait for the dialog's pcap to be closed, decode it; the payload, or None (logged)."""
        call_id = dialog_of(end)
        deadline = time.monotonic() + self.close_timeout_s
        while not self.closed(call_id):
            if time.monotonic() > deadline:
                log.warning("recording of %s: rtpengine kept the session open for %.0f s",
                            call_id, self.close_timeout_s)
                return None
            time.sleep(CLOSE_POLL_S)
        ready = on_call_end(end, self.recordings_dir, self.wav_dir)
        if ready is None:
            log.warning("recording of %s: no pcap in %s", call_id, self.recordings_dir)
        return ready
