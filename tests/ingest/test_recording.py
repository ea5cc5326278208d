"""ingest.recording without rtpengine: G.711 tables, pcap parsing, mixing, WAV output."""

from __future__ import annotations

import struct
import warnings
import wave
from pathlib import Path

import pytest

from ingest import recording

SAMPLE_PCAP = Path("/usr/share/sip-tester/g711a.pcap")


def test_g711_tables_match_the_standard_expansion() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop  # standard library to 3.12, audioop-lts from 3.13
    every_byte = bytes(range(256))
    alaw = struct.unpack("<256h", audioop.alaw2lin(every_byte, 2))
    ulaw = struct.unpack("<256h", audioop.ulaw2lin(every_byte, 2))
    assert alaw == recording.ALAW_TABLE
    assert ulaw == recording.ULAW_TABLE


def _rtp(seq: int, ts: int, ssrc: int, payload: bytes, pt: int = 8) -> bytes:
    return struct.pack("!BBHII", 0x80, pt, seq, ts, ssrc) + payload


def _frame(udp_payload: bytes) -> bytes:
    udp = struct.pack("!HHHH", 30000, 30002, 8 + len(udp_payload), 0) + udp_payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                     bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1]))
    return b"\x00" * 12 + b"\x08\x00" + ip + udp


def _pcap(frames: list[tuple[float, bytes]]) -> bytes:
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    for at, frame in frames:
        sec, usec = int(at), round((at - int(at)) * 1e6)
        out += struct.pack("<IIII", sec, usec, len(frame), len(frame)) + frame
    return out


def test_two_directions_are_mixed_on_the_rtp_timeline(tmp_path: Path) -> None:
    t0 = 1_800_000_000.0
    frames = []
    for i in range(50):  # 1 s of 20 ms packets each way, the answer 0.5 s late
        frames.append((t0 + i * 0.02, _frame(_rtp(i, 160 * i, 0xA, b"\xd5" * 160))))
        frames.append((t0 + 0.5 + i * 0.02, _frame(_rtp(i, 160 * i, 0xB, b"\xff" * 160, 0))))
    pcap = tmp_path / "call.pcap"
    pcap.write_bytes(_pcap(frames))

    duration = recording.pcap_to_wav(pcap, tmp_path / "call.wav")

    assert duration == pytest.approx(1.5)
    with wave.open(str(tmp_path / "call.wav")) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 8000)
        assert wav.getnframes() == 12000


def test_non_rtp_and_other_codecs_are_skipped() -> None:
    frames = [(1.0, _frame(b"not rtp")), (1.02, _frame(_rtp(1, 0, 1, b"\x00" * 20, pt=18)))]
    assert recording.read_rtp(_pcap(frames)) == []


def test_a_file_that_is_not_pcap_is_refused() -> None:
    with pytest.raises(ValueError, match="pcap"):
        recording.read_rtp(b"\x00" * 40)


@pytest.mark.skipif(not SAMPLE_PCAP.exists(), reason="sip-tester's sample pcap is missing")
def test_sipps_pcma_sample_decodes_to_its_length(tmp_path: Path) -> None:
    packets = recording.read_rtp(SAMPLE_PCAP.read_bytes())
    seconds = recording.pcap_to_wav(SAMPLE_PCAP, tmp_path / "sample.wav")

    assert {p.payload_type for p in packets} == {8}
    assert seconds == pytest.approx(7.05, abs=0.1)


def test_a_call_that_was_not_recorded_gives_nothing(tmp_path: Path) -> None:
    assert recording.on_call_end({"call_id": "c1"}, tmp_path, tmp_path) is None


