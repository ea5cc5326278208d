"""The connectors worker's small HTTP server: signed recording downloads and CRM events.

    GET  /health                          200 once the worker consumes Kafka, else 503
    GET  /recordings/<file>?expires=&sig= the WAV, only for a valid, unexpired signature
                                          (``<name>.mp3``: that WAV encoded as MP3)
    POST /bitrix24/events                 ONEXTERNALCALLSTART (click-to-call, contract §2.10)

Recording links are handed to CRMs (amoCRM ``link``, Bitrix24 ``RECORD_URL``) and
fetched from the CRM's servers whenever someone presses play, so they carry no session:
``connectors.recording_links`` signs ``<file>`` (relative to the recordings folder) with
its expiry. Anything else gets 403 (bad or expired signature) or 404 (no such file, or a
name that would leave the folder -- checked after resolving symlinks, although a
signature we never issued cannot name such a file anyway).

Bitrix24 posts its events ``application/x-www-form-urlencoded`` with bracketed keys
(``data[USER_ID]``, ``auth[application_token]``); the token must equal
``crm_bitrix24_application_token`` (compared in constant time) and the Bitrix24 user must
map to one of our extensions (``crm_bitrix24_users``); then ``originate`` places the call
(:class:`connectors.click_to_call.EdgeOriginator`). Every refusal is answered with a status
and a one-line reason, and logged: 403 token, 400 no CALL_ID / no or bad number, 404 a
user without an extension or an extension the edge does not know, 409 an extension with
no phone registered, 501 no originator, 502/503 the edge failed.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import mimetypes
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from connectors.audio import wav_name, wav_to_mp3
from connectors.recording_links import verify

__all__ = ["ClickToCall", "ConnectorsHttp", "parse_bitrix_event"]

log = logging.getLogger("tawag.connectors.http")

RECORDINGS = "/recordings/"
CHUNK = 64 * 1024


@dataclass(frozen=True)
class ClickToCall:
    """A CRM user pressed a number: ring ``extension``, then connect it to ``phone``."""

    crm: str
    extension: str
    phone: str
    crm_call_id: str
    """Bitrix24's CALL_ID: the call is already registered there; only ``finish`` remains."""
    crm_user: str = field(default="", compare=False)
    """The CRM user who clicked (Bitrix24 USER_ID): the call is finished in their name.
    Not part of equality: ``crm_call_id`` already names the click."""


def parse_bitrix_event(body: bytes) -> dict[str, Any]:
    """Form body with ``data[X]``/``auth[Y]`` keys -> ``{"event":…, "data":{…}, "auth":{…}}``."""
    out: dict[str, Any] = {"data": {}, "auth": {}}
    for key, values in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items():
        value = values[0]
        if "[" in key and key.endswith("]"):
            group, _, name = key[:-1].partition("[")
            if group in ("data", "auth"):
                out[group][name] = value
                continue
        out[key] = value
    return out


