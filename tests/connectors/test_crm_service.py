"""The connectors as a service of the stack: settings, the HTTP server, the supervisor entry.

- every connector setting is defined once in ``core/settings.py`` and read from there
  (no copy in connectors/), and survives the environment round trip a child process
  makes (dict- and list-valued ones included);
- signed recording links download only while valid: 403 for a bad or expired signature,
  404 for a missing file or a path that leaves the recordings folder;
- ONEXTERNALCALLSTART (form-encoded, contract §2.10) is accepted only with the right
  ``auth[application_token]`` and for a Bitrix24 user mapped to an extension;
- ``tawag up`` runs the connectors component only when a CRM is enabled.
"""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest

from connectors.base import Contact
from connectors.contacts import contact_record
from connectors.recording_links import recording_name, sign_url
from connectors.targets import Target, extension_for
from connectors.web import ClickToCall, ConnectorsHttp, parse_bitrix_event
from connectors.wiring import build_targets, with_link_defaults
from core.settings import Settings, load, to_environ
from tawag.supervisor import components

SECRET = b"k" * 32
PORT = 31193


def test_connectors_keep_no_copy_of_the_settings():
    """Configuration is read from Settings itself: no connectors record redeclares a
    setting (as ``crm_x``, ``recordings_x`` or ``x``) to be filled from it."""
    import dataclasses
    import importlib
    import inspect
    import pkgutil

    import connectors

    names = {f.name for f in dataclasses.fields(Settings)}
    names |= {n.split("_", 1)[1] for n in names if n.startswith(("crm_", "recordings_"))}
    copies = []
    for info in pkgutil.walk_packages(connectors.__path__, "connectors."):
        module = importlib.import_module(info.name)
        for cls in vars(module).values():
            if (inspect.isclass(cls) and cls.__module__ == info.name
                    and dataclasses.is_dataclass(cls)):
                copies += [f"{cls.__qualname__}.{f.name}" for f in dataclasses.fields(cls)
                           if f.name in names]
    assert copies == []


def test_crm_settings_from_the_environment_round_trip():
    env = {"TAWAG_CRM_ENABLED": "amocrm, bitrix24",
           "TAWAG_CRM_AMOCRM_USERS": "101=8001, 102=8002",
           "TAWAG_CRM_HTTP_TIMEOUT_S": "3.5", "TAWAG_RECORDINGS_HTTP_PORT": "47100",
           "TAWAG_CRM_AMOCRM_CLIENT_SECRET": "s3cret"}
    s = load(environ=env)
    assert s.crm_enabled == ("amocrm", "bitrix24")
    assert s.crm_amocrm_users == {"101": "8001", "102": "8002"}
    assert s.crm_http_timeout_s == 3.5 and s.recordings_http_port == 47100
    assert load(environ=to_environ(s)) == s
    assert "s3cret" not in repr(s)
    assert [t.name for t in build_targets(s)] == ["amocrm", "bitrix24"]
    with pytest.raises(ValueError, match="key=value"):
        load(environ={"TAWAG_CRM_BITRIX24_USERS": "101:1269"})


def test_link_defaults_generate_one_persistent_secret(tmp_path):
    s = load(environ={}, data_dir=tmp_path, recordings_http_port=47111)
    first = with_link_defaults(s)
    assert first.recordings_base_url == "http://127.0.0.1:47111/recordings"
    assert len(first.recordings_link_secret) >= 32
    assert with_link_defaults(s).recordings_link_secret == first.recordings_link_secret
    assert (s.connectors_dir / "recording-link.key").stat().st_mode & 0o077 == 0
    assert with_link_defaults(first) == first  # an operator's own URL and key are kept


def test_links_name_files_relative_to_the_recordings_folder(tmp_path):
    assert recording_name(str(tmp_path / "wav" / "c1.wav"), tmp_path / "wav") == "c1.wav"
    assert recording_name("2026/11/26/A.mp3", tmp_path) == "2026/11/26/A.mp3"
    assert recording_name("/elsewhere/x.wav", tmp_path / "wav") == "x.wav"


@pytest.fixture
def server(tmp_path):
    wav = tmp_path / "wav"
    wav.mkdir()
    (wav / "call-1.wav").write_bytes(b"RIFF....WAVEdata")
    (tmp_path / "secret.txt").write_text("outside")
    placed: list[ClickToCall] = []
    http = ConnectorsHttp(host="127.0.0.1", port=PORT, wav_dir=wav, secret=SECRET,
                          bitrix24_token="app-token", bitrix24_users={"101": "1269"},
                          originate=placed.append).start()
    http.placed = placed
    yield http
    http.stop()


