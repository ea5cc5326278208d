"""Missed-call callback list: fold a client's CDRs into callback items.

One state per client, keyed ``tenant:client`` where the client is the normalised external
number: the caller of an inbound call, the callee of an outbound call (internal calls
have no client). The input is the CDR revisions of ``tawag.cdrs`` - whether a call was
answered is decided once, by the call fold - and the state keeps the latest revision of
each of the client's calls, so the items depend only on the set of calls, not on the
order their revisions arrived in.

    state = CallbackState("acme", "+74951234567")
    for cdr in cdrs:                          # CDR revisions of that client's calls
        state = apply(state, cdr)
    items(state)                              # [CallbackItem(status=OPEN, attempts=2, ...)]

Rules, over the client's calls in order of ``started_at`` (nights and weekends count the
same; each item says whether its first missed call came at ``night`` - outside the
business hours - or on a ``weekend``, in the tenant's IANA zone from provisioning):

- a *missed call* is a closed inbound call that was never answered (busy, no answer,
  cancelled by the caller, failed). It opens an item (``item_id`` = its call id,
  ``opened_at`` = its start) or, while an item is open, adds an attempt to it;
- an outbound call to the client that closes unanswered while an item is open is a
  callback attempt (``callback_attempts``);
- any *answered* call with the client, in either direction, closes the open item:
  ``closed_at`` = its answer time, ``called_back_by`` = the answering agent (inbound) or
  the extension that called (outbound), ``time_to_callback_ms`` = closed_at - opened_at;
- calls still in progress count for nothing yet.

Bounded state: calls that started more than ``retention`` before the client's newest
call, and before any item still open (or closed after that cutoff), are dropped; a revision
of a call older than the cutoff that the state does not hold is ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from core.agent_records import CallbackItem, CallbackStatus
from core.events import Direction, format_ts, parse_ts
from core.phone import is_extension, normalise
from core.records import Cdr
from core.timezones import BusinessHours, zone

__all__ = [
    "STATE_FORMAT",
    "CallbackConfig",
    "ClientCall",
    "CallbackState",
    "client_of",
    "client_key",
    "apply",
    "fold",
    "items",
    "item_changes",
    "resent_items",
]

STATE_FORMAT = 1
_MS = timedelta(milliseconds=1)


@dataclass(frozen=True)
class CallbackConfig:
    """Policy of the callback list.

        CallbackConfig(country="RU", retention=timedelta(days=30))
    """

    country: str = "RU"
    """Country used to read national numbers (``core.settings.default_country``)."""
    retention: timedelta = timedelta(days=30)
    """How long behind the client's newest call settled history is kept."""
    time_zones: tuple[tuple[str, str], ...] = ()
    """Tenant -> IANA zone pairs, from provisioning (``Settings.time_zones``)."""
    default_time_zone: str = "UTC"
    """Zone of a tenant not in ``time_zones`` (``Settings.default_time_zone``)."""
    business_hours: BusinessHours = BusinessHours()
    """Local opening hours: outside them an item's first missed call is ``night``."""

    def time_zone(self, tenant: str) -> str:
        """The tenant's IANA zone name."""
        return dict(self.time_zones).get(tenant, self.default_time_zone)


DEFAULT_CONFIG = CallbackConfig()


def client_of(cdr: Cdr, country: str = "RU") -> str | None:
    """The client's normalised number: inbound caller, outbound callee; None otherwise."""
    raw = {Direction.INBOUND: cdr.caller, Direction.OUTBOUND: cdr.callee}.get(
        cdr.direction or "")
    number = normalise(raw, country)
    if not number or is_extension(number):
        return None
    return number


def client_key(cdr: Cdr, country: str = "RU") -> str | None:
    """``tenant:client`` of a CDR, the key of the callbacks table; None if no client."""
    client = client_of(cdr, country)
    return f"{cdr.tenant}:{client}" if client else None


