"""Signed, expiring links to call recordings, handed to CRMs (amoCRM ``link``, Bitrix24
``RECORD_URL``, 1C ``Описание``).

The CRM fetches the file when someone presses play, possibly days later and from its
own servers, so the link must work without a session yet not be guessable or eternal:
``sig = HMAC-SHA256(secret, path + "\\n" + expires)``, compared in constant time.

A link a CRM *stores* (amoCRM's call note plays it whenever someone presses play, 1C keeps
it in Описание) must live as long as the CRM keeps it: ``expires = 0`` (:data:`NEVER`)
signs it without an end, and the way to revoke every such link is to rotate the key
(:func:`rotate_link_key`). A link the CRM only fetches once (Bitrix24's
``RECORD_URL``) gets a short expiry (``recordings_fetch_link_ttl_s``).

    url = sign_url("https://pbx.example.com/rec", "2026/11/26/call.mp3",
                   secret=b"...", expires_at=now + 7 * 86400)
    ok = verify("2026/11/26/call.mp3", expires, sig, secret=b"...", now=time.time())
    url = recording_url(settings, cdr.recording, now=time.time())   # from Settings
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import os
import secrets
from pathlib import Path
from urllib.parse import quote

from connectors.audio import mp3_name
from core.settings import Settings

__all__ = ["NEVER", "recording_file", "recording_name", "recording_url", "rotate_link_key",
           "signature", "sign_url", "verify", "with_link_defaults"]


NEVER = 0
"""``expires`` of a link that stays valid until the signing key is rotated."""


def signature(path: str, expires_at: int, secret: bytes) -> str:
    """URL-safe base64 (no padding) of the HMAC over the path and the expiry."""
    mac = hmac.new(secret, f"{path}\n{int(expires_at)}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")


def sign_url(base_url: str, path: str, *, secret: bytes, expires_at: int) -> str:
    """``{base_url}/{path}?expires=…&sig=…``; the path is signed as given (before quoting)."""
    sig = signature(path, expires_at, secret)
    return f"{base_url.rstrip('/')}/{quote(path.lstrip('/'))}?expires={int(expires_at)}&sig={sig}"


def verify(path: str, expires: str | int, sig: str, *, secret: bytes, now: float) -> bool:
    """True only for an unexpired (or :data:`NEVER`-expiring) link whose signature
    matches the current key (constant-time compare)."""
    try:
        expires_at = int(expires)
    except (TypeError, ValueError):
        return False
    if expires_at != NEVER and expires_at < now:
        return False
    return hmac.compare_digest(signature(path.lstrip("/"), expires_at, secret).encode(),
                               str(sig).encode())


def recording_name(recording: str, wav_dir: Path) -> str:
    """What a link names: the file relative to the recordings folder, never a host path."""
    path = Path(recording)
    if not path.is_absolute():
        return recording
    try:
        return path.relative_to(wav_dir).as_posix()
    except ValueError:
        return path.name


def recording_file(wav_dir: Path, recording: str | None) -> tuple[str, bytes] | None:
    """(file name, bytes) of a call's recording, for CRMs that take the file itself
    (Bitrix24 attachRecord ``FILENAME`` + ``FILE_CONTENT``); None if it is not on disk."""
    if not recording:
        return None
    path = Path(recording) if Path(recording).is_absolute() else wav_dir / recording
    try:
        return path.name, path.read_bytes()
    except OSError:
        return None


def recording_url(settings: Settings, recording: str | None, *, now: float,
                  stored: bool = True) -> str | None:
    """The link a CRM gets for a call's recording: the MP3, valid ``recordings_link_ttl_s``
    (0: until the key is rotated), if the CRM stores it and plays it later; else the WAV,
    valid ``recordings_fetch_link_ttl_s``; None
    without a recording, a base URL or a key (see :func:`with_link_defaults`)."""
    base, secret = settings.recordings_base_url, settings.recordings_link_secret
    if not (recording and base and secret):
        return None
    ttl = settings.recordings_link_ttl_s if stored else settings.recordings_fetch_link_ttl_s
    name = recording_name(recording, settings.recordings_wav_dir)
    # a stored link is played later by the CRM's own player (amoCRM's expects MP3)
    return sign_url(base, mp3_name(name) if stored else name,
                    secret=secret.encode(), expires_at=int(now) + ttl if ttl else NEVER)


# --- the signing key ---------------------------------------------------------------------------


def with_link_defaults(settings: Settings, *, create: bool = True) -> Settings:
    """Fill an empty recording base URL and signing key (generated once, kept 0600).

    ``create=False``: a reader that only signs (the public API) takes the key the
    connectors worker generated and keeps it empty (no links) until there is one."""
    base = (settings.recordings_base_url
            or f"http://{settings.recordings_http_host}:{settings.recordings_http_port}"
               "/recordings")
    secret = settings.recordings_link_secret
    if not secret:
        try:
            secret = _key_path(settings).read_text().strip()
        except FileNotFoundError:
            secret = ""
        if not secret and create:
            secret = rotate_link_key(settings)
    return dataclasses.replace(settings, recordings_base_url=base,
                               recordings_link_secret=secret)


def _key_path(settings: Settings) -> Path:
    return settings.connectors_dir / "recording-link.key"


def rotate_link_key(settings: Settings) -> str:
    """Write a new recording-link key (0600) and return it: every link signed with the
    old one -- including the non-expiring ones stored in CRMs -- stops working once
    ``tawag connectors`` restarts with it. (A key set in TAWAG_RECORDINGS_LINK_SECRET
    is rotated by changing that variable instead.)"""
    path = _key_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(32)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    os.replace(tmp, path)
    return secret
