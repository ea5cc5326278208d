"""One way to build schema-v1 events in tests (every test suite imports this module).

    ev = call_events("c1", caller="101", callee="102", direction=Direction.INTERNAL)
    ev(EventType.CALL_OFFERED, 0)                    # at T0 + 0 ms
    ev(EventType.CALL_ANSWERED, 4_000, agent="102")  # fields override the call's defaults
    ev(EventType.CALL_ENDED, 9_000, event_id="end")  # an explicit id (repeats, forks)

Times are offsets from ``t0`` in milliseconds (``unit="s"`` for seconds); the default
event id, ``<call>/<type>@<offset>``, is deterministic like the edge's. Agent events
(``agent.*``) carry no call fields.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from core.events import Event, EventType

__all__ = ["T0", "call_events", "event"]

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
AGENT_TYPES = {EventType.AGENT_REGISTERED, EventType.AGENT_UNREGISTERED}


def event(kind: EventType, ts: datetime, *, event_id: str, tenant: str = "acme",
          source: str = "kamailio@127.0.0.1", **fields: Any) -> Event:
    """One event with every envelope field given."""
    return Event(event_id=event_id, type=kind, tenant=tenant, ts=ts, source=source, **fields)


def call_events(call_id: str, *, t0: datetime = T0, unit: str = "ms", tenant: str = "acme",
                source: str = "kamailio@127.0.0.1", **defaults: Any,
                ) -> Callable[..., Event]:
    """A builder of one call's events: ``ev(kind, offset, event_id=None, **fields)``."""
    step = timedelta(milliseconds=1) if unit == "ms" else timedelta(seconds=1)

    def ev(kind: EventType, offset: float, event_id: str | None = None,
           **fields: Any) -> Event:
        base = {} if kind in AGENT_TYPES else {"call_id": call_id, **defaults}
        return event(kind, t0 + offset * step, tenant=tenant, source=source,
                     event_id=event_id or f"{call_id}/{kind.value}@{offset}",
                     **(base | fields))

    return ev
