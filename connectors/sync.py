"""The CRM sync worker: call events -> screen-pops, closed CDRs -> durable CRM deliveries.

Shaped like wazo-call-logd's manager: the Kafka loop (:func:`run`) only decodes and
hands over; :class:`SyncWorker` decides; the pure functions below say what to do;
clients do the vendor I/O. Two paths per CRM:

- **screen-pop** (``call.offered``/``call.ringing``/``call.answered``/end events of
  inbound calls): a per-CRM thread sends it at once; retried on 429/503 only until
  ``screen_pop_deadline_s`` -- a card shown after the caller hung up is noise, so
  these are never queued durably.
- **delivery** (closed CDRs): enqueued in the :class:`~connectors.outbox.Outbox`, then a
  per-CRM thread delivers head-first: find the contact, create a lead for an unknown
  inbound number, log the call with its recording link, open a task for a missed
  inbound call; an answered call with a number that has an open missed-call task
  closes it. 429/503/timeouts back off and retry the same head (order is kept);
  a permanent rejection is journalled with the CRM's error body and skipped.
- **click-to-call** (:mod:`connectors.click_to_call`): an outbound call that realises a
  CRM-started call is logged on that CRM call (``links``); one nobody placed in time is
  finished there as not connected.

    worker = SyncWorker(targets, Outbox(path), config=cfg)
    worker.start()
    worker.handle_event(event)     # from tawag.call-events
    worker.handle_cdr(cdr)         # from tawag.cdrs; durable when it returns
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from connectors.base import (
    LINKED_CALL_ID,
    AuthExpired,
    ConnectorError,
    Contact,
    CrmClient,
    RateLimited,
    Rejected,
    RingingCall,
    TaskRef,
    Unavailable,
)
from connectors.click_to_call import ClickToCallLinks
from connectors.config import ConnectorConfig
from connectors.mapping import callback_note, client_phone, is_missed
from connectors.outbox import Entry, Outbox
from connectors.recording_links import sign_url
from ingest.events import Direction, Event, EventType
from ingest.phone import is_extension
from streams.records import Cdr, Disposition, cdr_from_json, cdr_to_json

__all__ = ["Backoff", "CallView", "SyncWorker", "Target", "apply_event", "client_phone",
           "contact_record", "extension_for", "is_missed", "recording_name", "run",
           "deliveries_for"]

log = logging.getLogger("tawag.connectors")

LOG, CLOSE_TASK, UNPLACED = "log", "close_task", "click_to_call_unplaced"


@dataclass(frozen=True)
class Target:
    """One CRM to sync with: its client and who our extensions are there."""

    client: CrmClient
    users: Mapping[str, str] = field(default_factory=dict)
    default_user: str | None = None

    @property
    def name(self) -> str:
        return self.client.name

    def user_for(self, extension: str | None) -> str | None:
        return self.users.get(extension) if extension else None


@dataclass(frozen=True)
class Backoff:
    """Exponential retry delay for 503s/timeouts; a CRM's own Retry-After wins for 429."""

    initial_s: float = 0.5
    max_s: float = 30.0
    auth_s: float = 60.0
    """AuthExpired needs an operator; poll slowly until the token store is fixed."""

    def delay(self, attempt: int, exc: ConnectorError) -> float:
        if isinstance(exc, RateLimited) and exc.retry_after is not None:
            return min(exc.retry_after, self.max_s)
        if isinstance(exc, AuthExpired):
            return self.auth_s
        return min(self.initial_s * 2 ** attempt, self.max_s)


# --- pure decisions ------------------------------------------------------------------
@dataclass
class CallView:
    """What the screen-pop path knows about one live inbound call."""

    call_id: str
    phone: str
    started_at: float
    ringing: tuple[str, ...] = ()
    shown: tuple[str, ...] = ()


def _ringing_agent(ev: Event) -> str | None:
    """The extension this leg rings: ``agent``, else the edge's ``extra.leg_to`` (the
    callee of a DID or group call is the DID or group), else the callee."""
    agent = ev.agent or (ev.extra or {}).get("leg_to") or ev.callee
    return agent if agent and is_extension(agent) else None


