"""The CRM sync worker: call events -> screen-pops, closed CDRs -> durable CRM deliveries.

Shaped like wazo-call-logd's manager: this module owns the threads, the queues and the
retries; what to show is decided in :mod:`connectors.screen_pop`, what each outbox
entry does in :mod:`connectors.delivery`; clients do the vendor I/O (and throttle it).
Objects are built from Settings in :mod:`connectors.wiring`; the Kafka loop that feeds
the worker is :mod:`connectors.consume`. Two paths per CRM:

- **screen-pop** (``call.offered``/``call.ringing``/``call.answered``/end events of
  inbound calls): a per-CRM thread sends it at once; retried on 429/503 only until
  ``crm_screen_pop_deadline_s`` -- a card shown after the caller hung up is noise, so
  these are never queued durably.
- **delivery** (closed CDRs): enqueued in the :class:`~connectors.outbox.Outbox`, then a
  per-CRM thread delivers head-first (:func:`connectors.delivery.deliver`).
  429/503/timeouts back off and retry the same head (order is kept); a permanent
  rejection is journalled with the CRM's error body and skipped.
- **click-to-call** (:mod:`connectors.click_to_call`): an outbound call that realises a
  CRM-started call is logged on that CRM call (``links``); one nobody placed in time is
  finished there as not connected.

    worker = SyncWorker(targets, Outbox(path), settings=settings)
    worker.start()
    worker.handle_event(event)     # from tawag.call-events
    worker.handle_cdr(cdr)         # from tawag.cdrs; durable when it returns
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from connectors import metrics
from connectors.base import (
    AuthExpired,
    ConnectorError,
    Contact,
    Misconfigured,
    RateLimited,
    RingingCall,
    Unavailable,
)
from connectors.click_to_call import ClickToCallLinks
from connectors.delivery import (
    LOG,
    UNPLACED,
    DeliverySteps,
    deliver,
    deliveries_for,
    enqueue_follow_up,
)
from connectors.outbox import Entry, Outbox
from connectors.recording_links import recording_url
from connectors.screen_pop import SCREEN_POP_EVENTS, CallView, apply_event, for_target
from connectors.targets import Target
from core.events import Direction, Event, EventType
from core.records import Cdr, Disposition, cdr_from_json
from core.settings import Settings

__all__ = ["Backoff", "SyncWorker"]

log = logging.getLogger("tawag.connectors")


@dataclass(frozen=True)
class Backoff:
    """Exponential retry delay for 503s/timeouts; a CRM's own Retry-After wins for 429."""

    initial_s: float = 0.5
    max_s: float = 30.0
    max_retry_after_s: float = 600.0
    """A CRM's own wait is honoured up to this (Bitrix24's OPERATION_TIME_LIMIT names
    ``operating_reset_at``, at most the 10-minute budget window away)."""
    auth_s: float = 60.0
    """AuthExpired and Misconfigured need an operator; poll slowly until fixed (parking
    every entry instead would drop the whole queue for one wrong setting)."""

    def delay(self, attempt: int, exc: ConnectorError) -> float:
        if isinstance(exc, RateLimited) and exc.retry_after is not None:
            return min(exc.retry_after, self.max_retry_after_s)
        if isinstance(exc, (AuthExpired, Misconfigured)):
            return self.auth_s
        return min(self.initial_s * 2 ** attempt, self.max_s)