@dataclass(frozen=True)
class ClientCall:
    """The latest revision of one of the client's calls, as far as callbacks care."""

    call_id: str
    version: int
    direction: str
    started_at: datetime
    answered_at: datetime | None
    closed: bool
    extension: str | None
    """Our side: the answering agent of an inbound call, the caller of an outbound one."""

    @classmethod
    def of(cls, cdr: Cdr) -> ClientCall:
        inbound = cdr.direction == Direction.INBOUND
        return cls(cdr.call_id, cdr.version, cdr.direction or "", cdr.started_at,
                   cdr.answered_at, cdr.closed, cdr.agent if inbound else cdr.caller)

    @property
    def missed(self) -> bool:
        return self.direction == Direction.INBOUND and self.closed and self.answered_at is None

    @property
    def unanswered_callback(self) -> bool:
        return self.direction == Direction.OUTBOUND and self.closed and self.answered_at is None

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        for name in ("started_at", "answered_at"):
            out[name] = format_ts(out[name]) if out[name] is not None else None
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClientCall:
        values = dict(data)
        for name in ("started_at", "answered_at"):
            values[name] = parse_ts(values[name]) if values[name] is not None else None
        return cls(**values)


def _order(call: ClientCall) -> tuple[datetime, str]:
    return (call.started_at, call.call_id)