def apply_event(view: CallView | None, ev: Event,
                country: str) -> tuple[CallView | None, RingingCall | None]:
    """Fold one event into the call's view; return the screen-pop change it calls for."""
    if ev.direction is not Direction.INBOUND and view is None:
        return None, None
    if view is None:
        phone = client_phone("inbound", ev.caller, ev.callee, country)
        if phone is None:
            return None, None
        view = CallView(ev.call_id or "", phone, ev.ts.timestamp())
    if ev.type in (EventType.CALL_OFFERED, EventType.CALL_RINGING):
        agent = _ringing_agent(ev)
        if agent is None or agent in view.shown:
            return view, None
        view.ringing += (agent,)
        view.shown += (agent,)
        return view, RingingCall(view.call_id, view.phone, "inbound", view.started_at,
                                 users=(agent,))
    if ev.type is EventType.CALL_ANSWERED:
        others = tuple(a for a in view.shown if a != ev.agent)
        view.shown = tuple(a for a in view.shown if a == ev.agent)
        if not others:
            return view, None
        return view, RingingCall(view.call_id, view.phone, "inbound", view.started_at,
                                 hide_users=others)
    if ev.type in (EventType.CALL_ENDED, EventType.CALL_FAILED, EventType.CALL_CANCELLED):
        if not view.shown:
            return None, None
        return None, RingingCall(view.call_id, view.phone, "inbound", view.started_at,
                                 hide_users=view.shown)
    return view, None


def deliveries_for(cdr: Cdr, country: str) -> list[tuple[str, dict[str, Any]]]:
    """(kind, data) to enqueue for a CDR: calls with an outside party, once closed."""
    if not cdr.closed or cdr.direction not in ("inbound", "outbound"):
        return []
    phone = client_phone(cdr.direction, cdr.caller, cdr.callee, country)
    if phone is None:
        return []
    return [(LOG, {"cdr": cdr_to_json(cdr).decode(), "phone": phone})]


def _missed_mark(crm: str, phone: str) -> str:
    return f"missed|{crm}|{phone}"


def _task_mark(crm: str, phone: str) -> str:
    return f"task|{crm}|{phone}"


