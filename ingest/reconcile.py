"""Lost call ends: close the calls the edge no longer knows.

A call's end can be lost: Kamailio restarted mid-call (its dialogs are in memory only),
``tawag down`` stopped everything during calls, or a BYE never came. Its CDR would then
stay ``in_progress`` and its agents ``on_call``/``ringing`` for ever. The edge's live
dialogs (``dlg.list`` over JSON-RPC) are the truth, so ingest - which forwards every call
event and so knows which calls are open - compares the two:

- :class:`OpenCalls` follows the events the bridge forwards (:meth:`OpenCalls.track`):
  the dialogs of a call still open, its ringing legs and who answered, the last event
  time. It is saved next to the spool (``data_dir/ingest-open-calls.json``) whenever it
  changed, before the bridge reads on, so a restarted ingest still knows its calls.
- every ``reconcile_interval_s`` while the bridge holds a live evapi connection (the
  edge sends what it buffered during a gap first), :meth:`OpenCalls.due` takes the calls
  none of whose open dialogs the edge has listed for ``lost_end_grace_s``; a call older
  than the maximum call duration (+ ring time + grace) is due whatever the edge says or
  whether it answers at all.
- :func:`interruption` closes a due call: one ``call.ended`` with reason
  ``interrupted`` per open dialog (the answering agent as ``agent``), plus a
  ``call.cancelled`` of each leg still ringing (its agent), so the CDR fold closes the
  call and every agent fold releases its agent (``core.events``). Their time is the last
  one the call was known alive: its last event, or the last poll in which the edge still
  listed it (saved too), so talk time is kept to within ``reconcile_interval_s``. The
  poll's time is this host's clock, the edge's events Kamailio's: they run side by side.

Bound: a lost end is closed within ``lost_end_grace_s`` + ``reconcile_interval_s`` (12 s
by default) of the edge answering JSON-RPC and the bridge being connected again.
Repeats are harmless: the events' ids derive from the call, the dialog or leg, and the
last event time, so one sent twice (ingest died before saving) is dropped downstream.
A real end that still comes later is forwarded as usual; the folds keep the first end.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from core.events import Direction, Event, EventType, format_ts, parse_ts
from core.phone import is_extension
from ingest import metrics

__all__ = ["OpenCall", "OpenCalls", "interruption", "edge_dialogs",
           "Reconciler", "TrackingSink", "INTERRUPTED", "RECOVERED", "STATE_FORMAT"]

log = logging.getLogger("tawag.ingest.reconcile")

INTERRUPTED = "interrupted"
"""``reason`` of the events that close a call whose end was lost."""
RECOVERED = "recovered"
"""``reason`` of a ``call.ended`` made from the edge's own record: ``dlg.list`` listed the
answered dialog as ended (with its end time) but its ``call.ended`` never came."""
STATE_FORMAT = 1
_TERMINAL = frozenset({EventType.CALL_ENDED, EventType.CALL_FAILED,
                       EventType.CALL_CANCELLED, EventType.CALL_RECORDING_READY})
"""Events that never open a call the tracker does not know (they end it, or follow it)."""


def _dialog_of(leg_id: str) -> str:
    """The SIP Call-ID of a leg id "<Call-ID>#<branch>" (as ``streams.folds.cdr``)."""
    return leg_id.split("#", 1)[0]


@dataclass
class OpenCall:
    """What ingest knows of a call it has not seen end."""

    tenant: str
    call_id: str
    first_ts: datetime
    last_ts: datetime
    direction: str | None = None
    caller: str | None = None
    callee: str | None = None
    did: str | None = None
    dialogs: dict[str, str | None] = field(default_factory=dict)
    """Open dialogs (SIP Call-IDs) -> the agent who answered there (None: not answered)."""
    answered_at: dict[str, str] = field(default_factory=dict)
    """Dialog -> time it was answered (ISO), for the interruption's duration."""
    legs: dict[str, str] = field(default_factory=dict)
    """Legs still ringing (leg id) -> the agent rung."""
    seen_ts: datetime | None = None
    """When the edge last listed one of its dialogs (the reconciler's clock, UTC)."""
    edge_ended: dict[str, str] = field(default_factory=dict)
    """Dialog -> when the edge says it ended (ISO): listed as terminated by ``dlg.list``
    while its ``call.ended`` had not come."""

    @property
    def last_known(self) -> datetime:
        """The last time the call is known to have been alive: its last event, or the
        last time the edge listed it, whichever is later."""
        return self.last_ts if self.seen_ts is None else max(self.last_ts, self.seen_ts)

    def to_dict(self) -> dict[str, Any]:
        out = dict(vars(self))  # shallow: written out at once (asdict deep-copies: slow)
        out["first_ts"], out["last_ts"] = format_ts(self.first_ts), format_ts(self.last_ts)
        out["seen_ts"] = format_ts(self.seen_ts) if self.seen_ts else None
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OpenCall:
        seen = data.get("seen_ts")
        return cls(**{"edge_ended": {}, **data, "first_ts": parse_ts(data["first_ts"]),
                      "last_ts": parse_ts(data["last_ts"]),
                      "seen_ts": parse_ts(seen) if seen else None})