def base(http: ConnectorsHttp) -> str:
    return f"http://127.0.0.1:{http.port}"


def test_a_stored_link_plays_the_recording_as_mp3(server):
    """amoCRM's player expects MP3: a signed ``.mp3`` name serves the WAV of that name
    encoded by LAME; the signature is on the MP3 name, so a WAV link grants no MP3 and
    the reverse; a file that is no WAV is not found."""
    import io
    import math
    import struct
    import wave

    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(i / 7)))
                               for i in range(8000)))
    (server.wav_dir / "talk.wav").write_bytes(buffer.getvalue())
    now = int(time.time())
    url = sign_url(base(server) + "/recordings", "talk.mp3", secret=SECRET, expires_at=now + 60)
    ok = httpx.get(url)
    assert ok.status_code == 200 and ok.headers["content-type"] == "audio/mpeg"
    assert ok.content[:2] == b"\xff\xe3"  # an MPEG audio frame (MPEG 2.5, layer III)
    assert 0 < len(ok.content) < len(buffer.getvalue()) / 2
    assert httpx.get(url.replace("talk.mp3", "talk.wav")).status_code == 403
    not_wav = sign_url(base(server) + "/recordings", "call-1.mp3", secret=SECRET,
                       expires_at=now + 60)
    assert httpx.get(not_wav).status_code == 404


def test_signed_link_downloads_and_everything_else_is_refused(server):
    now = int(time.time())
    url = sign_url(base(server) + "/recordings", "call-1.wav", secret=SECRET,
                   expires_at=now + 60)
    ok = httpx.get(url)
    assert ok.status_code == 200 and ok.content == b"RIFF....WAVEdata"
    assert ok.headers["content-type"] == "audio/x-wav"
    tampered = url.replace("sig=", "sig=A")
    assert httpx.get(tampered).status_code == 403
    expired = sign_url(base(server) + "/recordings", "call-1.wav", secret=SECRET,
                       expires_at=now - 1)
    assert httpx.get(expired).status_code == 403
    other_key = sign_url(base(server) + "/recordings", "call-1.wav", secret=b"x" * 32,
                         expires_at=now + 60)
    assert httpx.get(other_key).status_code == 403
    assert httpx.get(base(server) + "/recordings/call-1.wav").status_code == 403
    missing = sign_url(base(server) + "/recordings", "nope.wav", secret=SECRET,
                       expires_at=now + 60)
    assert httpx.get(missing).status_code == 404
    # even a validly signed name may not leave the folder
    for name in ("../secret.txt", "%2e%2e/secret.txt", "/etc/passwd", "."):
        sig_url = sign_url(base(server) + "/recordings", name, secret=SECRET,
                           expires_at=now + 60)
        raw = sig_url if name != "%2e%2e/secret.txt" else sig_url.replace("%252e", "%2e")
        assert httpx.get(raw).status_code in (403, 404), name
    from connectors.recording_links import signature
    sig = signature("../secret.txt", now + 60, SECRET)
    status, target = server.recording("/recordings/..%2Fsecret.txt",
                                      {"expires": [str(now + 60)], "sig": [sig]})
    assert (status, target) == (404, None)


def test_health_turns_on_when_the_worker_is_ready(server):
    assert httpx.get(base(server) + "/health").status_code == 503
    server.ready.set()
    assert httpx.get(base(server) + "/health").status_code == 200


def bitrix_form(token: str, user: str = "1269") -> bytes:
    return urlencode({
        "event": "ONEXTERNALCALLSTART", "event_handler_id": "1055",
        "data[PHONE_NUMBER]": "+79161234567", "data[PHONE_NUMBER_INTERNATIONAL]": "+79161234567",
        "data[EXTENSION]": "", "data[USER_ID]": user, "data[CALL_LIST_ID]": "0",
        "data[LINE_NUMBER]": "7", "data[IS_MOBILE]": "0",
        "data[CALL_ID]": "externalCall.8935.1773236989", "data[CRM_ENTITY_TYPE]": "CONTACT",
        "data[CRM_ENTITY_ID]": "797", "ts": "1773236988",
        "auth[domain]": "some-domain.bitrix24.com", "auth[member_id]": "a223",
        "auth[application_token]": token}).encode()