# --- the worker ----------------------------------------------------------------------
class SyncWorker:
    """Owns one thread per CRM for deliveries and one per CRM for screen-pops."""

    def __init__(self, targets: list[Target], outbox: Outbox, *, config: ConnectorConfig,
                 backoff: Backoff = Backoff(), clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time,
                 on_screen_pop: Callable[[str, RingingCall], None] | None = None,
                 on_contact: Callable[[str, str, Contact | None, str | None], None]
                 | None = None) -> None:
        self.targets = {t.name: t for t in targets}
        self.outbox = outbox
        self.config = config
        self.backoff = backoff
        self.clock = clock
        self.wall = wall
        self.on_screen_pop = on_screen_pop
        self.on_contact = on_contact
        """``(crm, phone, contact, extension)`` after each fresh lookup (tawag.crm-contacts)."""
        self.links = ClickToCallLinks(outbox)
        """CRM-started calls (click-to-call) and the Tawag calls that realise them."""
        self.pops_queued = 0
        self.pops_handled = 0
        self._views: dict[str, CallView] = {}
        self._closed_at: dict[str, float] = {}
        """When an answered call without a recording closed (it may still get one)."""
        self._pops: dict[str, queue.Queue[tuple[float, RingingCall] | None]] = {
            name: queue.Queue() for name in self.targets}
        self._wake: dict[str, threading.Event] = {n: threading.Event() for n in self.targets}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    # --- input -----------------------------------------------------------------------
    def handle_event(self, ev: Event) -> None:
        """Screen-pop path: decide under a lock, hand the change to each CRM's thread."""
        if (ev.type is EventType.CALL_OFFERED and ev.direction is Direction.OUTBOUND
                and ev.call_id):
            self.links.claim(ev.call_id, ev.caller, ev.callee, ev.ts.timestamp())
        if ev.type not in (EventType.CALL_OFFERED, EventType.CALL_RINGING,
                           EventType.CALL_ANSWERED, EventType.CALL_ENDED,
                           EventType.CALL_FAILED, EventType.CALL_CANCELLED) or not ev.call_id:
            return
        with self._lock:
            view, change = apply_event(self._views.get(ev.call_id), ev,
                                       self.config.default_country)
            if view is None:
                self._views.pop(ev.call_id, None)
            else:
                self._views[ev.call_id] = view
        if change is None:
            return
        if self.wall() - ev.ts.timestamp() > self.config.screen_pop_deadline_s:
            # A replayed or late event: the caller is gone, and on Bitrix24 a register
            # after finish would be a second call.
            log.info("screen-pop for call %s skipped: event %.1f s old", ev.call_id,
                     self.wall() - ev.ts.timestamp())
            return
        now = self.clock()
        for name, target in self.targets.items():
            if target.client.capabilities.screen_pop:
                with self._lock:
                    self.pops_queued += 1
                self._pops[name].put((now, change))

    def handle_cdr(self, cdr: Cdr) -> int:
        """Delivery path: enqueue durably (idempotent per call); returns entries added."""
        added = 0
        if cdr.direction == "outbound":  # in case its call.offered was not seen
            self.links.claim(cdr.call_id, cdr.caller, cdr.callee, cdr.started_at.timestamp())
        for kind, data in deliveries_for(cdr, self.config.default_country):
            if cdr.recording is None and cdr.disposition is Disposition.ANSWERED:
                with self._lock:
                    self._closed_at.setdefault(cdr.call_id, self.clock())
            for name, target in self.targets.items():
                if not self.outbox.enqueue(name, kind, cdr.call_id, data):
                    if cdr.recording and self.outbox.revise(name, kind, cdr.call_id, data):
                        self._wake[name].set()
                    continue
                added += 1
                added += self._enqueue_task_follow_up(target, cdr, data["phone"])
                self._wake[name].set()
        return added

    def expire_click_to_calls(self, now: float) -> int:
        """Click-to-calls no call followed in time: finish them in their CRM (durably)."""
        added = 0
        for link in self.links.expired(now):
            log.warning("click-to-call %s %s: no call from %s to %s followed", link.crm,
                        link.crm_call_id, link.extension, link.phone)
            added += self.click_not_placed(link.crm, link.crm_call_id, link.crm_user)
        return added

    def click_not_placed(self, crm: str, crm_call_id: str, user: str) -> bool:
        """Finish a CRM-started call that will not happen (refused, or nobody answered) in
        that CRM, durably and once: the CRM shows it in progress until then."""
        if crm not in self.targets or not self.outbox.enqueue(crm, UNPLACED, crm_call_id,
                                                               {"user": user}):
            return False
        self._wake[crm].set()
        return True

    def _enqueue_task_follow_up(self, target: Target, cdr: Cdr, phone: str) -> int:
        """Remember a missed inbound number; a later answered call with it closes the task."""
        if not target.client.capabilities.tasks:
            return 0
        mark = _missed_mark(target.name, phone)
        if is_missed(cdr):
            self.outbox.set_mark(mark, cdr.call_id)
            return 0
        if cdr.disposition is Disposition.ANSWERED and self.outbox.mark(mark):
            missed_call = self.outbox.mark(mark)
            self.outbox.set_mark(mark, None)
            return int(self.outbox.enqueue(target.name, CLOSE_TASK, cdr.call_id,
                                           {"phone": phone, "missed_call_id": missed_call}))
        return 0

    # --- threads ---------------------------------------------------------------------
    def start(self) -> None:
        for name in self.targets:
            for loop, role in ((self._deliver_loop, "deliver"), (self._pop_loop, "pop")):
                thread = threading.Thread(target=loop, args=(name,), daemon=True,
                                          name=f"tawag-{role}-{name}")
                thread.start()
                self._threads.append(thread)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        for name in self.targets:
            self._wake[name].set()
            self._pops[name].put(None)
        for thread in self._threads:
            thread.join(timeout)

    def idle(self) -> bool:
        """No pending delivery and no screen-pop queued or in flight (tests, shutdown)."""
        with self._lock:
            pops_done = self.pops_handled == self.pops_queued
        return pops_done and not self.outbox.pending()

    # --- screen-pop ------------------------------------------------------------------
    def _pop_loop(self, name: str) -> None:
        target = self.targets[name]
        while not self._stop.is_set():
            item = self._pops[name].get()
            if item is None:
                return
            try:
                self._pop(target, *item)
            except Exception:  # a bug or odd vendor JSON must not stop later screen-pops
                log.exception("screen-pop crashed: %s call %s", name, item[1].call_id)
            finally:
                with self._lock:
                    self.pops_handled += 1

    def _pop(self, target: Target, queued_at: float, change: RingingCall) -> None:
        users = tuple(u for u in (target.user_for(a) for a in change.users) if u)
        hide = tuple(u for u in (target.user_for(a) for a in change.hide_users) if u)
        if not users and not hide:
            return
        call = RingingCall(change.call_id, change.phone, change.direction, change.started_at,
                           users=users, hide_users=hide)
        attempt = 0
        while not self._stop.is_set():
            try:
                target.client.screen_pop(call)
                if self.on_screen_pop is not None:
                    self.on_screen_pop(target.name, call)
                return
            except (RateLimited, Unavailable) as exc:
                delay = self.backoff.delay(attempt, exc)
                if self.clock() + delay - queued_at > self.config.screen_pop_deadline_s:
                    log.warning("screen-pop dropped: %s call %s: %s", target.name,
                                call.call_id, exc)
                    return
                attempt += 1
                self._stop.wait(delay)
            except ConnectorError as exc:
                log.warning("screen-pop failed: %s call %s: %s", target.name, call.call_id, exc)
                return

    # --- deliveries ------------------------------------------------------------------
    def _deliver_loop(self, name: str) -> None:
        target = self.targets[name]
        attempt = 0
        while not self._stop.is_set():
            entry = self.outbox.head(name)
            if entry is None:
                self._wake[name].wait(0.5)
                self._wake[name].clear()
                continue
            wait = self._recording_wait(entry)
            if wait > 0:
                self._wake[name].wait(min(wait, 0.5))
                self._wake[name].clear()
                continue
            try:
                self.deliver(target, entry)
                attempt = 0
            except (RateLimited, Unavailable, AuthExpired) as exc:
                delay = self.backoff.delay(attempt, exc)
                log.warning("%s delivery of call %s deferred %.1fs: %s", name, entry.call_id,
                            delay, exc)
                attempt += 1
                self._stop.wait(delay)
            except Exception:  # a bug or odd vendor JSON: keep the entry, retry slowly
                log.exception("%s delivery of call %s crashed", name, entry.call_id)
                attempt += 1
                self._stop.wait(self.backoff.max_s)

    def _recording_wait(self, entry: Entry) -> float:
        """Seconds a call record should still wait for its recording (0: send it now).

        Only for calls this process saw close: after a restart nothing waits."""
        if entry.kind != LOG or entry.progress or entry.call_id not in self._closed_at:
            return 0.0
        if cdr_from_json(entry.data["cdr"]).recording is not None:
            with self._lock:
                self._closed_at.pop(entry.call_id, None)
            return 0.0
        with self._lock:
            closed = self._closed_at.get(entry.call_id)
        if closed is None:
            return 0.0
        left = closed + self.config.recording_wait_s - self.clock()
        if left <= 0:
            with self._lock:
                self._closed_at.pop(entry.call_id, None)
        return max(0.0, left)

    def deliver(self, target: Target, entry: Entry) -> None:
        """One delivery; Rejected is journalled and skipped, retryable errors propagate."""
        try:
            if entry.kind == LOG:
                self._deliver_log(target, entry)
            elif entry.kind == CLOSE_TASK:
                self._deliver_close(target, entry)
            elif entry.kind == UNPLACED:
                target.client.finish_unplaced(entry.call_id, user=entry.data["user"],
                                              progress=self.outbox.progress(entry))
        except Rejected as exc:
            log.error("%s rejected call %s (%s): %s", target.name, entry.call_id, entry.kind, exc)
            self.outbox.mark_rejected(entry, str(exc), exc.body)
            return
        self.outbox.mark_done(entry)
        log.info("%s: %s of call %s delivered", target.name, entry.kind, entry.call_id)

    def _deliver_log(self, target: Target, entry: Entry) -> None:
        client, progress = target.client, self.outbox.progress(entry)
        cdr, phone = cdr_from_json(entry.data["cdr"]), entry.data["phone"]
        link = self._recording_link(cdr)
        contact = _contact(progress.get("contact"))
        if progress.get("contact") is None:
            contact = client.find_contact(phone)
            progress.set("contact", asdict(contact) if contact else {})
            self._publish_contact(target, phone, contact)
        if contact is None and cdr.direction == "inbound" and client.capabilities.unknown_lead:
            if not progress.get("lead"):
                lead = client.create_lead_for_unknown(
                    cdr, phone=phone, user=target.user_for(cdr.agent), recording_url=link)
                progress.set("lead", asdict(lead) if lead else {})
            contact = _contact(progress.get("lead"))
        responsible = (contact.responsible_user_id if contact else None) or target.default_user
        user = target.user_for(cdr.agent) if cdr.agent else responsible
        started = self.links.linked(cdr.call_id)
        if started is not None and started.crm == target.name:
            # a click-to-call: logged on the CRM's call, in the name of who clicked
            if progress.get(LINKED_CALL_ID) is None:
                progress.set(LINKED_CALL_ID, started.crm_call_id)
            user = started.crm_user or user
        client.log_call(cdr, phone=phone, user=user, contact=contact, recording_url=link,
                        progress=progress)
        if is_missed(cdr) and client.capabilities.tasks:
            task = client.create_missed_call_task(cdr, phone=phone, contact=contact,
                                                  responsible=responsible, progress=progress)
            if task is not None:
                self.outbox.set_mark(_task_mark(target.name, phone), task.id)

    def _deliver_close(self, target: Target, entry: Entry) -> None:
        phone = entry.data["phone"]
        task_id = self.outbox.mark(_task_mark(target.name, phone))
        if task_id is None:
            return  # the missed call's task was never created (rejected or no owner)
        target.client.close_task(TaskRef(crm=target.name, id=task_id, phone=phone),
                                 note=callback_note(entry.call_id))
        self.outbox.set_mark(_task_mark(target.name, phone), None)

    def _publish_contact(self, target: Target, phone: str, contact: Contact | None) -> None:
        if self.on_contact is None:
            return
        owner = contact.responsible_user_id if contact else None
        try:
            self.on_contact(target.name, phone, contact, extension_for(target, owner))
        except Exception:  # routing hints are best effort; the delivery goes on
            log.exception("could not publish the %s contact of a number", target.name)

    def _recording_link(self, cdr: Cdr) -> str | None:
        cfg = self.config
        if not (cdr.recording and cfg.recording_base_url and cfg.recording_secret):
            return None
        expires = int(time.time()) + cfg.recording_ttl_s
        return sign_url(cfg.recording_base_url, recording_name(cdr.recording,
                                                               cfg.recordings_wav_dir),
                        secret=cfg.recording_secret.encode(), expires_at=expires)


