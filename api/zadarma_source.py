"""The receiver of Zadarma's notifications (a tenant whose calls stay on Zadarma).

``POST /zadarma/{tenant}`` takes the form Zadarma posts, ``GET /zadarma/{tenant}?zd_echo=``
answers its URL check. Each notification is, in order:

1. verified: the tenant's ``[tenant.<name>.zadarma] secret`` (:mod:`core.zadarma`) must
   give its ``Signature`` - else 403 (no secret: nothing can verify it) or 401;
2. translated (:mod:`ingest.zadarma`, pure) - else 400, malformed;
3. de-duplicated by its identity (:func:`ingest.zadarma.notification_id`) in a
   :class:`~api.seen.SeenJournal`: a retry is answered 200 and produces nothing;
4. produced to ``tawag.call-events`` (ingest's producer settings: acks=all, idempotent),
   waiting for Kafka's acknowledgement, then journalled, then answered 200. Kafka away:
   503 with Retry-After, nothing journalled, so Zadarma's retry produces it then.

A crash between 4's produce and its journal line repeats the events on Zadarma's retry;
their ids are the notification's, so the CDR fold drops them (at least once, never
counted twice). Every refusal is dead-lettered on ``tawag.dead-letter`` with its reason
and the body as received, the way ingest dead-letters a bad evapi payload.

Why here and not in ingest: the API process already serves HTTP to the outside under
``tawag up`` with problem-details errors; ingest's only socket is the edge's evapi.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from api.seen import SeenJournal
from core.events import Event, InvalidEvent, to_json
from core.settings import Settings
from core.zadarma import tenant_secrets, verify
from ingest.bridge import Producer, dead_letter
from ingest.zadarma import SourceContext, notification_id, parse_form, to_events

__all__ = ["ZadarmaSource", "Accepted", "Refused", "Unavailable", "seen_file",
           "KAFKA_WAIT_S"]

log = logging.getLogger("tawag.api.zadarma")

KAFKA_WAIT_S = 10.0
"""How long a notification waits for Kafka's acknowledgement before it is answered 503."""


class Refused(Exception):
    """A notification refused: ``status`` (400/401/403/404), ``kind`` and the reason."""

    def __init__(self, status: int, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.kind, self.reason = status, kind, reason


class Unavailable(Exception):
    """Kafka did not take the events: answer 503, Zadarma retries."""


def seen_file(settings: Settings) -> Path:
    """The journal of notifications already produced, beside the API's other state."""
    return settings.data_dir / "api" / "zadarma-seen.log"


@dataclass(frozen=True)
class Accepted:
    """A notification taken: how many events it gave, or a retry of one already taken."""

    events: int
    duplicate: bool


class ZadarmaSource:
    """Verifies, de-duplicates, translates and produces the notifications of every tenant.

        source = ZadarmaSource(settings, SeenJournal(seen_file(settings)),
                               lambda: kafka_producer(settings.kafka_bootstrap))
        source.accept("acme", body, request.headers.get("Signature"))
    """

    def __init__(self, settings: Settings, seen: SeenJournal,
                 connect: Callable[[], Producer], *,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.seen = seen
        self.connect = connect
        self.clock = clock
        self._producer: Producer | None = None
        self._lock = threading.Lock()
        """One notification at a time: a retry racing its original waits, then finds it."""

    def knows(self, tenant: str) -> bool:
        """Whether the tenant has a Zadarma account (a secret) configured."""
        return tenant in tenant_secrets(self.settings.provisioning_file)

    def accept(self, tenant: str, body: bytes, signature: str | None) -> Accepted:
        """Handle one notification; Refused (dead-lettered) or Unavailable otherwise."""
        try:
            form, ctx = self._verified(tenant, body, signature)
            key = notification_id(tenant, form)
            with self._lock:
                if key in self.seen:
                    return Accepted(0, duplicate=True)
                events = self._translate(form, ctx)
                self._produce(events)
                self.seen.add(key)
            return Accepted(len(events), duplicate=False)
        except Refused as exc:
            self._dead_letter(tenant, exc.reason, body)
            raise

    def _verified(self, tenant: str, body: bytes,
                  signature: str | None) -> tuple[dict[str, str], SourceContext]:
        secret = tenant_secrets(self.settings.provisioning_file).get(tenant)
        if secret is None:
            raise Refused(403, "forbidden", f"no Zadarma account is configured for tenant "
                                            f"{tenant!r} ([tenant.{tenant}.zadarma] secret)")
        try:
            form = parse_form(body)
        except InvalidEvent as exc:
            raise Refused(400, "malformed-notification", str(exc)) from exc
        if not verify(form, signature, secret):
            why = "no Signature header" if not signature else "Signature does not verify"
            raise Refused(401, "bad-signature", f"{why} (event {form.get('event')!r})")
        zone = self.settings.time_zone_of(tenant)
        return form, SourceContext(tenant, zone, self.settings.default_country)

    def _translate(self, form: dict[str, str], ctx: SourceContext) -> list[Event]:
        try:
            return to_events(form, ctx, datetime.fromtimestamp(self.clock(), UTC))
        except InvalidEvent as exc:
            raise Refused(400, "malformed-notification", str(exc)) from exc

    def _produce(self, events: list[Event]) -> None:
        try:
            producer = self._producer = self._producer or self.connect()
            futures = [producer.send(self.settings.topic_call_events, key=ev.key.encode(),
                                     value=to_json(ev)) for ev in events]
            for future in futures:
                future.get(timeout=KAFKA_WAIT_S)
        except Exception as exc:  # kafka-python's own tree: every one means "not now"
            log.warning("zadarma: Kafka did not take %d events: %r", len(events), exc)
            self._reset()
            raise Unavailable(f"Kafka did not acknowledge: {exc!r}") from exc

    def _dead_letter(self, tenant: str, reason: str, body: bytes) -> None:
        log.warning("zadarma %s: dead letter: %s", tenant, reason)
        record = dead_letter(reason, body, f"zadarma@{tenant}")
        try:
            producer = self._producer = self._producer or self.connect()
            producer.send(self.settings.topic_dead_letter, key=f"zadarma:{tenant}".encode(),
                          value=record).get(timeout=KAFKA_WAIT_S)
        except Exception as exc:  # the refusal stands; only its record is lost (logged)
            log.warning("zadarma %s: dead letter not written (%r): %s", tenant, exc,
                        record[:500])
            self._reset()

    def _reset(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout=0)
            except Exception as exc:  # closing a producer that lost its broker
                log.debug("closing the Kafka producer: %r", exc)

    def close(self) -> None:
        with self._lock:
            self._reset()
            self.seen.close()
