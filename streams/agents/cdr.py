"""Call assembly agent: call events in, CDR revisions out (the rules live in folds.cdr).

Per message: decode with :func:`ingest.events.from_json`, fold into the call's row of the
calls table, and when the fold changed the call, send the new CDR revision to
``tawag.cdrs`` keyed by call id. Input that cannot be decoded or folded goes to the
dead-letter topic with the reason and is counted, so one bad message never stalls the
partition behind it (the way wazo-call-logd isolates one failing call).

A repeated event (one the call already holds) sends the call's current revision again,
same version. The row is written to the changelog before the revision is sent; a worker
killed between the two comes back with the row folded but the event's offset not
committed, so the event is delivered again and finds the call unchanged. Sending nothing
then would lose that revision for good; sending the current one makes it good, and the
warehouse (ReplacingMergeTree on version) and the CRM outbox (keyed by call id) take the
same revision twice as once. evapi's own repeats are re-sent too: rare, and as harmless.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import faust
from faust.types import AgentT, CollectionT, EventT, StreamT

from ingest.events import Event, InvalidEvent, from_json
from streams.folds.cdr import (
    FOLDED_TYPES,
    CallState,
    IncompleteCall,
    apply,
    resends,
    to_cdr,
)
from streams.records import Cdr, cdr_to_json
from streams.tables import Tables
from streams.topics import Topics

__all__ = ["AGENT_NAME", "register", "decode", "fold_into", "dead_letter_record"]

AGENT_NAME = "cdr-assembly"

log = logging.getLogger(__name__)


def register(app: faust.App, topics: Topics, tables: Tables) -> AgentT:
    """Declare the call-assembly agent on ``app``; it yields what it sent (for tests)."""

    @app.agent(topics.call_events, name=AGENT_NAME)
    async def assemble_calls(stream: StreamT) -> AsyncIterator[Any]:
        """Fold every call event into its call and publish each new CDR revision."""
        async for event in stream.events():
            try:
                cdr = fold_into(tables.calls, decode(event.value))
            except Exception as exc:  # bad input or a fold bug: park it, keep going
                yield await _dead_letter(topics, tables, event, exc)
                continue
            if cdr is not None:
                await topics.cdrs.send(key=cdr.call_id.encode(), value=cdr_to_json(cdr))
            yield cdr

    return assemble_calls


def decode(value: Any) -> Event:
    """One message value as an event; a tombstone or non-bytes value is invalid too."""
    if not isinstance(value, bytes | str):
        raise InvalidEvent(f"value: expected JSON bytes, got {type(value).__name__}")
    return from_json(value)


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
    state = CallState.from_dict(row) if row is not None else CallState(event.call_id)
    new = apply(state, event)
    if new is state:  # a repeated delivery: the call already holds this event
        return _revision(state) if resends(state, event) else None
    cdr = _revision(new)
    calls[event.call_id] = new.to_dict()
    return cdr


def _revision(state: CallState) -> Cdr | None:
    """The CDR, or None while the call's offer is still missing (events out of order)."""
    try:
        return to_cdr(state)
    except IncompleteCall as exc:
        log.info("holding CDR back: %s", exc)
        return None


async def _dead_letter(
    topics: Topics, tables: Tables, event: EventT, exc: Exception
) -> dict[str, Any]:
    """Send the message and the reason to the dead-letter topic and count it per partition."""
    msg = event.message
    record = dead_letter_record(msg.topic, msg.partition, msg.offset, msg.key, event.value, exc)
    if not isinstance(exc, InvalidEvent):
        log.exception("call assembly failed on %s[%s]@%s", msg.topic, msg.partition, msg.offset)
    log.warning("dead-lettered %s[%s]@%s: %s", msg.topic, msg.partition, msg.offset,
                record["error"])
    tables.dead_letters[f"{msg.topic}:{msg.partition}"] += 1
    value = json.dumps(record, separators=(",", ":"), sort_keys=True).encode()
    await topics.dead_letter.send(key=msg.key, value=value)
    return record


def dead_letter_record(
    topic: str, partition: int, offset: int, key: Any, value: Any, exc: Exception
) -> dict[str, Any]:
    """The dead-letter JSON: where the message came from, why it failed, and its bytes."""
    error = str(exc) if isinstance(exc, InvalidEvent) else f"{type(exc).__name__}: {exc}"
    text, encoding = _as_text(value)
    return {
        "source_topic": topic,
        "partition": partition,
        "offset": offset,
        "key": _as_text(key)[0],
        "error": error,
        "value": text,
        "value_encoding": encoding,
    }


def _as_text(raw: Any) -> tuple[str | None, str]:
    """UTF-8 text when possible, else base64, so the exact bytes can be replayed."""
    if raw is None or isinstance(raw, str):
        return raw, "utf-8"
    if not isinstance(raw, bytes):
        return repr(raw), "repr"
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii"), "base64"