def recording_name(recording: str, wav_dir: Path) -> str:
    """What a link names: the file relative to the recordings folder, never a host path."""
    path = Path(recording)
    if not path.is_absolute():
        return recording
    try:
        return path.relative_to(wav_dir).as_posix()
    except ValueError:
        return path.name


def extension_for(target: Target, user: str | None) -> str | None:
    """Our extension of a CRM user (the inverse of ``Target.users``)."""
    if user is None:
        return None
    return next((ext for ext, uid in target.users.items() if str(uid) == str(user)), None)


def contact_record(tenant: str, crm: str, phone: str, contact: Contact | None,
                   extension: str | None, ts: float) -> tuple[bytes, bytes]:
    """Key and JSON value of one ``tawag.crm-contacts`` record (key ``tenant:phone:crm``)."""
    import json

    value = {"tenant": tenant, "crm": crm, "phone": phone,
             "contact_id": contact.id if contact else None,
             "name": contact.name if contact else None,
             "entity_type": contact.entity_type if contact else None,
             "responsible_user_id": contact.responsible_user_id if contact else None,
             "extension": extension, "ts": round(ts, 3)}
    return (f"{tenant}:{phone}:{crm}".encode(),
            json.dumps(value, ensure_ascii=False, sort_keys=True).encode())