@dataclass(frozen=True)
class CallbackState:
    """A client's calls (latest revision each) by start time; the value of the callbacks table.

        state = CallbackState.from_dict(row) if row is not None else CallbackState(tenant, client)
    """

    tenant: str
    client: str
    calls: tuple[ClientCall, ...] = ()
    pruned_version: int = 0
    """Sum of the versions of calls dropped by retention (keeps :attr:`version` growing)."""

    @property
    def key(self) -> str:
        return f"{self.tenant}:{self.client}"

    @property
    def version(self) -> int:
        """Grows with every revision folded in; equal for equal sets of revisions."""
        return self.pruned_version + sum(c.version for c in self.calls)

    def get(self, call_id: str) -> ClientCall | None:
        return next((c for c in self.calls if c.call_id == call_id), None)

    def to_dict(self) -> dict[str, Any]:
        return {"format": STATE_FORMAT, "tenant": self.tenant, "client": self.client,
                "pruned_version": self.pruned_version,
                "calls": [c.to_dict() for c in self.calls]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CallbackState:
        if data.get("format") != STATE_FORMAT:
            raise ValueError(f"callback state: unknown format {data.get('format')!r}")
        calls = tuple(sorted((ClientCall.from_dict(c) for c in data["calls"]), key=_order))
        return cls(data["tenant"], data["client"], calls, int(data["pruned_version"]))


def _cutoff(state: CallbackState, config: CallbackConfig) -> datetime | None:
    newest = max((c.started_at for c in state.calls), default=None)
    return newest - config.retention if newest is not None else None


def apply(state: CallbackState, cdr: Cdr,
          config: CallbackConfig = DEFAULT_CONFIG) -> CallbackState:
    """Fold one CDR revision in; an older revision, another client's or a too-late call
    returns ``state`` itself."""
    if cdr.tenant != state.tenant or client_of(cdr, config.country) != state.client:
        return state
    known = state.get(cdr.call_id)
    if known is not None and known.version >= cdr.version:
        return state
    limit = _cutoff(state, config)
    if known is None and limit is not None and cdr.started_at < limit:
        return state  # older than the kept history
    others = tuple(c for c in state.calls if c.call_id != cdr.call_id)
    calls = tuple(sorted((*others, ClientCall.of(cdr)), key=_order))
    return _prune(replace(state, calls=calls), config)


def fold(tenant: str, client: str, cdrs: list[Cdr],
         config: CallbackConfig = DEFAULT_CONFIG) -> CallbackState:
    """Fold a whole sequence of revisions, as a replay does."""
    state = CallbackState(tenant, client)
    for cdr in cdrs:
        state = apply(state, cdr, config)
    return state


# --- interpretation: calls -> items ---------------------------------------------------------


@dataclass
class _Item:
    """Mutable accumulator of one item while the calls are walked."""

    first: ClientCall
    last_missed_at: datetime
    attempts: int = 1
    callback_attempts: int = 0
    closer: ClientCall | None = None


def _walk(calls: tuple[ClientCall, ...]) -> list[_Item]:
    out: list[_Item] = []
    current: _Item | None = None
    for call in calls:
        if call.missed:
            if current is None:
                current = _Item(first=call, last_missed_at=call.started_at)
                out.append(current)
            else:
                current.attempts += 1
                current.last_missed_at = call.started_at
        elif current is not None and call.answered_at is not None:
            current.closer = call
            current = None
        elif current is not None and call.unanswered_callback:
            current.callback_attempts += 1
    return out


def _to_item(state: CallbackState, acc: _Item, config: CallbackConfig) -> CallbackItem:
    closer = acc.closer
    tz_name = config.time_zone(state.tenant)
    flags = config.business_hours.flags(acc.first.started_at, zone(tz_name))
    closed_at = closer.answered_at if closer is not None else None
    opened_at = acc.first.started_at
    return CallbackItem(
        tenant=state.tenant, client=state.client, item_id=acc.first.call_id,
        version=state.version,
        status=CallbackStatus.CLOSED if closer is not None else CallbackStatus.OPEN,
        opened_at=opened_at, last_missed_at=acc.last_missed_at, attempts=acc.attempts,
        callback_attempts=acc.callback_attempts, closed_at=closed_at,
        closed_by_call_id=closer.call_id if closer is not None else None,
        called_back_by=closer.extension if closer is not None else None,
        callback_direction=closer.direction if closer is not None else None,
        time_to_callback_ms=(closed_at - opened_at) // _MS if closed_at is not None else None,
        night=flags["night"], weekend=flags["weekend"], time_zone=tz_name,
    )


def items(state: CallbackState, config: CallbackConfig = DEFAULT_CONFIG) -> list[CallbackItem]:
    """The client's callback items, oldest first (at most the last one is open)."""
    return [_to_item(state, acc, config) for acc in _walk(state.calls)]


def _content(item: CallbackItem) -> CallbackItem:
    return replace(item, version=0)


def item_changes(old: CallbackState, new: CallbackState,
                 config: CallbackConfig = DEFAULT_CONFIG) -> list[CallbackItem]:
    """Items that ``new`` adds or changes, and retractions of items it no longer has.

    An item whose first call was dropped by retention is not retracted: it is history.
    """
    if new is old:
        return []
    before = {i.item_id: i for i in items(old, config)}
    after = {i.item_id: i for i in items(new, config)}
    out = [i for key, i in after.items()
           if key not in before or _content(before[key]) != _content(i)]
    out += [replace(i, version=new.version, deleted=True) for key, i in before.items()
            if key not in after and new.get(key) is not None]
    return sorted(out, key=lambda i: (i.opened_at, i.item_id))


def resent_items(state: CallbackState, cdr: Cdr,
                 config: CallbackConfig = DEFAULT_CONFIG) -> list[CallbackItem]:
    """The items a repeated revision sends again ([] if it is not one).

    A revision is repeated when the state holds its call at that version or a later one.
    The worker writes the client's row to the changelog before sending the items; killed
    in between, it gets the revision again and finds nothing changed, while the items may
    never have left. So every current item of the client is sent again - a revision can
    change the item it falls into and every later one, and a client's items are few
    (bounded by ``retention``) - with the retractions found by comparing with the state
    without the call (the state before the revision, as far as items go: a call still in
    progress and unanswered counts for nothing). Versions are ``state.version``: those of
    the first delivery when this revision was the client's last, and the warehouse
    (ReplacingMergeTree on version) takes an item again with its content unchanged.
    """
    if cdr.tenant != state.tenant or client_of(cdr, config.country) != state.client:
        return []
    known = state.get(cdr.call_id)
    if known is None or known.version < cdr.version:
        return []
    without = replace(state, calls=tuple(c for c in state.calls if c.call_id != cdr.call_id))
    retracted = [i for i in item_changes(without, state, config) if i.deleted]
    return sorted([*items(state, config), *retracted], key=lambda i: (i.opened_at, i.item_id))


# --- pruning ---------------------------------------------------------------------------------


def _prune(state: CallbackState, config: CallbackConfig) -> CallbackState:
    """Drop calls before the cutoff and before every item that is open or closed after it."""
    limit = _cutoff(state, config)
    if limit is None or state.calls[0].started_at >= limit:
        return state
    live = [acc.first.started_at for acc in _walk(state.calls)
            if acc.closer is None or (acc.closer.answered_at or limit) >= limit]
    boundary = min([limit, *live])
    dropped = [c for c in state.calls if c.started_at < boundary]
    if not dropped:
        return state
    return replace(state, calls=tuple(c for c in state.calls if c.started_at >= boundary),
                   pruned_version=state.pruned_version + sum(c.version for c in dropped))
