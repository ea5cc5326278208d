"""The webhook worker: events and closed CDRs -> a durable outbox -> signed HTTP deliveries.

Fan-out (:meth:`Webhooks.handle_event`, :meth:`Webhooks.handle_cdr`) puts one entry per
matching subscription into :class:`connectors.outbox.Outbox` — the CRM connectors'
fsynced journal, reused through its documented API: the outbox's "crm" is the
subscription id, its "call id" the delivery's event id. So a delivery is:

- *durable*: journalled before the Kafka offset is committed; a restart resumes it;
- *once per event id* from our side: the key is unique, so a re-read Kafka message
  enqueues nothing; the event id travels as ``Tawag-Event-Id``/``Idempotency-Key`` so a
  receiver drops the repeats at-least-once delivery can still cause (a crash between the
  receiver's 2xx and our journal line);
- *in order* per subscription: its head blocks the entries behind it while it retries,
  with exponential backoff (:func:`backoff`), until :data:`webhook_max_age_s` after its
  first attempt; then it is given up (``rejected``) and the next one goes.

Each subscription has its own delivery thread, so a slow or dead receiver delays only
its own deliveries, never the fan-out (the Kafka loop) or another subscription.

Native events (``format: tawag``): the event exactly as on ``tawag.call-events``
(:func:`core.events.to_json`), and a ``cdr.closed`` event when a call closes::

    {"schema": 1, "event_id": "cdr.closed:<call id>", "type": "cdr.closed",
     "tenant": "acme", "ts": "<ended_at>", "call_id": "...", "cdr": {<the CDR>}}
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx

from api import signing, zadarma
from api.subscriptions import Subscription, SubscriptionStore, wants
from connectors.outbox import Entry, Outbox
from core.events import Event, EventType, format_ts, to_json
from core.records import Cdr, cdr_to_json

__all__ = ["CDR_CLOSED", "EVENT_TYPES", "Webhooks", "backoff", "cdr_event", "delivery_rows"]

log = logging.getLogger("tawag.api.webhooks")

CDR_CLOSED = "cdr.closed"
EVENT_TYPES = (*(t.value for t in EventType), CDR_CLOSED)
KIND = "webhook"
_START_MARK = "zadarma-start|"
_STEERED_MARK = "zadarma-steered|"


def backoff(attempts: int, base_s: float, cap_s: float) -> float:
    """Seconds before the next try after ``attempts`` failed ones: base * 2^(n-1), capped."""
    return min(cap_s, base_s * 2 ** min(attempts - 1, 40))


def cdr_event(cdr: Cdr) -> dict[str, Any]:
    """The native ``cdr.closed`` event of a closed call."""
    return {"schema": 1, "event_id": f"{CDR_CLOSED}:{cdr.call_id}", "type": CDR_CLOSED,
            "tenant": cdr.tenant, "ts": format_ts(cdr.ended_at or cdr.last_event_ts),
            "call_id": cdr.call_id, "cdr": json.loads(cdr_to_json(cdr))}


class Webhooks:
    """Fan-out into the outbox and one delivery thread per subscription."""

    def __init__(self, outbox: Outbox, subscriptions: SubscriptionStore, *,
                 http: httpx.Client, max_age_s: float, base_s: float = 1.0,
                 cap_s: float = 3600.0, clock: Callable[[], float] = time.time) -> None:
        self.outbox, self.subscriptions, self.http = outbox, subscriptions, http
        self.max_age_s, self.base_s, self.cap_s, self.clock = max_age_s, base_s, cap_s, clock
        self._threads: dict[str, tuple[threading.Thread, threading.Event]] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()

    # --- fan-out (the Kafka loop's thread) ----------------------------------------------
    def handle_event(self, ev: Event) -> None:
        if ev.type is EventType.CALL_OFFERED and ev.call_id:
            self._remember_start(ev)
        for sub in self.subscriptions.of_tenant(ev.tenant):
            if sub.format == "zadarma":
                start = self.outbox.mark(_START_MARK + (ev.call_id or ""))
                for notify, form in zadarma.from_event(
                        ev, datetime.fromisoformat(start) if start else None, sub.timezone):
                    if notify == "NOTIFY_START" and self._steered(sub.id, ev.call_id):
                        continue  # the edge's steering request delivered it already
                    if wants(sub, notify):
                        self._enqueue(sub, f"{ev.event_id}:{notify}",
                                      {"form": form, "event_ts": ev.ts.timestamp()})
            elif wants(sub, ev.type.value):
                self._enqueue(sub, ev.event_id, {"body": to_json(ev).decode(),
                                                 "event_ts": ev.ts.timestamp()})

    def handle_cdr(self, cdr: Cdr) -> None:
        if not cdr.closed:
            return
        event_ts = (cdr.ended_at or cdr.last_event_ts).timestamp()
        for sub in self.subscriptions.of_tenant(cdr.tenant):
            if sub.format == "zadarma":
                for notify, form in zadarma.from_cdr(cdr, sub.timezone):
                    if wants(sub, notify):
                        self._enqueue(sub, f"{CDR_CLOSED}:{cdr.call_id}:{notify}",
                                      {"form": form, "event_ts": event_ts})
            elif wants(sub, CDR_CLOSED):
                body = json.dumps(cdr_event(cdr), ensure_ascii=False, sort_keys=True,
                                  separators=(",", ":"))
                self._enqueue(sub, f"{CDR_CLOSED}:{cdr.call_id}",
                              {"body": body, "event_ts": event_ts})
            if self._steered(sub.id, cdr.call_id):
                self.outbox.set_mark(_STEERED_MARK + f"{sub.id}|{cdr.call_id}", None)
        if self.outbox.mark(_START_MARK + cdr.call_id) is not None:
            self.outbox.set_mark(_START_MARK + cdr.call_id, None)

    # --- the edge's steering requests (api.steering) --------------------------------------
    def call_start(self, call_id: str, offered: datetime) -> datetime:
        """The start Zadarma's notifications of the call sign: the first one known."""
        known = self.outbox.mark(_START_MARK + call_id)
        if known is not None:
            return datetime.fromisoformat(known)
        self.outbox.set_mark(_START_MARK + call_id, offered.isoformat())
        return offered

    def mark_steered(self, sub: Subscription, call_id: str) -> None:
        """``sub`` took the call's NOTIFY_START from the steering request: the worker will
        not send it again when the call's ``call.offered`` comes through Kafka."""
        self.outbox.set_mark(_STEERED_MARK + f"{sub.id}|{call_id}", "1")

    def _steered(self, sub_id: str, call_id: str | None) -> bool:
        return self.outbox.mark(_STEERED_MARK + f"{sub_id}|{call_id or ''}") is not None

    def _remember_start(self, ev: Event) -> None:
        """Zadarma signs ``call_start`` in every notification of a call: the offer time is
        kept (durably, as an outbox mark) until the call's CDR closes."""
        if any(s.format == "zadarma" for s in self.subscriptions.of_tenant(ev.tenant)) \
                and self.outbox.mark(_START_MARK + ev.call_id) is None:
            self.outbox.set_mark(_START_MARK + ev.call_id, ev.ts.isoformat())

    def _enqueue(self, sub: Subscription, event_id: str, data: dict[str, Any]) -> None:
        if not self.outbox.enqueue(sub.id, KIND, event_id, data):
            # a later revision (the CDR with its recording) replaces one not yet tried
            self.outbox.revise(sub.id, KIND, event_id, data)
        self._wake(sub.id)

    # --- delivery (one thread per subscription) ------------------------------------------
    def start(self) -> None:
        for sub in self.subscriptions.all():
            self._wake(sub.id)

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            threads = list(self._threads.values())
        for thread, wake in threads:
            wake.set()
            thread.join(timeout=10)

    def forget(self, sub_id: str) -> None:
        """A deleted subscription: its pending deliveries are given up."""
        for entry in self.outbox.pending(sub_id):
            self.outbox.mark_rejected(entry, "subscription deleted")
        self._wake(sub_id)

    def _wake(self, sub_id: str) -> None:
        with self._lock:
            current = self._threads.get(sub_id)
            if current is None or not current[0].is_alive():
                wake = threading.Event()
                thread = threading.Thread(target=self._deliver_loop, args=(sub_id, wake),
                                          name=f"webhook-{sub_id}", daemon=True)
                self._threads[sub_id] = (thread, wake)
                thread.start()
            else:
                current[1].set()

    def _deliver_loop(self, sub_id: str, wake: threading.Event) -> None:
        while not self._stop.is_set():
            sub = self.subscriptions.get(sub_id)
            if sub is None:
                return
            entry = self.outbox.head(sub_id)
            if entry is None:
                wake.wait(1.0)
                wake.clear()
                continue
            due = entry.progress.get("log", {}).get("next_at") or 0.0
            now = self.clock()
            if due > now:
                self._stop.wait(min(due - now, 0.5))
                continue
            self.attempt(sub, entry)

    def attempt(self, sub: Subscription, entry: Entry) -> bool:
        """One delivery try of ``entry``; journals its outcome. True if delivered."""
        now = self.clock()
        body, headers = self.render(sub, entry, int(now))
        status: int | None = None
        sent = time.monotonic()
        try:
            resp = self.http.post(sub.url, content=body, headers=headers)
            status = resp.status_code
            error = None if 200 <= status < 300 else f"HTTP {status}: {resp.text[:200]}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        state = dict(entry.progress.get("log", {}))
        state["attempts"] = state.get("attempts", 0) + 1
        state.setdefault("first_at", now)
        state.update(last_status=status, last_error=error,
                     last_attempt_ms=round((time.monotonic() - sent) * 1000, 1))
        if error is None:
            state.update(delivered_at=self.clock(), next_at=None)
        else:
            state["next_at"] = now + backoff(state["attempts"], self.base_s, self.cap_s)
        self.outbox.progress(entry).set("log", state)
        if error is None:
            self.outbox.mark_done(entry)
        elif now - state["first_at"] >= self.max_age_s or status == 410:
            log.warning("webhook %s to %s given up after %d attempts: %s", entry.call_id,
                        sub.url, state["attempts"], error)
            self.outbox.mark_rejected(entry, error)
        return error is None

    @staticmethod
    def render(sub: Subscription, entry: Entry, timestamp: int) -> tuple[bytes, dict[str, str]]:
        """The request of one delivery, signed now (the timestamp is part of the signature)."""
        if "form" in entry.data:
            form = entry.data["form"]
            return zadarma.encode(form), {
                "Content-Type": "application/x-www-form-urlencoded",
                "Signature": zadarma.signature(form, sub.secret)}
        body = entry.data["body"].encode()
        return body, signing.headers(sub.secret, entry.call_id, timestamp, body)

    # --- the delivery log ----------------------------------------------------------------
    def deliveries(self, sub_id: str, limit: int = 100) -> list[dict[str, Any]]:
        """The subscription's deliveries, newest first (:func:`delivery_rows`)."""
        return delivery_rows(self.outbox, sub_id, limit)


