"""Call assembly stage: call events in, CDR revisions out (the rules live in folds.cdr).

Per message: decode with :func:`core.events.from_json`, fold into the call's row of the
calls table, and when the fold changed the call, send the new CDR revision to
``tawag.cdrs`` keyed by call id. Input that cannot be decoded or folded raises; the
runner (:mod:`streams.runner`) dead-letters it, so the partition goes on.

A repeated event (one the call already holds) sends the call's current revision again,
same version. The row is written to the changelog before the revision is sent; a worker
killed between the two comes back with the row folded but the event's offset not
committed, so the event is delivered again and finds the call unchanged. Sending nothing
then would lose that revision for good; sending the current one makes it good, and the
warehouse (ReplacingMergeTree on version) and the CRM outbox (keyed by call id) take the
same revision twice as once. evapi's own repeats are re-sent too: rare, and as harmless.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from faust.types import CollectionT

from core.events import Event, InvalidEvent, from_json
from core.records import Cdr, cdr_to_json
from streams.folds.cdr import (
    FOLDED_TYPES,
    CallState,
    IncompleteCall,
    apply,
    resends,
    to_cdr,
)

if TYPE_CHECKING:
    from streams.topology import Output

__all__ = ["AGENT_NAME", "step", "decode", "fold_into"]

AGENT_NAME = "cdr-assembly"

log = logging.getLogger(__name__)


def step(calls: CollectionT, key: Any, value: Any) -> list[Output]:
    """One call event: the CDR revision to send on ``cdrs``, if any."""
    cdr = fold_into(calls, decode(value))
    return [] if cdr is None else [("cdrs", cdr.call_id.encode(), cdr_to_json(cdr))]


def decode(value: Any) -> Event:
    """One message value as an event; a tombstone or non-bytes value is invalid too.

    The same message is decoded by the CDR stage, the agent router and once per agent it
    concerns: an event (frozen, a pure function of the bytes) is remembered by its bytes
    for the next few messages (:data:`_EVENTS`)."""
    if not isinstance(value, bytes | str):
        raise InvalidEvent(f"value: expected JSON bytes, got {type(value).__name__}")
    event = _EVENTS.get(value)
    if event is None:
        event = from_json(value)
        if len(_EVENTS) >= _EVENTS_MAX:
            _EVENTS.clear()
        _EVENTS[value] = event
    return event


_EVENTS: dict[bytes | str, Event] = {}
"""Raw message -> its event (valid ones only: an invalid one raises every time)."""
_EVENTS_MAX = 4096


def fold_into(calls: CollectionT, event: Event) -> Cdr | None:
    """Fold ``event`` into its call's table row; the CDR revision to send, or None.

    A new event gives the new revision; a repeated one gives the current revision again
    (the first delivery's may have been lost in a crash, see the module docstring). None
    for other types and while the call's offer is missing.
    """
    if event.type not in FOLDED_TYPES:
        return None  # agent.* and transfer events belong to other agents
    assert event.call_id is not None  # every call.* event has one (schema v1)
    row = calls.get(event.call_id)
    state = _decoded(event.call_id, row) if row is not None else CallState(event.call_id)
    new = apply(state, event)
    if new is state:  # a repeated delivery: the call already holds this event
        return _revision(state) if resends(state, event) else None
    cdr = _revision(new)
    row = _row(new, row, state)
    calls[event.call_id] = row
    _remember(event.call_id, row, new)
    return cdr


_DECODED: dict[str, tuple[dict[str, Any], CallState]] = {}
"""call id -> (the row object this process last wrote, its state), as the agents table's
(``streams.agents.agent_stats``): reused only while the table still holds *that very
object* (``is``), so a row recovered from the changelog is decoded afresh. Bounded: the
oldest written call is forgotten first (its next event decodes the row)."""
_DECODED_MAX = 20_000


def _row(new: CallState, row: dict[str, Any] | None, state: CallState) -> dict[str, Any]:
    """``new.to_dict()``, with the event objects of ``row`` (``state``'s own, as written
    here) reused for the events it already held: only the new event is converted."""
    cached = _DECODED.get(new.call_id)
    if row is None or cached is None or cached[0] is not row or cached[1] is not state:
        return new.to_dict()
    done = {id(ev): out for ev, out in zip(state.events, row["events"], strict=True)}
    return new.to_dict_with(done)


def _decoded(call_id: str, row: dict[str, Any]) -> CallState:
    cached = _DECODED.get(call_id)
    if cached is not None and cached[0] is row:
        return cached[1]
    return CallState.from_dict(row)


def _remember(call_id: str, row: dict[str, Any], state: CallState) -> None:
    _DECODED.pop(call_id, None)
    if len(_DECODED) >= _DECODED_MAX:
        del _DECODED[next(iter(_DECODED))]
    _DECODED[call_id] = (row, state)


def _revision(state: CallState) -> Cdr | None:
    """The CDR, or None while the call's offer is still missing (events out of order)."""
    try:
        return to_cdr(state)
    except IncompleteCall as exc:
        log.info("holding CDR back: %s", exc)
        return None