class OpenCalls:
    """The open calls, by call id; pure bookkeeping (no clock, no I/O).

    ``missing`` (not saved) holds since when, in the caller's monotonic seconds, each
    call has been absent from the edge's dialogs.
    """

    def __init__(self, calls: dict[str, OpenCall] | None = None) -> None:
        self.calls: dict[str, OpenCall] = calls or {}
        self.missing: dict[str, float] = {}
        self.changed = False

    # --- following the events ---------------------------------------------------------

    def track(self, ev: Event) -> None:
        """Fold one forwarded call event in (agent events and repeats change nothing)."""
        if not ev.call_id or ev.type.value.startswith("agent."):
            return
        call = self.calls.get(ev.call_id)
        if call is None:
            if ev.type in _TERMINAL:
                return
            call = self.calls[ev.call_id] = OpenCall(
                tenant=ev.tenant, call_id=ev.call_id, first_ts=ev.ts, last_ts=ev.ts,
                direction=ev.direction.value if ev.direction else None, caller=ev.caller,
                callee=ev.callee, did=ev.did)
        self._apply(call, ev)
        self.changed = True
        if not call.dialogs:
            del self.calls[ev.call_id]
            self.missing.pop(ev.call_id, None)

    def _apply(self, call: OpenCall, ev: Event) -> None:
        call.last_ts = max(call.last_ts, ev.ts)
        call.first_ts = min(call.first_ts, ev.ts)
        leg = ev.leg_id or ev.call_id or ""
        dialog = _dialog_of(leg)
        is_leg = leg != dialog
        kind = ev.type
        if kind not in _TERMINAL:
            call.dialogs.setdefault(dialog, None)
        if kind is EventType.CALL_RINGING:
            agent = ev.agent or ev.extra.get("leg_to") or ev.callee
            if agent:
                call.legs[leg] = str(agent)
        elif kind in (EventType.CALL_ANSWERED, EventType.CALL_PICKED_UP):
            call.dialogs[dialog] = ev.agent or ev.callee
            call.answered_at.setdefault(dialog, format_ts(ev.ts))
            self._close_legs(call, dialog)
        elif kind is EventType.CALL_FORWARDED:
            self._close_legs(call, None)
        elif kind in (EventType.CALL_FAILED, EventType.CALL_CANCELLED) and is_leg:
            call.legs.pop(leg, None)
        elif kind in (EventType.CALL_FAILED, EventType.CALL_CANCELLED):
            if call.dialogs.get(dialog) is None:  # after an answer: a fork branch, not the end
                self._end_dialog(call, dialog)
        elif kind is EventType.CALL_ENDED:
            self._end_dialog(call, dialog)

    @staticmethod
    def _close_legs(call: OpenCall, dialog: str | None) -> None:
        for leg in [leg for leg in call.legs if dialog is None or _dialog_of(leg) == dialog]:
            del call.legs[leg]

    def _end_dialog(self, call: OpenCall, dialog: str) -> None:
        call.dialogs.pop(dialog, None)
        call.answered_at.pop(dialog, None)
        self._close_legs(call, dialog)

    def forget(self, call_id: str) -> None:
        if self.calls.pop(call_id, None) is not None:
            self.changed = True
        self.missing.pop(call_id, None)

    # --- against the edge -------------------------------------------------------------

    def due(self, live: set[str] | None, *, now: float, wall: datetime, grace_s: float,
            max_age: timedelta, ended: Mapping[str, datetime] | None = None,
            ) -> list[tuple[OpenCall, str]]:
        """The calls to close now, each with why (``edge_lost`` or ``max_age``).

        ``live`` is the edge's dialogs (SIP Call-IDs), or None when the edge could not be
        asked (then only the age rule applies, and the grace counting is left as is).
        ``now`` is monotonic seconds; ``wall`` the current UTC time, for the age rule and
        as the time a listed call was last seen alive. ``ended`` (SIP Call-ID -> end time)
        are the dialogs the edge still lists as terminated: remembered on their call, whose
        end :func:`interruption` then takes from the edge instead of calling it lost.
        """
        out: list[tuple[OpenCall, str]] = []
        for call_id, call in self.calls.items():
            for dialog in call.dialogs:
                if ended and dialog in ended and dialog not in call.edge_ended:
                    call.edge_ended[dialog] = format_ts(ended[dialog])
                    self.changed = True
            if wall - call.first_ts > max_age:
                out.append((call, "max_age"))
                continue
            if live is None:
                continue
            if any(d in live for d in call.dialogs):
                self.missing.pop(call_id, None)
                call.seen_ts = wall
                self.changed = True
                continue
            since = self.missing.setdefault(call_id, now)
            if now - since >= grace_s:
                out.append((call, "edge_lost"))
        return out

    def reset_grace(self) -> None:
        """Forget the absences counted so far (the bridge lost evapi: events may be
        waiting in the edge's buffer, so absence counts only while connected)."""
        self.missing.clear()

    # --- on disk ----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {"format": STATE_FORMAT,
                "calls": [c.to_dict() for c in self.calls.values()]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OpenCalls:
        if data.get("format") != STATE_FORMAT:
            raise ValueError(f"open calls: unknown format {data.get('format')!r}")
        calls = (OpenCall.from_dict(c) for c in data.get("calls", []))
        return cls({c.call_id: c for c in calls})

    def save(self, path: Path) -> None:
        """Write atomically (a crash leaves the old file or the new one, never half)."""
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(self.to_dict()))  # every evapi read: orjson, not json
        os.replace(tmp, path)
        self.changed = False

    @classmethod
    def load(cls, path: Path) -> OpenCalls:
        """The saved calls; none if there is no file, or an unreadable one (logged)."""
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except FileNotFoundError:
            return cls()
        except (ValueError, KeyError, TypeError) as exc:
            log.error("open calls in %s unreadable (%s): starting with none", path, exc)
            return cls()


