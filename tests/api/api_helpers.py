"""A warehouse with two tenants' calls, served over HTTP, and the API as a process.

The API runs as ``python -m api`` (uvicorn) against the warehouse's HTTP interface, the
way ``tawag api`` runs beside ``tawag up``. Fixed ports (a block of its own, 31300-31319):
run these tests under ``flock /tmp/tawag-stack.lock``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from core.agent_records import (
    AgentStateChange,
    AgentStats,
    AgentStatus,
    CallbackItem,
    CallbackStatus,
    IntervalKind,
    record_to_json,
)
from core.events import Direction, Event, EventType, to_json
from core.records import Cdr, Disposition, Leg, LegOutcome, cdr_to_json
from core.settings import REPO_ROOT, Settings, load, to_environ
from warehouse import schema
from warehouse.client import ChdbClient
from warehouse.http_server import make_server, serve_in_thread
from warehouse.loader import Loader, Record, routes_for
from warehouse.migrate import migrate
from warehouse.readers import ReaderPool
from warehouse.users import Authenticator, service_password

API_PORT, WAREHOUSE_PORT, LIMITED_API_PORT, RECEIVER_PORT = 31301, 31302, 31303, 31304
NOTHING_PORT = 31305  # nothing listens here
WEBHOOK_API_PORT = 31306
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)


def cdr(tenant: str, call_id: str, minutes: float, **changes: Any) -> Cdr:
    started = T0 + timedelta(minutes=minutes)
    base = Cdr(
        tenant=tenant, call_id=call_id, version=3, direction="inbound",
        caller="+74951234567", callee="101", did="+74957654321", agent="101",
        started_at=started, answered_at=started + timedelta(seconds=5),
        ended_at=started + timedelta(seconds=65), ring_ms=5000, talk_ms=60000,
        disposition=Disposition.ANSWERED, sip_code=200, reason="bye", hangup_by="caller",
        closed=True, recording=None, mos=4.3, packet_loss=0.0, jitter_ms=1.0,
        event_count=4, last_event_ts=started + timedelta(seconds=65),
        legs=(Leg(f"{call_id}#1", "101", started, started + timedelta(seconds=5), True,
                  LegOutcome.ANSWERED),))
    return replace(base, **changes)


ACME_CALLS = [
    cdr("acme", "a1", 0),
    cdr("acme", "a2", 10, disposition=Disposition.NO_ANSWER, agent=None, answered_at=None,
        talk_ms=0, legs=()),
    cdr("acme", "a3", 20, direction="outbound", caller="102", callee="+79161112233",
        did=None, agent="102", route_target="tel:+79161112233", pdd_ms=850),
    cdr("acme", "a4", 30, did="+74950000009", caller="+79990001122",
        recording="2026/11/26/a4.wav", recorded=True, route_target="group:sales",
        route_group="sales"),
    cdr("acme", "a5", 40, disposition=Disposition.BUSY, agent=None, talk_ms=0, legs=()),
    cdr("acme", "shared", 50),  # beta has a call with this id too
]
BETA_CALLS = [cdr("beta", "b1", 5, caller="+70000000001"), cdr("beta", "b2", 15),
              cdr("beta", "shared", 25, caller="+70000000002")]
ACME_IDS = {c.call_id for c in ACME_CALLS}
BETA_CALLERS = {"+70000000001", "+70000000002"}


def events(tenant: str, call_id: str, minutes: float) -> list[Event]:
    """Offered and answered; acme's a2 was decided by its DID's schedule first."""
    started = T0 + timedelta(minutes=minutes)
    common = {"tenant": tenant, "source": "test", "call_id": call_id,
              "direction": Direction.INBOUND, "caller": "+74951234567", "callee": "101"}
    decided = [Event(f"{tenant}-{call_id}-0", EventType.ROUTE_DECIDED, ts=started,
                     leg_id=call_id, extra={"rule": "schedule", "target": "ext:103",
                                            "default_target": "group:sales",
                                            "decision_us": 212}, **common)
               ] if (tenant, call_id) == ("acme", "a2") else []
    return [*decided, Event(f"{tenant}-{call_id}-1", EventType.CALL_OFFERED, ts=started,
                            leg_id=call_id, **common),
            Event(f"{tenant}-{call_id}-2", EventType.CALL_ANSWERED,
                  ts=started + timedelta(seconds=5), leg_id=f"{call_id}#1", agent="101",
                  sip_code=200, **common)]


AGENT_STATES = [AgentStateChange("acme", "101", T0, AgentStatus.AVAILABLE, None, 1),
                AgentStateChange("acme", "102", T0, AgentStatus.ON_CALL, None, 1),
                AgentStateChange("beta", "201", T0, AgentStatus.ON_CALL, None, 1)]


def callback(tenant: str, client: str) -> CallbackItem:
    return CallbackItem(tenant=tenant, client=client, item_id=f"{tenant}-{client}", version=1,
                        status=CallbackStatus.OPEN, opened_at=T0, last_missed_at=T0,
                        attempts=2, callback_attempts=0, closed_at=None,
                        closed_by_call_id=None, called_back_by=None,
                        callback_direction=None, time_to_callback_ms=None)


CALLBACKS = [callback("acme", "+74950000001"), callback("beta", "+70000000001")]

ZONES = {"acme": "Europe/Moscow", "beta": "Asia/Manila"}
"""Tenants' zones (``tawag.tenants``): the agent statistics' intervals are cut in them."""
STATS_DAY = {"acme": datetime(2026, 11, 25, 21, tzinfo=UTC),  # 26 Nov, 00:00 in Moscow
             "beta": datetime(2026, 11, 25, 16, tzinfo=UTC)}  # 26 Nov, 00:00 in Manila


def stats(tenant: str, agent: str, kind: IntervalKind, hours: float,
          **numbers: int) -> AgentStats:
    start = STATS_DAY[tenant] + timedelta(hours=hours)
    values = dict.fromkeys(("logged_in_ms", "available_ms", "ringing_ms", "talk_ms",
                            "wrap_up_ms", "offered", "answered", "missed", "handled",
                            "handled_talk_ms"), 0) | numbers
    return AgentStats(tenant=tenant, agent=agent, interval_kind=kind, interval_start=start,
                      version=1, aht_talk_ms=None, occupancy=None,
                      complete_until=start + timedelta(minutes=10), **values)


Q, H, D = IntervalKind.QUARTER, IntervalKind.HOUR, IntervalKind.DAY
AGENT_STATS = [  # local 09:00-09:30 on 26 November, and its hour and day
    stats("acme", "101", Q, 9, available_ms=660_000, talk_ms=240_000, offered=2,
          answered=1, missed=1, handled=1, handled_talk_ms=240_000),
    stats("acme", "101", Q, 9.25, available_ms=840_000, talk_ms=60_000),
    stats("acme", "102", Q, 9, available_ms=900_000, offered=1, missed=1),
    stats("acme", "101", H, 9, available_ms=1_500_000, talk_ms=300_000, offered=2,
          answered=1, missed=1, handled=1, handled_talk_ms=240_000),
    stats("acme", "101", D, 0, available_ms=1_500_000, talk_ms=300_000, offered=2,
          answered=1, missed=1, handled=1, handled_talk_ms=240_000),
    stats("beta", "201", Q, 9, talk_ms=777_000),
]


def settings_for(data_dir: Path, **overrides: Any) -> Settings:
    return load(environ={}, **{"data_dir": data_dir, "api_port": API_PORT,
                               "warehouse_http_port": WAREHOUSE_PORT,
                               # the webhook worker's Kafka: none here (it retries)
                               "kafka_bootstrap": f"127.0.0.1:{NOTHING_PORT}",
                               # no SIP edge either: POST /calls gets as far as asking it
                               "kamailio_http_port": NOTHING_PORT, **overrides})


def load_store(store: ChdbClient, settings: Settings) -> None:
    loader = Loader(store, routes_for(settings), lambda d: None)
    records = [(settings.topic_cdrs, cdr_to_json(c)) for c in ACME_CALLS + BETA_CALLS]
    records += [(settings.topic_call_events, to_json(e))
                for c in ACME_CALLS + BETA_CALLS
                for e in events(c.tenant, c.call_id, (c.started_at - T0).total_seconds() / 60)]
    records += [(settings.topic_agent_states, record_to_json(s)) for s in AGENT_STATES]
    records += [(settings.topic_callbacks, record_to_json(c)) for c in CALLBACKS]
    records += [(settings.topic_agent_stats, record_to_json(s)) for s in AGENT_STATS]
    store.insert_rows(schema.TENANTS, [{"tenant": t, "time_zone": z, "trunk": None}
                                       for t, z in ZONES.items()])
    for offset, (topic, raw) in enumerate(records):
        loader.load([Record(topic, 0, offset, raw)])


@contextmanager
def warehouse_served(settings: Settings) -> Iterator[None]:
    """The chdb store of ``settings`` loaded with both tenants, served on its HTTP port."""
    store = ChdbClient(settings.chdb_path)
    migrate(store)
    load_store(store, settings)
    reader = ReaderPool(settings.chdb_path, size=2, database=schema.DATABASE)
    server = make_server("127.0.0.1", settings.warehouse_http_port, reader,
                         Authenticator(settings.dashboard_users_file,
                                       service_password(settings.data_dir)))
    thread = serve_in_thread(server)
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
        reader.close()
        store.close()


@contextmanager
def api_process(settings: Settings) -> Iterator[str]:
    """``python -m api`` on ``settings.api_port``; yields its base URL once it answers."""
    env = {**os.environ, **to_environ(settings),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT),
                                                       os.environ.get("PYTHONPATH")]))}
    log = open(settings.data_dir / f"api-{settings.api_port}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "api"], env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{settings.api_port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (settings.data_dir / f"api-{settings.api_port}.log"
                                         ).read_text()
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the API did not start in 30 s"
            time.sleep(0.1)  # polling interval
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


class Receiver:
    """A webhook receiver on ``port`` that can be taken down and brought back: it keeps
    every request (method, path, headers, body) and answers ``zd_echo`` checks."""

    def __init__(self, port: int) -> None:
        self.port, self.requests, self._server = port, [], None
        self._lock = threading.Lock()
        self.answer = b"ok"
        """What a POST is answered with (a steering answer: JSON)."""
        self.hold: threading.Event | None = None
        """If set: a POST is answered only once this is set (a slow receiver)."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def up(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                echo = parse_qs(urlsplit(self.path).query).get("zd_echo", [""])[0]
                self._reply(echo.encode())

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    receiver.requests.append((dict(self.headers), body))
                if receiver.hold is not None:
                    receiver.hold.wait(30)
                self._reply(receiver.answer)

            def _reply(self, body: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def received(self) -> list[tuple[dict[str, str], bytes]]:
        with self._lock:
            return list(self.requests)


@contextmanager
def served_in_thread(app: Any, port: int) -> Iterator[str]:
    """``app`` on uvicorn in this process (a thread), on ``port``; yields its base URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    wait_until("uvicorn started", lambda: server.started, 20)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(10)


def wait_until(what: str, condition: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)  # polling interval
    return value
