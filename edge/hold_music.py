"""The music a queued caller hears: a short, quiet melody Tawag writes itself.

rtpengine plays a WAV file to the caller (``play media``) and encodes it to the call's
codec, so any file works; the built-in one exists so that a fresh install has music
without shipping a recording under someone else's licence. An operator replaces it with
``TAWAG_HOLD_MUSIC`` (a path to their own WAV).
"""

from __future__ import annotations

import math
import struct
import wave
from pathlib import Path

__all__ = ["RATE", "ensure_hold_music", "melody"]

RATE = 8000
"""Telephone sampling rate: nothing above 4 kHz reaches the caller anyway."""
NOTE_S = 0.4
# C major arpeggio up and down, then the relative minor: calm, and unmistakably music
NOTES_HZ = (261.63, 329.63, 392.00, 523.25, 392.00, 329.63,
            220.00, 261.63, 329.63, 440.00, 329.63, 261.63)
LEVEL = 0.25
"""Peak amplitude (of full scale): soft enough not to clip after G.711 companding."""


def melody(rate: int = RATE) -> bytes:
    """The melody as 16-bit mono little-endian PCM: each note with a fade in and out, so
    joins between notes (and the loop's restart) do not click."""
    per_note = int(NOTE_S * rate)
    fade = per_note // 8
    frames = bytearray()
    for freq in NOTES_HZ:
        for i in range(per_note):
            envelope = min(1.0, i / fade, (per_note - 1 - i) / fade)
            sample = LEVEL * envelope * math.sin(2 * math.pi * freq * i / rate)
            frames += struct.pack("<h", round(sample * 32767))
    return bytes(frames)


def ensure_hold_music(path: Path) -> Path:
    """Write the built-in melody to ``path`` unless a file is already there."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        with wave.open(str(partial), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(RATE)
            out.writeframes(melody())
        partial.replace(path)
    return path