def _event_id(call_id: str, leg: str, last_ts: datetime) -> str:
    raw = f"{INTERRUPTED}|{call_id}|{leg}|{format_ts(last_ts)}"
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def interruption(call: OpenCall, why: str, detected_at: datetime, source: str) -> list[Event]:
    """The events that close ``call``: a ``call.cancelled`` per leg still ringing, then
    a ``call.ended`` (reason ``interrupted``) per open dialog, all at the last time the
    call was known alive (:attr:`OpenCall.last_known`)."""
    last = call.last_known
    base: dict[str, Any] = {
        "tenant": call.tenant, "ts": last, "source": f"{source}#reconciler",
        "call_id": call.call_id, "caller": call.caller, "callee": call.callee,
        "did": call.did, "reason": INTERRUPTED,
        "direction": Direction(call.direction) if call.direction else None,
        "extra": {"interrupted": why, "detected_at": format_ts(detected_at)},
    }
    events = [Event(event_id=_event_id(call.call_id, leg, last),
                    type=EventType.CALL_CANCELLED, leg_id=leg, agent=agent, **base)
              for leg, agent in sorted(call.legs.items())]
    for dialog, agent in sorted(call.dialogs.items()):
        answered = call.answered_at.get(dialog)
        end, fields = last, base
        if answered is not None and dialog in call.edge_ended:
            # the edge ended this dialog (dlg.list said so): its end, not a lost one
            end = max(parse_ts(call.edge_ended[dialog]), call.last_ts)
            fields = base | {"ts": end, "reason": RECOVERED,
                             "extra": {"recovered": "edge_dialog_ended",
                                       "detected_at": format_ts(detected_at)}}
        duration = (None if answered is None
                    else max(0, round((end - parse_ts(answered))
                                      / timedelta(milliseconds=1))))
        events.append(Event(event_id=_event_id(call.call_id, dialog, end),
                            type=EventType.CALL_ENDED, leg_id=dialog, agent=agent,
                            duration_ms=duration, **fields))
    return events


DLG_STATE_DELETED = 5
"""Kamailio's dialog state once ended; ``dlg.list`` still lists such a dialog for a few
seconds (until its BYE transaction is gone), with ``end_ts``."""


def edge_dialogs(result: Any) -> tuple[set[str], dict[str, datetime]]:
    """``dlg.list``'s dialogs: the SIP Call-IDs not ended, and the ended ones with the
    time the edge ended them (``end_ts``, whole seconds)."""
    live: set[str] = set()
    ended: dict[str, datetime] = {}
    if not isinstance(result, list):
        return live, ended
    for d in result:
        if not isinstance(d, dict) or not d.get("call-id"):
            continue
        if d.get("state") == DLG_STATE_DELETED and isinstance(d.get("end_ts"), int) \
                and d["end_ts"] > 0:
            ended[str(d["call-id"])] = datetime.fromtimestamp(d["end_ts"], UTC)
        else:
            live.add(str(d["call-id"]))
    return live, ended