def _contact(raw: dict[str, Any] | None) -> Contact | None:
    if not raw:
        return None
    return Contact(**{**raw, "lead_ids": tuple(raw.get("lead_ids") or ())})


# --- the Kafka edge ------------------------------------------------------------------
def build_targets(cfg: ConnectorConfig) -> list[Target]:
    """Clients for the enabled CRMs, tokens in ``state_dir``."""
    from connectors.amocrm.client import build_client as amo
    from connectors.bitrix24.client import build_client as b24
    from connectors.onec.client import build_client as onec
    from connectors.tokens import FileTokenStore

    targets = []
    if "amocrm" in cfg.enabled:
        store = FileTokenStore(cfg.state_dir / "amocrm-token.json")
        targets.append(Target(amo(cfg, store), cfg.amocrm_users, cfg.amocrm_default_user or None))
    if "bitrix24" in cfg.enabled:
        store = (FileTokenStore(cfg.state_dir / "bitrix24-token.json")
                 if cfg.bitrix24_client_id else None)
        targets.append(Target(b24(cfg, store), cfg.bitrix24_users,
                              cfg.bitrix24_default_user or None))
    if "onec" in cfg.enabled:
        targets.append(Target(onec(cfg), cfg.onec_users, None))
    return targets


def run(settings: Any, *, stop: threading.Event | None = None,
        ready: threading.Event | None = None, serve_http: bool = True,
        originate: Callable[..., None] | None = None, edge: Any = None,
        **overrides: Any) -> None:
    """Consume tawag.call-events and tawag.cdrs until ``stop`` is set (``tawag connectors``).

    Offsets are committed only after the batch's CDRs are in the outbox (fsynced), so a
    crash re-reads them and the outbox's keys drop the repeats. With ``serve_http`` the
    worker also serves signed recording links and Bitrix24 events (:mod:`connectors.web`);
    its ``/health`` (and ``ready``) turn on once the consumer holds its partitions. Each
    contact lookup is published to the compacted ``tawag.crm-contacts`` for routing.
    With Bitrix24 enabled and the edge's control API given (``edge``, :mod:`tawag.edge`),
    its click-to-call events are placed through the edge
    (:class:`connectors.click_to_call.EdgeOriginator`) unless ``originate`` is given.
    """
    from kafka import KafkaConsumer, KafkaProducer

    from connectors import redact
    from connectors.config import from_settings, with_link_defaults
    from connectors.web import ConnectorsHttp
    from ingest.events import InvalidEvent, from_json

    redact.install()
    cfg = with_link_defaults(from_settings(settings, **overrides))
    outbox = Outbox(cfg.state_dir / "outbox.jsonl")
    outbox.compact()
    worker = SyncWorker(build_targets(cfg), outbox, config=cfg, on_contact=None)
    if originate is None and edge is not None and "bitrix24" in cfg.enabled:
        from connectors.click_to_call import EdgeOriginator

        originate = EdgeOriginator(settings, worker.links, edge)
    http = None
    if serve_http:
        http = ConnectorsHttp(host=cfg.http_host, port=cfg.http_port,
                              wav_dir=cfg.recordings_wav_dir,
                              secret=cfg.recording_secret.encode(),
                              bitrix24_token=cfg.bitrix24_application_token,
                              bitrix24_users=dict(cfg.bitrix24_users),
                              originate=originate,
                              not_placed=lambda click: worker.click_not_placed(
                                  click.crm, click.crm_call_id, click.crm_user)).start()
    producer = KafkaProducer(bootstrap_servers=cfg.kafka_bootstrap, acks=1, linger_ms=5)

    def publish(crm: str, phone: str, contact: Contact | None, extension: str | None) -> None:
        key, value = contact_record(cfg.tenant, crm, phone, contact, extension, time.time())
        producer.send(cfg.topic_contacts, key=key, value=value)

    worker.on_contact = publish
    worker.start()
    consumer = KafkaConsumer(cfg.topic_call_events, cfg.topic_cdrs,
                             bootstrap_servers=cfg.kafka_bootstrap, group_id="tawag-connectors",
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             fetch_max_wait_ms=20)
    stop = stop or threading.Event()
    assigned: set[Any] = set()
    next_expiry = 0.0
    log.info("connectors up: %s", ", ".join(cfg.enabled) or "no CRM enabled")
    try:
        while not stop.is_set():
            batch = consumer.poll(timeout_ms=100)
            if consumer.assignment() != assigned:
                assigned = set(consumer.assignment())
                log.info("consuming %d partitions of %s, %s", len(assigned),
                         cfg.topic_call_events, cfg.topic_cdrs)
            if assigned:
                if http is not None:
                    http.ready.set()
                if ready is not None:
                    ready.set()
            for records in batch.values():
                for record in records:
                    try:
                        if record.topic == cfg.topic_cdrs:
                            worker.handle_cdr(cdr_from_json(record.value))
                        else:
                            worker.handle_event(from_json(record.value))
                    except (InvalidEvent, ValueError, KeyError, TypeError) as exc:
                        # Malformed input was already dead-lettered upstream; skip it here.
                        log.error("skipped %s offset %s: %s", record.topic, record.offset, exc)
            if batch:
                consumer.commit()
            if time.time() >= next_expiry:
                worker.expire_click_to_calls(time.time())
                next_expiry = time.time() + 1.0
    finally:
        worker.stop()
        consumer.close()
        producer.flush(5)
        producer.close(5)
        outbox.close()
        if http is not None:
            http.stop()
