"""The CDR record: what ``streams`` publishes to ``tawag.cdrs`` and the warehouse stores.

One CDR per call. Each meaningful change publishes a new revision with a higher
``version`` (the number of distinct events folded in so far), keyed by ``call_id``; the
warehouse keeps the highest version (ReplacingMergeTree on ``version``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from enum import StrEnum
from typing import Any

from ingest.events import format_ts, parse_ts

__all__ = ["Disposition", "Cdr", "cdr_to_json", "cdr_from_json"]


class Disposition(StrEnum):
    """How a call ended, from the caller's side (Asterisk/CGRateS vocabulary)."""

    IN_PROGRESS = "in_progress"
    ANSWERED = "answered"
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    CANCELLED = "cancelled"
    FAILED = "failed"


@dataclass(frozen=True)
class Cdr:
    tenant: str
    call_id: str
    version: int
    direction: str | None
    caller: str | None
    callee: str | None
    did: str | None
    agent: str | None
    """Extension that answered, if any."""
    started_at: datetime
    answered_at: datetime | None
    ended_at: datetime | None
    ring_ms: int
    """Time from offer to answer, or to the end for unanswered calls (the caller's wait)."""
    talk_ms: int
    disposition: Disposition
    sip_code: int | None
    reason: str | None
    hangup_by: str | None
    closed: bool
    recording: str | None
    mos: float | None
    packet_loss: float | None
    jitter_ms: float | None
    event_count: int
    last_event_ts: datetime


_TS_FIELDS = ("started_at", "answered_at", "ended_at", "last_event_ts")


def cdr_to_json(cdr: Cdr) -> bytes:
    out: dict[str, Any] = asdict(cdr)
    out["disposition"] = cdr.disposition.value
    for name in _TS_FIELDS:
        out[name] = format_ts(out[name]) if out[name] is not None else None
    return json.dumps(out, separators=(",", ":"), sort_keys=True).encode()


def cdr_from_json(raw: bytes | str) -> Cdr:
    data = json.loads(raw)
    known = {f.name for f in fields(Cdr)}
    values = {k: v for k, v in data.items() if k in known}
    values["disposition"] = Disposition(values["disposition"])
    for name in _TS_FIELDS:
        if values.get(name) is not None:
            values[name] = parse_ts(values[name])
    return Cdr(**values)
