"""Shared builders for the connector tests: CDRs, schema-v1 events, clients wired to fakes."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from builders import call_events
from fakes.amocrm import FakeAmoCrm
from fakes.bitrix24 import FakeBitrix24
from fakes.onec import PREFIX, FakeOneC
from fakes.server import FakeServer

from connectors.amocrm import AmoCrmClient, AmoOAuth
from connectors.bitrix24 import Bitrix24Client, Bitrix24OAuth
from connectors.onec import OneCBasicAuth, OneCClient
from connectors.sync import Backoff
from connectors.targets import Target
from connectors.tokens import MemoryTokenStore, Token
from core.events import Direction, Event, EventType
from core.records import Cdr, Disposition
from core.settings import Settings

T0 = datetime(2026, 11, 26, 7, 0, 0, tzinfo=UTC)


def wait_for(condition: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    """Poll a condition until it holds or the deadline passes (no blind sleeps)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.005)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")


def make_cdr(call_id: str, *, direction: str = "inbound", caller: str = "+79161234567",
             callee: str = "101", agent: str | None = "101",
             disposition: Disposition = Disposition.ANSWERED, talk_ms: int = 42_000,
             recording: str | None = None, closed: bool = True, sip_code: int | None = 200,
             start: datetime = T0, version: int = 5) -> Cdr:
    answered = disposition is Disposition.ANSWERED
    return Cdr(tenant="acme", call_id=call_id, version=version, direction=direction,
               caller=caller, callee=callee, did=None, agent=agent if answered else None,
               started_at=start, answered_at=start + timedelta(seconds=5) if answered else None,
               ended_at=start + timedelta(seconds=5, milliseconds=talk_ms) if closed else None,
               ring_ms=5000, talk_ms=talk_ms if answered else 0, disposition=disposition,
               sip_code=sip_code, reason=None, hangup_by="caller", closed=closed,
               recording=recording, mos=None, packet_loss=None, jitter_ms=None,
               event_count=version, last_event_ts=start + timedelta(seconds=60))


def make_event(kind: EventType, call_id: str, *, ms: int = 0, caller: str = "+79161234567",
               callee: str = "101", agent: str | None = None,
               direction: Direction = Direction.INBOUND, leg_id: str | None = None,
               **extra: Any) -> Event:
    return call_events(call_id, t0=T0, caller=caller, callee=callee,
                       direction=direction, leg_id=leg_id or call_id)(
        kind, ms, event_id=f"{call_id}/{kind.value}/{ms}/{agent}", agent=agent, **extra)


def amo_client(fake: FakeAmoCrm, server: FakeServer, **kw: Any) -> tuple[AmoCrmClient, AmoOAuth]:
    store = MemoryTokenStore(Token(*fake.issue_tokens()))
    auth = AmoOAuth(token_url=server.url + "/oauth2/access_token", client_id=fake.client_id,
                    client_secret=fake.client_secret, redirect_uri="https://tawag.test/cb",
                    store=store)
    http = httpx.Client(base_url=server.url, auth=auth, timeout=5)
    return AmoCrmClient(http, source="tawag", **kw), auth


def recording_bytes(cdr: Cdr) -> tuple[str, bytes] | None:
    """Stands in for the WAV/MP3 on disk: an ID3 header and the call id."""
    if not cdr.recording:
        return None
    return cdr.recording.rsplit("/", 1)[-1], b"ID3\x03" + cdr.call_id.encode()


def b24_client(fake: FakeBitrix24, server: FakeServer,
               **kw: Any) -> tuple[Bitrix24Client, Bitrix24OAuth]:
    kw.setdefault("read_recording", recording_bytes)
    store = MemoryTokenStore(Token(*fake.issue_tokens()))
    auth = Bitrix24OAuth(oauth_url=server.url + "/oauth/token/", client_id=fake.client_id,
                         client_secret=fake.client_secret, store=store)
    http = httpx.Client(base_url=server.url + "/rest/", auth=auth, timeout=5)
    return Bitrix24Client(http, **kw), auth