class ConnectorsHttp:
    """``start()`` binds and serves in a thread; ``ready`` flips ``/health`` to 200."""

    def __init__(self, *, host: str, port: int, wav_dir: Path, secret: bytes,
                 bitrix24_token: str = "", bitrix24_users: dict[str, str] | None = None,
                 originate: Callable[[ClickToCall], None] | None = None,
                 not_placed: Callable[[ClickToCall], object] | None = None,
                 now: Callable[[], float] = time.time) -> None:
        self.host, self.port = host, port
        self.wav_dir = wav_dir
        self.secret = secret
        self.bitrix24_token = bitrix24_token
        self.bitrix24_extension = {str(uid): ext for ext, uid in (bitrix24_users or {}).items()}
        self.originate = originate
        self.not_placed = not_placed
        """Told of every refused click that named a CALL_ID: Bitrix24 has registered that
        call already, and it stays "in progress" there until somebody finishes it."""
        self.now = now
        self.ready = threading.Event()
        self.click_to_calls: list[ClickToCall] = []
        self._httpd: ThreadingHTTPServer | None = None

    def start(self) -> ConnectorsHttp:
        self._httpd = _Server((self.host, self.port), _handler(self))
        self.port = self._httpd.server_address[1]
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2},
                         daemon=True, name="tawag-connectors-http").start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    # --- routes ----------------------------------------------------------------------
    def recording(self, path: str, query: dict[str, list[str]]) -> tuple[int, Path | None]:
        """(status, file): 403 for a bad or expired signature, 404 for no such file. A
        signed ``.mp3`` name stands for the WAV of the same name (encoded when served)."""
        name = unquote(path[len(RECORDINGS):])
        expires, sig = (query.get(k, [""])[0] for k in ("expires", "sig"))
        if not (name and expires and sig) or "\x00" in name:
            return 403, None
        if not verify(name, expires, sig, secret=self.secret, now=self.now()):
            return 403, None
        root = self.wav_dir.resolve()
        try:
            target = (root / (wav_name(name) or name).lstrip("/")).resolve()
        except (OSError, RuntimeError):
            return 404, None
        if not target.is_relative_to(root) or target == root or not target.is_file():
            return 404, None
        return 200, target

    def bitrix24_event(self, body: bytes) -> tuple[int, str]:
        event = parse_bitrix_event(body)
        token = event["auth"].get("application_token", "")
        if not self.bitrix24_token or not hmac.compare_digest(
                token.encode(), self.bitrix24_token.encode()):
            return 403, "wrong application_token"
        if event.get("event", "").upper() != "ONEXTERNALCALLSTART":
            return 200, "ignored"
        data = event["data"]
        status, reason = self._click_to_call(data)
        if status != 200:
            log.warning("Bitrix24 click-to-call %s (user %s, number %s) refused: %d %s",
                        data.get("CALL_ID", "?"), data.get("USER_ID", "?"),
                        data.get("PHONE_NUMBER", "?"), status, reason)
            if data.get("CALL_ID") and self.not_placed is not None:
                self.not_placed(ClickToCall("bitrix24", "", data.get("PHONE_NUMBER", ""),
                                            data["CALL_ID"], data.get("USER_ID", "")))
        return status, reason

    def _click_to_call(self, data: dict[str, str]) -> tuple[int, str]:
        from connectors.click_to_call import OriginationRefused

        user, crm_call_id = data.get("USER_ID", ""), data.get("CALL_ID", "")
        phone = data.get("PHONE_NUMBER_INTERNATIONAL") or data.get("PHONE_NUMBER") or ""
        if not crm_call_id:
            return 400, "no CALL_ID"
        if not phone:
            return 400, "no PHONE_NUMBER"
        extension = self.bitrix24_extension.get(user)
        if extension is None:
            return 404, f"Bitrix24 user {user or '(none)'} has no extension (crm_bitrix24_users)"
        call = ClickToCall("bitrix24", extension, phone, crm_call_id, user)
        self.click_to_calls.append(call)
        if self.originate is None:
            return 501, "click-to-call origination is not configured"
        try:
            self.originate(call)
        except OriginationRefused as exc:
            return exc.status, exc.reason
        except Exception as exc:  # a bug or an odd edge answer: Bitrix24 shows nothing
            log.exception("click-to-call %s -> %s crashed", extension, phone)
            return 502, f"the edge could not place the call: {type(exc).__name__}"
        return 200, "ok"


class _Server(ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True


def _handler(app: ConnectorsHttp) -> type:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "tawag-connectors"
        sys_version = ""

        def log_message(self, fmt: str, *args: Any) -> None:
            # never log the query string: it holds the signature
            log.debug("%s %s", self.command, urlsplit(self.path).path)

        def _reply(self, status: int, text: str = "", ctype: str = "text/plain") -> None:
            body = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", f"{ctype}; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            if parts.path == "/health":
                ok = app.ready.is_set()
                self._reply(200 if ok else 503, "ok" if ok else "starting")
                return
            if not parts.path.startswith(RECORDINGS):
                self._reply(404, "not found")
                return
            status, target = app.recording(parts.path, parse_qs(parts.query))
            if target is None:
                self._reply(status, "forbidden" if status == 403 else "not found")
                return
            if wav_name(parts.path):  # the MP3 a CRM's player asked for
                try:
                    body = wav_to_mp3(target.read_bytes())
                except (OSError, ValueError):
                    self._reply(404, "not found")
                    return
                self._send_file(target.with_suffix(".mp3").name, len(body))
                if self.command != "HEAD":
                    self.wfile.write(body)
                return
            self._send_file(target.name, target.stat().st_size)
            if self.command == "HEAD":
                return
            with contextlib.suppress(OSError), target.open("rb") as f:
                while chunk := f.read(CHUNK):
                    self.wfile.write(chunk)

        def _send_file(self, name: str, size: int) -> None:
            self.send_response(200)
            self.send_header("Content-Type",
                             mimetypes.guess_type(name)[0] or "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.send_header("Cache-Control", "private, no-store")
            self.end_headers()

        do_HEAD = do_GET

        def do_POST(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if parts.path.rstrip("/") != "/bitrix24/events":
                self._reply(404, "not found")
                return
            status, text = app.bitrix24_event(body)
            self._reply(status, text)

    return Handler