def delivery_rows(outbox: Outbox, sub_id: str, limit: int = 100) -> list[dict[str, Any]]:
    """A subscription's deliveries, newest first: state, attempts, the last attempt's
    status, error and HTTP round trip (``last_attempt_ms``), and ``latency_ms``: from the
    event's time at the source (a CDR's: the call's end) to the receiver's 2xx."""

    def when(ts: float | None) -> datetime | None:
        return datetime.fromtimestamp(ts, UTC) if ts else None

    entries = [e for e in outbox.entries() if e.crm == sub_id and e.kind == KIND]
    out = []
    for entry in sorted(entries, key=lambda e: e.id, reverse=True)[:limit]:
        state = entry.progress.get("log", {})
        event_ts, delivered = entry.data.get("event_ts"), state.get("delivered_at")
        out.append({"event_id": entry.call_id, "state": entry.state,
                    "attempts": state.get("attempts", 0),
                    "last_status": state.get("last_status"),
                    "last_error": entry.error or state.get("last_error"),
                    "first_attempt_at": when(state.get("first_at")),
                    "delivered_at": when(delivered),
                    "last_attempt_ms": state.get("last_attempt_ms"),
                    "latency_ms": round((delivered - event_ts) * 1000, 1)
                    if delivered and event_ts else None})
    return out
