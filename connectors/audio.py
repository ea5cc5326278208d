"""Recordings as MP3 for the CRMs that store a link and play it later.

amoCRM's call player expects MP3 (issue 19, point 6; Kommo's call-logging docs: the
``link`` is "a link to the call recording, mp3"); the recorder writes WAV (mono PCM,
8 kHz, what G.711 carries). The encoding is LAME through ``lameenc`` (LAME bundled in
its wheel, no system package): no hand-written codec.
"""

from __future__ import annotations

import io
import wave

import lameenc

__all__ = ["MP3_BITRATE_KBPS", "wav_to_mp3", "mp3_name", "wav_name"]

MP3_BITRATE_KBPS = 32
"""Telephone speech (8 kHz, mono): 32 kbit/s keeps it intact at a quarter of the WAV."""


def wav_to_mp3(wav: bytes) -> bytes:
    """The MP3 of a 16-bit PCM WAV (any rate, mono or stereo); ValueError if it is not one."""
    try:
        with wave.open(io.BytesIO(wav)) as reader:
            channels, width, rate = (reader.getnchannels(), reader.getsampwidth(),
                                     reader.getframerate())
            pcm = reader.readframes(reader.getnframes())
    except (wave.Error, EOFError) as exc:
        raise ValueError(f"not a WAV recording: {exc}") from exc
    if width != 2:
        raise ValueError(f"only 16-bit PCM is encoded, not {8 * width}-bit")
    encoder = lameenc.Encoder()
    encoder.set_bit_rate(MP3_BITRATE_KBPS)
    encoder.set_in_sample_rate(rate)
    encoder.set_channels(channels)
    encoder.set_quality(2)
    return bytes(encoder.encode(pcm) + encoder.flush())


def mp3_name(name: str) -> str:
    """The link name of a recording's MP3 (``a/b.wav`` -> ``a/b.mp3``)."""
    return name[:-4] + ".mp3" if name.lower().endswith(".wav") else name


def wav_name(name: str) -> str | None:
    """The WAV an MP3 link name stands for, or None if it names no MP3."""
    return name[:-4] + ".wav" if name.lower().endswith(".mp3") else None