def agents_of(call: OpenCall) -> list[str]:
    """The extensions an interruption releases (for the log)."""
    parties = {call.caller, call.callee, *call.dialogs.values(), *call.legs.values()}
    return sorted(p for p in parties if p and is_extension(p))


class Reconciler:
    """The I/O side: follows the bridge's events and closes lost calls on a timer.

    Usage (``ingest.service``)::

        reconciler = Reconciler(path, list_dialogs=lambda: kamailio_rpc(s, "dlg.list"),
                                emit=bridge.emit_events, connected=bridge.stats.ready.is_set,
                                source=ctx.source, interval_s=2, grace_s=10,
                                max_age=timedelta(seconds=7230))
        sink = TrackingSink(SpoolSink(spool, forwarder), reconciler)
        threading.Thread(target=reconciler.run, args=(stop,)).start()
    """

    def __init__(self, path: Path, *, list_dialogs: Callable[[], Any],
                 emit: Callable[[list[Event]], None], connected: Callable[[], bool],
                 source: str, interval_s: float, grace_s: float, max_age: timedelta,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.path = path
        self.list_dialogs = list_dialogs
        self.emit = emit
        self.connected = connected
        self.source = source
        self.interval_s = interval_s
        self.grace_s = grace_s
        self.max_age = max_age
        self.clock = clock
        self.wall = wall
        self.open = OpenCalls.load(path)
        self.interrupted_total = 0
        self._lock = threading.Lock()
        if self.open.calls:
            log.info("%d calls open at the last stop; checking them against the edge",
                     len(self.open.calls))

    def track(self, events: Iterable[Event]) -> None:
        with self._lock:
            for ev in events:
                self.open.track(ev)

    def save(self) -> None:
        """Persist if anything changed (the bridge calls it before reading on)."""
        with self._lock:
            if self.open.changed:
                self.open.save(self.path)

    def step(self) -> list[Event]:
        """One comparison with the edge; the events sent to close lost calls. With no
        call open there is nothing to compare: the edge is not asked."""
        with self._lock:
            if not self.open.calls:
                return []
        if not self.connected():
            with self._lock:
                self.open.reset_grace()
                due = self.open.due(None, now=self.clock(), wall=self.wall(),
                                    grace_s=self.grace_s, max_age=self.max_age)
        else:
            ended: dict[str, datetime] = {}
            try:
                live: set[str] | None
                live, ended = edge_dialogs(self.list_dialogs())
            except Exception as exc:  # the edge restarting: try again next time
                log.debug("dlg.list failed: %s", exc)
                live = None
            with self._lock:
                if live is None:
                    self.open.reset_grace()
                due = self.open.due(live, now=self.clock(), wall=self.wall(),
                                    grace_s=self.grace_s, max_age=self.max_age, ended=ended)
        sent: list[Event] = []
        for call, why in due:
            events = interruption(call, why, self.wall(), self.source)
            self.emit(events)
            with self._lock:
                self.open.forget(call.call_id)
            sent.extend(events)
            if any(e.reason == RECOVERED for e in events):
                log.warning("call %s: its call.ended never came, but the edge ended the "
                            "dialog at %s: closed from the edge's record (reason %s)",
                            call.call_id, ", ".join(sorted(call.edge_ended.values())),
                            RECOVERED)
                metrics.CALL_ENDS_RECOVERED.inc()
                continue
            log.warning("call %s interrupted (%s): its end was lost; closed at %s, "
                        "releasing %s", call.call_id, why, format_ts(call.last_known),
                        ", ".join(agents_of(call)) or "no extension")
            self.interrupted_total += 1
            metrics.CALLS_INTERRUPTED.labels(why).inc()
        self.save()
        return sent

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self.interval_s):
            try:
                self.step()
            except Exception:  # never let the thread die: the next step tries again
                log.exception("reconciling with the edge failed")
        self.save()


class TrackingSink:
    """A bridge sink that lets the reconciler follow every event it forwards, and saves
    the open calls with each flush (once per evapi read, before the bridge reads on)."""

    def __init__(self, sink: Any, reconciler: Reconciler) -> None:
        self.sink = sink
        self.reconciler = reconciler

    def event(self, ev: Event) -> None:
        self.sink.event(ev)
        self.reconciler.track([ev])

    def dead_letter(self, record: bytes) -> None:
        self.sink.dead_letter(record)

    def flush(self) -> None:
        self.sink.flush()
        self.reconciler.save()