def test_click_to_call_event_is_checked_and_mapped_to_an_extension(server):
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    url = base(server) + "/bitrix24/events"
    assert httpx.post(url, content=bitrix_form("wrong"), headers=form).status_code == 403
    assert httpx.post(url, content=bitrix_form("app-token", user="9"),
                      headers=form).status_code == 404
    assert server.placed == []
    assert httpx.post(url, content=bitrix_form("app-token"), headers=form).status_code == 200
    assert server.placed == [ClickToCall("bitrix24", "101", "+79161234567",
                                         "externalCall.8935.1773236989")]
    parsed = parse_bitrix_event(bitrix_form("t"))
    assert parsed["data"]["USER_ID"] == "1269" and parsed["auth"]["application_token"] == "t"


def test_crm_contacts_record_maps_the_owner_to_an_extension():
    target = Target(client=None, users={"101": "8001", "102": "8002"})  # type: ignore[arg-type]
    assert extension_for(target, "8002") == "102" and extension_for(target, "9") is None
    contact = Contact("amocrm", "406322", "Иван", "8002")
    key, value = contact_record("acme", "amocrm", "+79161234567", contact, "102", 1.0)
    assert key == b"acme:+79161234567:amocrm"
    assert b'"extension": "102"' in value and b'"responsible_user_id": "8002"' in value


def test_connectors_component_only_when_a_crm_is_enabled(tmp_path: Path):
    off = load(environ={}, data_dir=tmp_path)
    assert "connectors" not in [c.name for c in components(off)]
    on = load(environ={}, data_dir=tmp_path, crm_enabled=("amocrm",),
              recordings_http_port=47112, connectors_metrics_port=47113)
    names = [c.name for c in components(on)]
    assert names.index("connectors") == names.index("api") + 1  # after the readers
    comp = next(c for c in components(on) if c.name == "connectors")
    assert comp.ports == ((47112, "tcp"), (47113, "tcp"))  # links, metrics
    assert comp.command(on)[-1] == "connectors" and not comp.ready(on)


def test_a_did_call_pops_the_card_of_the_extension_its_leg_rings():
    """The real edge names the ringing extension in ``extra.leg_to`` (callee is the DID)."""
    from crm_helpers import make_event

    from connectors.screen_pop import apply_event
    from core.events import EventType

    offered = make_event(EventType.CALL_OFFERED, "c1", caller="+79161234567",
                         callee="+74951230102")
    view, change = apply_event(None, offered, "RU")
    assert change is None
    ringing = make_event(EventType.CALL_RINGING, "c1", ms=5, caller="+79161234567",
                         callee="+74951230102", extra={"leg_to": "102"})
    view, change = apply_event(view, ringing, "RU")
    assert change is not None and change.users == ("102",)


def test_a_call_record_waits_for_the_revision_that_brings_the_recording(amo, tmp_path):
    """The CDR closes a moment before call.recording_ready: the link must still go out."""
    from crm_helpers import make_cdr, sync_settings, targets_for, wait_for

    from connectors.outbox import Outbox
    from connectors.sync import SyncWorker

    amo[0].add_contact("Иван", "+7 916 123-45-67", responsible=8001)
    box = Outbox(tmp_path / "outbox.jsonl")
    worker = SyncWorker(targets_for(amo=amo), box,
                        settings=sync_settings(crm_recording_wait_s=5.0,
                                                       data_dir=tmp_path))
    worker.start()
    try:
        worker.handle_cdr(make_cdr("R1", version=5))
        time.sleep(0.3)
        assert amo[0].calls == []  # held back for the recording
        worker.handle_cdr(make_cdr("R1", version=6, recording=str(tmp_path / "R1.wav")))
        calls = wait_for(lambda: amo[0].calls, timeout=3, what="the call record")
        assert len(calls) == 1 and "/R1.mp3?expires=" in calls[0]["link"]  # amoCRM plays MP3
        worker.handle_cdr(make_cdr("R2", version=5))  # never recorded: sent after the wait
        wait_for(lambda: len(amo[0].calls) == 2, timeout=8, what="the unrecorded call")
        assert "link" not in amo[0].calls[1]
    finally:
        worker.stop()
        box.close()


def test_cli_connectors_without_a_crm_says_so(tmp_path):
    import subprocess
    import sys

    env = {"TAWAG_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "tawag", "connectors"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "tawag: no CRM is enabled (set TAWAG_CRM_ENABLED, e.g. amocrm,bitrix24, or give a "
        "tenant a [tenant.<name>.crm.<crm>] table)"]
