"""What every CRM connector shares: the client protocol, the error tree, the rate limiter.

Error tree (vendor errors never reach callers; each client maps them here)::

    ConnectorError
     ├── RateLimited(retry_after)   429 (amoCRM), 503 QUERY_LIMIT_EXCEEDED (Bitrix24)
     ├── AuthExpired                refresh failed or a second 401: an operator re-authorises
     ├── Misconfigured              the CRM's contract/configuration does not fit our settings
     │                              (a field missing from 1C $metadata, a Bitrix24 webhook asked
     │                              for an application-only method): an operator fixes settings
     ├── Rejected(body, permanent)  the CRM refused this payload; resending it will not help
     └── Unavailable                5xx, connection refused, timeout: retry later

The rate limiter is applied *before* a request leaves (a 429 costs a round trip and, on
amoCRM, repeated 429s escalate to a 403 block of the whole account):

    throttle = Throttle(SlidingWindow(**AMOCRM_LIMIT))
    throttle.acquire()      # sleeps just long enough to stay under 7 req/s
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from core.records import Cdr

__all__ = [
    "AMOCRM_LIMIT",
    "BITRIX24_LIMIT",
    "AuthExpired",
    "Capabilities",
    "ConnectorError",
    "Contact",
    "CrmClient",
    "LeakyBucket",
    "Misconfigured",
    "LINKED_CALL_ID",
    "Limiter",
    "SlidingWindow",
    "MemoryProgress",
    "Progress",
    "RateLimited",
    "Rejected",
    "RingingCall",
    "TaskRef",
    "Throttle",
    "Unavailable",
    "digits",
    "last_digits",
    "retry_after_seconds",
    "unique",
]


class ConnectorError(Exception):
    """Base of every error a connector raises; ``crm`` names the system that failed."""

    def __init__(self, message: str, *, crm: str = "") -> None:
        super().__init__(message)
        self.crm = crm


class RateLimited(ConnectorError):
    """The CRM asked us to slow down; ``retry_after`` seconds if it said so, else None."""

    def __init__(self, message: str, *, crm: str = "", retry_after: float | None = None) -> None:
        super().__init__(message, crm=crm)
        self.retry_after = retry_after


class AuthExpired(ConnectorError):
    """Credentials no longer work even after one refresh; needs an operator."""


class Misconfigured(ConnectorError):
    """Our settings do not fit this CRM account (found at start, or on first use)."""


class Rejected(ConnectorError):
    """The CRM refused the request; ``body`` is its error body, kept for the operator."""

    def __init__(self, message: str, *, crm: str = "", status: int = 400,
                 body: Any = None, permanent: bool = True, code: str = "") -> None:
        super().__init__(message, crm=crm)
        self.status = status
        self.body = body
        self.permanent = permanent
        self.code = code or str(status)
        """The vendor's documented code (``ERROR_CORE``, ``odata-6``, ``403``): why it was
        parked, as a metric label and in the outbox."""


class Unavailable(ConnectorError):
    """The CRM could not be reached or failed (5xx, timeout); the request may be retried."""


@dataclass(frozen=True)
class Contact:
    """A CRM client found by phone, with the manager who owns it."""

    crm: str
    id: str
    name: str
    responsible_user_id: str | None
    entity_type: str = "contact"
    lead_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class TaskRef:
    """A follow-up item created for a missed call, so a later callback can close it."""

    crm: str
    id: str
    phone: str


@dataclass(frozen=True)
class RingingCall:
    """What a screen-pop needs: the call, the client's number, who it rings for now."""

    call_id: str
    phone: str
    direction: str
    started_at: float
    users: tuple[str, ...] = ()
    hide_users: tuple[str, ...] = ()


@dataclass(frozen=True)
class Capabilities:
    """What a CRM's contract lets us do; sync skips what a CRM cannot do, never fakes it."""

    screen_pop: bool = True
    unknown_lead: bool = True
    tasks: bool = True
    call_log: bool = True
    stores_links: bool = True
    """The CRM keeps the recording link and plays it later (amoCRM, 1C); False: it takes
    the file or fetches the link once (Bitrix24 attachRecord), so the link can be short."""
    """False: the account's auth mode may not write calls (a Bitrix24 inbound webhook);
    deliveries then only look the client up (routing hints)."""


class Progress(Protocol):
    """Steps of one delivery already done; ``set`` is durable when it returns (journal)."""

    def get(self, key: str) -> Any: ...

    def set(self, key: str, value: Any) -> None: ...


LINKED_CALL_ID = "linked_crm_call_id"
"""Progress key: the CRM's own id of a call the CRM started (Bitrix24 click-to-call's
CALL_ID). A client logs the call there and never registers it a second time."""