class SyncWorker:
    """Owns one thread per CRM for deliveries and one per CRM for screen-pops."""

    def __init__(self, targets: list[Target], outbox: Outbox, *, settings: Settings,
                 backoff: Backoff = Backoff(), clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time,
                 on_screen_pop: Callable[[str, RingingCall], None] | None = None,
                 on_contact: Callable[[str, str, Contact | None, str | None], None]
                 | None = None) -> None:
        self.targets = {t.name: t for t in targets}
        self.outbox = outbox
        self.settings = settings
        self.backoff = backoff
        self.clock = clock
        self.wall = wall
        self.on_screen_pop = on_screen_pop
        self.links = ClickToCallLinks(outbox)
        """CRM-started calls (click-to-call) and the Tawag calls that realise them."""
        self.steps = DeliverySteps(outbox, self.links,
                                   recording_link=partial(_recording_link, settings),
                                   on_contact=on_contact)
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
        if ev.type not in SCREEN_POP_EVENTS or not ev.call_id:
            return
        with self._lock:
            view, change = apply_event(self._views.get(ev.call_id), ev,
                                       self.settings.default_country)
            if view is None:
                self._views.pop(ev.call_id, None)
            else:
                self._views[ev.call_id] = view
        if change is None:
            return
        if self.wall() - ev.ts.timestamp() > self.settings.crm_screen_pop_deadline_s:
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
        for kind, data in deliveries_for(cdr, self.settings.default_country):
            if cdr.recording is None and cdr.disposition is Disposition.ANSWERED:
                with self._lock:
                    self._closed_at.setdefault(cdr.call_id, self.clock())
            for name, target in self.targets.items():
                if not self.outbox.enqueue(name, kind, cdr.call_id, data):
                    if cdr.recording and self.outbox.revise(name, kind, cdr.call_id, data):
                        self._wake[name].set()
                    continue
                added += 1
                added += enqueue_follow_up(self.outbox, target, cdr, data["phone"])
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

    # --- threads ---------------------------------------------------------------------
    def start(self) -> None:
        metrics.watch_outbox(self.outbox, self.targets)
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
        metrics.unwatch_outbox(self.outbox)

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
        call = for_target(target, change)
        if call is None:
            return
        attempt = 0
        while not self._stop.is_set():
            try:
                target.client.screen_pop(call)
                metrics.SCREEN_POPS.labels(target.name, "shown").inc()
                if self.on_screen_pop is not None:
                    self.on_screen_pop(target.name, call)
                return
            except (RateLimited, Unavailable) as exc:
                if isinstance(exc, RateLimited):
                    metrics.RATE_LIMITED.labels(target.name, "screen_pop").inc()
                delay = self.backoff.delay(attempt, exc)
                if self.clock() + delay - queued_at > self.settings.crm_screen_pop_deadline_s:
                    log.warning("screen-pop dropped: %s call %s: %s", target.name,
                                call.call_id, exc)
                    metrics.SCREEN_POPS.labels(target.name, "dropped").inc()
                    return
                attempt += 1
                self._stop.wait(delay)
            except ConnectorError as exc:
                log.warning("screen-pop failed: %s call %s: %s", target.name, call.call_id, exc)
                metrics.SCREEN_POPS.labels(target.name, "failed").inc()
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
                deliver(self.steps, target, entry)
                attempt = 0
            except (RateLimited, Unavailable, AuthExpired, Misconfigured) as exc:
                metrics.DELIVERY_FAILURES.labels(name, entry.kind, _retry_reason(exc)).inc()
                metrics.RETRIES.labels(name).inc()
                if isinstance(exc, RateLimited):
                    metrics.RATE_LIMITED.labels(name, "delivery").inc()
                delay = self.backoff.delay(attempt, exc)
                log.warning("%s delivery of call %s deferred %.1fs: %s", name, entry.call_id,
                            delay, exc)
                attempt += 1
                self._stop.wait(delay)
            except Exception:  # a bug or odd vendor JSON: keep the entry, retry slowly
                log.exception("%s delivery of call %s crashed", name, entry.call_id)
                metrics.DELIVERY_FAILURES.labels(name, entry.kind, "error").inc()
                metrics.RETRIES.labels(name).inc()
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
        left = closed + self.settings.crm_recording_wait_s - self.clock()
        if left <= 0:
            with self._lock:
                self._closed_at.pop(entry.call_id, None)
        return max(0.0, left)


def _retry_reason(exc: ConnectorError) -> str:
    if isinstance(exc, RateLimited):
        return "rate_limited"
    if isinstance(exc, AuthExpired):
        return "auth_expired"
    if isinstance(exc, Misconfigured):
        return "misconfigured"
    return "unavailable"


def _recording_link(settings: Settings, cdr: Cdr, stored: bool) -> str | None:
    return recording_url(settings, cdr.recording, now=time.time(), stored=stored)