def onec_client(fake: FakeOneC, server: FakeServer) -> OneCClient:
    http = httpx.Client(base_url=server.url + PREFIX, timeout=5,
                        auth=OneCBasicAuth(fake.user, fake.password))
    return OneCClient(http)


# --- sync wiring -------------------------------------------------------------------------
AMO_USERS = {"101": "8001", "102": "8002"}
B24_USERS = {"101": "1269", "102": "1270"}
ONEC_USERS = {"101": "0b5e0d1a-7c3e-11e6-8343-40167e253101",
              "102": "0b5e0d1a-7c3e-11e6-8343-40167e253102"}
"""Extension -> Catalog_Пользователи Ref_Key: 1C references are GUIDs."""
MANAGER_1 = "5a7b0000-0000-4000-8000-000000000001"
MANAGER_2 = "5a7b0000-0000-4000-8000-000000000002"
FAST = Backoff(initial_s=0.02, max_s=0.2, auth_s=0.2, max_retry_after_s=0.2)
RECORDING_SECRET = "r" * 32


def sync_settings(**kw: Any) -> Settings:
    """Settings of a worker under test: links on, no wait for recordings."""
    values: dict[str, Any] = {"recordings_base_url": "https://pbx.test/rec",
                              "recordings_link_secret": RECORDING_SECRET,
                              "crm_screen_pop_deadline_s": 2.0, "crm_recording_wait_s": 0.0}
    return Settings(**(values | kw))


def targets_for(amo: Any = None, b24: Any = None, onec: Any = None) -> list[Target]:
    """Targets wired to the given (fake, server) pairs."""
    targets = []
    if amo is not None:
        targets.append(Target(amo_client(*amo)[0], AMO_USERS, "8000"))
    if b24 is not None:
        targets.append(Target(b24_client(*b24)[0], B24_USERS, "1"))
    if onec is not None:
        targets.append(Target(onec_client(*onec), ONEC_USERS, None))
    return targets


def inbound_call(call_id: str, phone: str, *, ring: tuple[str, ...] = ("101",),
                 answer: str | None = "101", recording: str | None = None,
                 start: datetime | None = None) -> tuple[list[Event], list[Cdr]]:
    """Schema-v1 events of one inbound call and its CDR revisions (last one closed).

    ``start`` defaults to now: the worker skips screen-pops for stale events.
    """
    start = start or datetime.now(UTC)
    ms = int((start - T0).total_seconds() * 1000)
    events = [make_event(EventType.CALL_OFFERED, call_id, ms=ms, caller=phone, callee="200")]
    events += [make_event(EventType.CALL_RINGING, call_id, ms=ms + 100 + i, caller=phone,
                          callee=agent, agent=agent, sip_code=180)
               for i, agent in enumerate(ring)]
    if answer:
        events.append(make_event(EventType.CALL_ANSWERED, call_id, ms=ms + 5000, caller=phone,
                                 callee=answer, agent=answer, sip_code=200))
        events.append(make_event(EventType.CALL_ENDED, call_id, ms=ms + 47000, caller=phone,
                                 callee=answer, agent=answer, duration_ms=42000,
                                 hangup_by="caller"))
        disposition = Disposition.ANSWERED
    else:
        events.append(make_event(EventType.CALL_FAILED, call_id, ms=ms + 20000, caller=phone,
                                 callee="200", sip_code=408, reason="Request Timeout"))
        disposition = Disposition.NO_ANSWER
    common = {"caller": phone, "callee": answer or "200", "agent": answer, "start": start,
              "disposition": disposition, "sip_code": 200 if answer else 408}
    cdrs = [make_cdr(call_id, closed=False, version=2, **{**common, "disposition":
                                                          Disposition.IN_PROGRESS}),
            make_cdr(call_id, version=len(events), recording=recording, **common)]
    return events, cdrs