class MemoryProgress(dict):
    """In-memory :class:`Progress` for screen-pops and unit tests."""

    def set(self, key: str, value: Any) -> None:
        self[key] = value


class CrmClient(Protocol):
    """One CRM account. Every method raises only :class:`ConnectorError` subclasses.

    ``log_call`` and ``create_missed_call_task`` record each completed vendor request in
    ``progress`` so a delivery retried after a crash or an outage resumes where it
    stopped instead of repeating a request the CRM would count twice.
    """

    name: str
    capabilities: Capabilities

    def find_contact(self, phone: str) -> Contact | None: ...

    def screen_pop(self, call: RingingCall) -> None: ...

    def create_lead_for_unknown(self, cdr: Cdr, *, phone: str, user: str | None,
                                recording_url: str | None) -> Contact | None: ...

    def log_call(self, cdr: Cdr, *, phone: str, user: str | None, contact: Contact | None,
                 recording_url: str | None, progress: Progress) -> None: ...

    def create_missed_call_task(self, cdr: Cdr, *, phone: str, contact: Contact | None,
                                responsible: str | None, progress: Progress) -> TaskRef | None: ...

    def close_task(self, task: TaskRef, *, note: str) -> None: ...

    def finish_unplaced(self, crm_call_id: str, *, user: str, progress: Progress) -> None:
        """Finish a call the CRM started (click-to-call) that was never placed; a CRM
        that starts no calls has nothing to finish."""
        ...


AMOCRM_LIMIT: dict[str, float] = {"limit": 7, "window_s": 1.0}
"""amoCRM/Kommo: "not more than 7 requests per second" (Kommo Limitations page): a
sliding window, so no one-second span ever holds an eighth request."""
BITRIX24_LIMIT: dict[str, float] = {"capacity": 50, "drain_per_s": 2.0}
"""Bitrix24 non-Enterprise plans: leaky bucket X=50, draining Y=2 per second (limits.md)."""


@dataclass
class LeakyBucket:
    """Pure leaky bucket: each request adds 1, the level drains ``drain_per_s``.

    :meth:`reserve` books one request at ``now`` and returns how long to wait before
    sending it so that the level never exceeds ``capacity`` -- the same rule the CRM
    applies, so a lone client following it never sees a limit error.
    """

    capacity: float
    drain_per_s: float
    level: float = 0.0
    at: float | None = None

    def reserve(self, now: float) -> float:
        if self.at is not None:
            self.level = max(0.0, self.level - (now - self.at) * self.drain_per_s)
        self.at = now
        wait = max(0.0, (self.level + 1 - self.capacity) / self.drain_per_s)
        self.level += 1
        return wait


@dataclass
class SlidingWindow:
    """Pure sliding-window limiter: at most ``limit`` requests in any ``window_s`` span.

    A token bucket of 7 refilling 7/s would allow 14 requests in the first second; the
    amoCRM rule is phrased per second, so the window is the safe reading.
    """

    limit: float
    window_s: float
    sent: list[float] = field(default_factory=list)

    def reserve(self, now: float) -> float:
        self.sent = [t for t in self.sent if t > now - self.window_s]
        at = now
        if len(self.sent) >= self.limit:
            at = max(now, self.sent[-int(self.limit)] + self.window_s)
        self.sent.append(at)
        return at - now


class Limiter(Protocol):
    def reserve(self, now: float) -> float: ...


@dataclass
class Throttle:
    """Applies a :class:`Limiter` with an injected clock and sleep (thread-safe)."""

    bucket: Limiter
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def acquire(self) -> float:
        """Block until one more request is allowed; returns the time waited."""
        with self._lock:
            wait = self.bucket.reserve(self.clock())
        if wait > 0:
            self.sleep(wait)
        return wait


def retry_after_seconds(headers: Any, default: float | None = None) -> float | None:
    """``Retry-After`` in seconds if the CRM sent a numeric one."""
    raw = headers.get("retry-after") if headers is not None else None
    try:
        return max(0.0, float(raw)) if raw is not None else default
    except ValueError:
        return default


def digits(phone: str) -> str:
    """Only the digits of a number (CRMs search on digits: amoCRM last 10, 1C НомерТелефона)."""
    return "".join(ch for ch in phone if ch.isdigit())


def last_digits(phone: str, n: int) -> str:
    return digits(phone)[-n:]


def unique(items: Sequence[str]) -> tuple[str, ...]:
    """Keep first occurrences in order (users ringing in a hunt group)."""
    return tuple(dict.fromkeys(items))