def test_the_bridge_hands_recorded_calls_to_the_recorder_and_produces_recording_ready(
    tmp_path: Path,
) -> None:
    """call.end "recorded" -> the recorder waits for the pcap to be closed (off the reading
    thread), decodes it and the bridge produces call.recording_ready keyed by call id."""
    import json
    import threading

    from core.events import EventType
    from ingest.bridge import Bridge
    from ingest.decode import DecodeContext

    call_id = "rec-1@127.0.0.1"
    frames = [(100.0 + i * 0.02, _frame(_rtp(i, 160 * i, 0xA, b"\xd5" * 160))) for i in range(100)]
    (tmp_path / "pcaps").mkdir()
    (tmp_path / "pcaps" / "rec-1%40127.0.0.1-abc.pcap").write_bytes(_pcap(frames))
    closed = threading.Event()
    produced: list = []

    class Sink:
        def event(self, ev):
            produced.append(ev)

        def dead_letter(self, record):
            raise AssertionError(record)

        def flush(self):
            pass

    bridge = Bridge(("127.0.0.1", 1), DecodeContext(source="t", tenant_for_domain=lambda d: "acme"),
                    Sink())
    recorder = recording.Recorder(tmp_path, tmp_path / "wav", closed=lambda cid: closed.is_set(),
                                  emit=bridge.emit_payload, close_timeout_s=5)
    bridge.recorder = recorder
    recorder.start()
    end = {"event": "call.end", "ts": 102.0, "call_id": call_id, "from": "101", "to": "104",
           "start_ts": 100, "answered_ts": 100.0, "duration": 2, "recorded": True,
           "reason": "bye", "hangup_by": "101"}
    bridge.handle_frame(json.dumps(end).encode())  # returns at once: the pcap is still open
    assert [e.type for e in produced] == [EventType.CALL_ENDED]
    closed.set()
    recorder.stop()

    ready = produced[-1]
    assert (ready.type, ready.key, ready.callee) == (EventType.CALL_RECORDING_READY, call_id, "104")
    assert ready.extra["duration"] == pytest.approx(2.0)
    with wave.open(ready.extra["file"]) as wav:
        assert wav.getnframes() == 16000
    assert ready.extra["size"] == Path(ready.extra["file"]).stat().st_size
    assert recorder.done == 1 and bridge.stats.recordings == 1


def _seconds_of_rtp(seconds: float, ssrc: int) -> bytes:
    """A pcap of ``seconds`` of one 20 ms PCMA stream."""
    count = round(seconds / 0.02)
    return _pcap([(100.0 + i * 0.02, _frame(_rtp(i, 160 * i, ssrc, b"\xd5" * 160)))
                  for i in range(count)])


def test_a_transferees_dialog_gets_its_own_recording_not_the_first_dialogs(
    tmp_path: Path,
) -> None:
    """A transferred call: the first dialog (SIP Call-ID = the Tawag call id) and the
    transferee's new dialog (its own Call-ID, in leg_id) each have a pcap. The second
    dialog's call.end names the Tawag call in call_id: its recording must come from its
    own pcap and say which dialog it is, not convert the first dialog's again."""
    first, second = "xfer-1@127.0.0.1", "xfer-2@127.0.0.1"
    (tmp_path / "pcaps").mkdir()
    (tmp_path / "pcaps" / "xfer-1%40127.0.0.1-aaa.pcap").write_bytes(_seconds_of_rtp(1.0, 1))
    (tmp_path / "pcaps" / "xfer-2%40127.0.0.1-bbb.pcap").write_bytes(_seconds_of_rtp(3.0, 2))
    asked: list[str] = []
    emitted: list[dict] = []
    recorder = recording.Recorder(tmp_path, tmp_path / "wav",
                                  closed=lambda cid: asked.append(cid) or True,
                                  emit=emitted.append)
    recorder.start()
    recorder.submit({"event": "call.end", "call_id": first, "recorded": True})
    recorder.submit({"event": "call.end", "call_id": first, "leg_id": second,
                     "recorded": True})
    recorder.stop()

    assert asked == [first, second]  # rtpengine is asked about each dialog's own session
    own, transferred = emitted
    assert (own["call_id"], "leg_id" in own) == (first, False)
    assert (transferred["call_id"], transferred["leg_id"]) == (first, second)
    assert own["pcap"].endswith("-aaa.pcap") and transferred["pcap"].endswith("-bbb.pcap")
    assert (own["duration"], transferred["duration"]) == (pytest.approx(1.0),
                                                          pytest.approx(3.0))
    assert own["file"] != transferred["file"]
