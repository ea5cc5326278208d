"""Call assembly: fold one call's events into its CDR (wazo-call-logd's interpretor, streamed).

The state is the set of distinct events seen for the call, kept sorted by event time
(then lifecycle rank, then ``event_id``). :func:`to_cdr` interprets that sorted sequence
through a dispatch table keyed by :class:`~core.events.EventType`. Keeping the events
rather than a running summary is what makes the CDR independent of arrival order: a late
``call.answered`` that arrives after ``call.ended`` lands in its place and the CDR is
rebuilt as if it had come on time, so a replay of the topic from offset 0 (or any
reshuffle of one call's events) yields identical CDRs. No wall-clock time is read here.

    state = CallState("1-2345@127.0.0.1")
    for event in events:
        state = apply(state, event)   # returns ``state`` itself for a repeat or an ignored type
    cdr = to_cdr(state)               # IncompleteCall until the call.offered event is in

Rules (caller's view, Asterisk/CGRateS vocabulary, see ``reference/peer-survey.md``):

- started_at = the time of the call's own ``call.offered`` (no CDR exists before it, so it
  never moves between revisions: a late event stamped earlier does not change it, and the
  warehouse keys the call by its day, ``call_day``); answered_at = first call.answered;
  ended_at = time of the terminal event; ring_ms = answered_at - started_at when answered,
  else ended_at - started_at; talk_ms = ended_at - answered_at.
- Terminal: call.ended always; call.failed / call.cancelled only while nobody answered
  (after an answer they are other fork branches being cancelled, not the call's end).
- Disposition: answered; busy (486, 600); no_answer (408, 480); cancelled (487 or
  call.cancelled); failed (any other final code); interrupted (``call.ended`` reason
  ``interrupted``: ingest closed a call whose end was lost, at its last known event time;
  a real end arriving later does not change it; an end *recovered* from the edge's own
  dialog record, reason ``recovered``, is an ordinary end); in_progress until a terminal
  event.
- agent = the extension that answered; on an outbound call the extension that placed it
  (answered or not: the party answering there is the client).
- version = event_count = number of distinct events folded.

Participants (one pass over the sorted events, see :class:`_Legs`):

- a *leg* is one target rung: it starts at its first ``call.ringing`` (``leg_id``, the
  target in ``extra.leg_to``, else the callee). An answer with no ringing leg of its
  agent makes one up, ringing from the offer - under the id of that agent's ringing
  stamped after the answer if there is one (180 and 200 back to back in two workers).
  A leg's own failure that names its agent with no ringing before it (a busy phone
  answers 486 at once) makes the leg too, from and until the failure.
- a leg ends at the first of: its own ``call.failed``/``call.cancelled`` (an event whose
  ``leg_id`` names the leg, not the call: outcome from the code), a ``call.forwarded``
  (the edge forwards only once every branch of the current target failed: outcome = the
  forward's reason), a ``call.picked_up`` (``picked_up``), an answer (the answering
  agent's leg ``answered``, every other open leg ``cancelled`` - tm CANCELs them), the
  call's terminal event (outcome = the call's disposition).
- A failure that names a leg is not the call's end; only call-level failures
  (``leg_id`` absent or equal to ``call_id``, as the edge sends them today) are.
- Limitation: serial hunting inside one group emits no event between members today, so
  such legs all end at the answer or the call's end; with per-branch ``call.failed``
  events (``leg_id`` set) they get their real end.
- forwards from ``call.forwarded`` (extra forwarded_from/forwarded_to/hop, reason);
  transfers from ``call.transferred`` (extra transferred_from/transferred_to/kind).
- pickup (*8): the edge adds a branch to the ringing call toward the picker's phone,
  which rings (its own leg) and answers; ``call.picked_up`` and the picker's
  ``call.answered`` come from different workers, in either order. Whichever is first
  in event time answers the picker's leg (``#pickup:<agent>`` made up if it never
  rang) and ends the other ringing legs ``picked_up``; the other changes nothing. A
  leg's own 487 in a picked-up dialog is ``picked_up`` too, before or after the answer.
- dialogs: ``call_id`` is the Tawag call, and the dialog of an event is its ``leg_id``
  up to the first ``#`` (a SIP Call-ID; ``#`` cannot occur in one, RFC 3261 25.1), the
  call's own dialog when ``leg_id`` is absent. A transfer's new dialog (the transferee
  calls the target: a new SIP Call-ID, same call id) starts with its own
  ``call.offered``; its answer/ringing/end/failure close only its own legs. A failure
  whose ``leg_id`` is such a dialog (no ``#``) ends that dialog, it is not a leg failure.
  The call is closed once its own dialog has its terminal event (rules above) and every
  other dialog offered has ended or failed; ended_at, hangup_by and reason come from the
  last BYE (``call.ended``) among those terminal events - when the parties really hung
  up - or from the last failure if no dialog was talked on; the disposition from the
  call's own dialog. So a CDR closed when the transferor hung up opens again (a higher
  version) when the transferee's new dialog is folded in, and a blind transfer to a
  busy target stays ``answered``, ends (talk_ms, hangup_by, reason ``bye``) at the BYE
  that really ended the talk, not at the failed attempt, which shows as the target's
  leg (``busy``; a leg that failed without ringing spans its failure's instant).
- hold_ms: the time, in event time, during which at least one party of a dialog held
  it (``call.held`` .. ``call.resumed`` of the same party, ``agent``/``extra.held_by``),
  summed over the call; a hold still on ends at the dialog's end, or, while the dialog
  is open, at the latest event folded. A hold stamped at or after its dialog's end
  (the re-INVITE's 200 and the BYE in two workers) counts nothing.
- route_target: the offer's ``extra.route_target``; route_group: the first ``extra.group``
  of the call's events (the offer names it when a DID routes to a group; a forward to a
  group names it on the events after it).
- pdd_ms (RFC 6076 SRD, post-dial delay): for a call routed to ``tel:`` (out through the
  trunk; ``mask:`` too), the first ringing or answer of the call's own dialog minus the offer.
- recording: ``call.recording_ready`` of one dialog (``leg_id``; extra file/recording,
  size, duration in s); the CDR's recording is that of the last dialog recorded (a
  transferred call's second dialog), see :func:`_recording`. ``recorded`` also from
  ``call.ended``'s ``extra.recorded``. Media quality and RTP counters from the latest
  ``media`` report (call.ended).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import reduce
from typing import Any

from core.events import Direction, Event, EventType, from_dict, to_dict
from core.records import Cdr, Disposition, Forward, Leg, LegOutcome, Transfer

__all__ = [
    "CallState",
    "IncompleteCall",
    "FOLDED_TYPES",
    "STATE_FORMAT",
    "apply",
    "fold",
    "resends",
    "to_cdr",
]

STATE_FORMAT = 1
"""Version of :meth:`CallState.to_dict`'s shape, stored in the table's changelog."""

ANSWERED_CODE = 200
INTERRUPTED_REASON = "interrupted"
"""``reason`` of the ``call.ended`` that closes a call whose end was lost (core.events)."""
CANCELLED_CODE = 487
"""Request Terminated: the caller hung up (CANCEL) while it rang."""

_FAILURE_DISPOSITIONS = {
    486: Disposition.BUSY,  # Busy Here
    600: Disposition.BUSY,  # Busy Everywhere
    408: Disposition.NO_ANSWER,  # Request Timeout: the edge's no-answer timer fired
    480: Disposition.NO_ANSWER,  # Temporarily Unavailable: nobody picked up / not reachable
    CANCELLED_CODE: Disposition.CANCELLED,
}

_MS = timedelta(milliseconds=1)

# Tie-break for events stamped in the same millisecond: the SIP lifecycle order.
_RANK = {
    EventType.CALL_OFFERED: 0,
    EventType.CALL_FORWARDED: 1,
    EventType.CALL_RINGING: 2,
    EventType.CALL_PICKED_UP: 3,
    EventType.CALL_ANSWERED: 4,
    EventType.CALL_TRANSFERRED: 5,
    EventType.CALL_FAILED: 6,
    EventType.CALL_CANCELLED: 6,
    EventType.CALL_ENDED: 7,
    EventType.CALL_RECORDING_READY: 8,
    EventType.CALL_HELD: 5,
    EventType.CALL_RESUMED: 5,
}


class IncompleteCall(ValueError):
    """The call cannot make a CDR yet: no ``call.offered`` event has been folded."""


@dataclass(frozen=True)
class CallState:
    """The distinct events of one call in event-time order; the value of the calls table.

        state = CallState.from_dict(table[call_id]) if call_id in table else CallState(call_id)
        table[call_id] = apply(state, event).to_dict()
    """

    call_id: str
    events: tuple[Event, ...] = ()

    def has(self, event_id: str) -> bool:
        """True if an event with this id was already folded (evapi and retries repeat)."""
        return any(ev.event_id == event_id for ev in self.events)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form; events use the event log's own wire shape, nothing new."""
        return self.to_dict_with({})

    def to_dict_with(self, done: dict[int, dict[str, Any]]) -> dict[str, Any]:
        """:meth:`to_dict`, taking an event's object from ``done`` (``id(event)`` -> its
        ``to_dict``, for events alive in the caller's hands) instead of converting it."""
        events = [done.get(id(ev)) or to_dict(ev) for ev in self.events]
        return {"format": STATE_FORMAT, "call_id": self.call_id, "events": events}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CallState:
        """Inverse of :meth:`to_dict`; refuses a shape it does not know."""
        if data.get("format") != STATE_FORMAT:
            raise ValueError(f"call state: unknown format {data.get('format')!r}")
        events = tuple(sorted((from_dict(ev) for ev in data["events"]), key=_order))
        return cls(call_id=data["call_id"], events=events)


def _order(ev: Event) -> tuple[datetime, int, str]:
    """Sort key: event time, then lifecycle rank, then event_id (stable, arrival-free)."""
    return (ev.ts, _RANK.get(ev.type, 9), ev.event_id)


def apply(state: CallState, event: Event) -> CallState:
    """Fold one event in; a repeat or a type the fold ignores returns ``state`` itself."""
    if event.type not in _HANDLERS or state.has(event.event_id):
        return state
    if event.call_id != state.call_id:
        raise ValueError(f"event {event.event_id} of call {event.call_id!r} "
                         f"folded into call {state.call_id!r}")
    return CallState(state.call_id, tuple(sorted((*state.events, event), key=_order)))


def resends(state: CallState, event: Event) -> bool:
    """Whether ``event`` is a repeat that must send ``state``'s current CDR revision again.

    A repeat is a folded type whose ``event_id`` the state already holds. It is redelivered
    either by evapi or, after a crash, because the worker wrote the call's row to the
    changelog but died before the revision was sent and the offset committed: the current
    revision, sent again with its version, makes good what may have been lost. A state
    with no offer yet has nothing to send (:class:`IncompleteCall`); the caller checks that.
    """
    return event.type in _HANDLERS and state.has(event.event_id)


def fold(call_id: str, events: Iterable[Event]) -> CallState:
    """Fold a whole sequence, as a replay does."""
    return reduce(apply, events, CallState(call_id))


# --- interpretation: sorted events -> accumulator (wazo's RawCallLog) -------------------


@dataclass
class _OpenLeg:
    leg_id: str
    target: str | None
    rang_from: datetime
    rang_until: datetime | None = None
    answered: bool = False
    outcome: LegOutcome = LegOutcome.RINGING

    def close(self, at: datetime, outcome: LegOutcome) -> None:
        if self.rang_until is None:
            self.rang_until, self.outcome = at, outcome
            self.answered = outcome is LegOutcome.ANSWERED

    def freeze(self) -> Leg:
        return Leg(self.leg_id, self.target, self.rang_from, self.rang_until,
                   self.answered, self.outcome)


@dataclass
class _Legs:
    """The legs rung so far, by leg id, in the order they started ringing."""

    by_id: dict[str, _OpenLeg] = field(default_factory=dict)
    rung_later: dict[tuple[str, str | None], str] = field(default_factory=dict)
    """(dialog, target) -> the leg id of the target's first ``call.ringing`` in the call.
    A phone that answers at once sends 180 and 200 back to back, and two workers may
    stamp the ringing after the answer: the answered leg then takes that leg's id (the
    late ringing finds it and changes nothing), the same leg as in the usual order."""

    def open(self, dialog: str | None = None) -> list[_OpenLeg]:
        """Legs still ringing (of one dialog when ``dialog`` is given)."""
        return [leg for leg in self.by_id.values() if leg.rang_until is None
                and (dialog is None or _dialog_of(leg.leg_id) == dialog)]

    def ring(self, leg_id: str, target: str | None, at: datetime) -> None:
        self.by_id.setdefault(leg_id, _OpenLeg(leg_id, target, at))

    def close_all(self, at: datetime, outcome: LegOutcome, dialog: str | None = None) -> None:
        for leg in self.open(dialog):
            leg.close(at, outcome)

    def answer(self, dialog: str, agent: str | None, at: datetime, since: datetime,
               pickup: bool = False) -> None:
        """``agent`` answered ``dialog``: its open leg there (made up if none) answered,
        the dialog's other legs cancelled - or ``picked_up`` when ``agent`` took the call
        with a pickup (its made-up leg is then ``#pickup:<agent>``, from ``at``)."""
        mine = [leg for leg in self.open(dialog) if leg.target == agent]
        if not mine and not any(leg.target == agent and leg.answered
                                and _dialog_of(leg.leg_id) == dialog
                                for leg in self.by_id.values()):
            leg_id = self.rung_later.get((dialog, agent))
            if leg_id is None or leg_id in self.by_id:
                leg_id = (f"{dialog}#pickup:{agent}" if pickup
                          else _made_up_leg_id(dialog, agent, self.by_id))
            self.ring(leg_id, agent, at if pickup else since)
            mine = [self.by_id[leg_id]]
        for leg in mine[:1]:
            leg.close(at, LegOutcome.ANSWERED)
        self.close_all(at, LegOutcome.PICKED_UP if pickup else LegOutcome.CANCELLED, dialog)


def _dialog_of(leg_id: str) -> str:
    """The SIP dialog (Call-ID) of a leg id "<Call-ID>#<branch>" or of a dialog id."""
    return leg_id.split("#", 1)[0]


def _made_up_leg_id(call_id: str, agent: str | None, known: dict[str, _OpenLeg]) -> str:
    base = f"{call_id}#{agent or 'answer'}"
    return base if base not in known else f"{base}#{len(known)}"


@dataclass
class _Call:
    """Mutable accumulator filled by the handlers; only :func:`to_cdr` reads it."""

    call_id: str
    offer: Event | None = None
    answer: Event | None = None
    end: Event | None = None
    failure: Event | None = None
    recordings: dict[str, _Recording] = field(default_factory=dict)
    """Each dialog's own recording, by SIP Call-ID (a transferred call has one per dialog)."""
    recorded: bool = False
    media: dict[str, float] = field(default_factory=dict)
    legs: _Legs = field(default_factory=_Legs)
    forwards: list[Forward] = field(default_factory=list)
    transfers: list[Transfer] = field(default_factory=list)
    own_answer: Event | None = None
    """The first answer of the call's own dialog (``answer`` is the first of any)."""
    dialogs: dict[str, _Dialog] = field(default_factory=dict)
    """The other dialogs of the call (a transferee's new call), by SIP Call-ID."""
    holds: _Holds = field(default_factory=lambda: _Holds())
    pickups: dict[str, str | None] = field(default_factory=dict)
    """Dialog -> the agent who took it with a pickup (from every ``call.picked_up`` of
    the call, known before the events are run, so the answer and the pickup give the
    same legs whichever is stamped first)."""

    @property
    def ring_start(self) -> datetime | None:
        return self.offer.ts if self.offer is not None else None

    def dialog(self, ev: Event) -> str:
        return _dialog_of(ev.leg_id or self.call_id)


@dataclass
class _Recording:
    """One dialog's recording: its file, size and duration (as far as announced)."""

    file: str | None = None
    size: int | None = None
    duration_ms: int | None = None


@dataclass
class _Dialog:
    """Another dialog of the call: its offer and the event that ended it."""

    offer: Event
    end: Event | None = None


@dataclass
class _Holds:
    """Who holds which dialog since when; the closed intervals summed in ``total_ms``."""

    held: dict[str, dict[str, datetime]] = field(default_factory=dict)
    total_ms: int = 0
    ended: set[str] = field(default_factory=set)
    """Dialogs that have ended: a hold stamped after its dialog's BYE (another worker's
    clock, the hold's 200 racing the BYE) is over before it starts."""

    def hold(self, dialog: str, party: str, at: datetime) -> None:
        if dialog not in self.ended:
            self.held.setdefault(dialog, {}).setdefault(party, at)

    def resume(self, dialog: str, party: str, at: datetime) -> None:
        parties = self.held.get(dialog, {})
        if party in parties and len(parties) == 1:
            self.total_ms += _ms(parties[party], at)
            del self.held[dialog]
        elif party in parties:
            # another party still holds: the interval goes on from the earliest hold
            since = min(parties.values())
            del parties[party]
            parties[min(parties, key=parties.__getitem__)] = since

    def end(self, dialog: str, at: datetime) -> None:
        self.ended.add(dialog)
        parties = self.held.pop(dialog, {})
        if parties:
            self.total_ms += _ms(min(parties.values()), at)

    def until(self, at: datetime) -> int:
        """Hold time with the holds still on counted up to ``at``."""
        return self.total_ms + sum(_ms(min(p.values()), at) for p in self.held.values() if p)


def _is_leg_event(ev: Event) -> bool:
    """A failure of one branch (leg_id names a leg), not of the whole call."""
    return ev.leg_id is not None and ev.leg_id != ev.call_id


def _on_offered(ev: Event, call: _Call) -> _Call:
    dialog = call.dialog(ev)
    if dialog == call.call_id:
        call.offer = call.offer or ev
    elif dialog not in call.dialogs:
        call.dialogs[dialog] = _Dialog(ev)
    return call


def _ring_target(ev: Event) -> str | None:
    return ev.extra.get("leg_to") or ev.callee


def _on_ringing(ev: Event, call: _Call) -> _Call:
    """One leg starts ringing (180/183); several ringing events of one leg count once."""
    call.legs.ring(ev.leg_id or call.call_id, _ring_target(ev), ev.ts)
    return call


def _on_answered(ev: Event, call: _Call) -> _Call:
    call.answer = call.answer or ev
    dialog = call.dialog(ev)
    since = call.ring_start or ev.ts
    if dialog == call.call_id:
        call.own_answer = call.own_answer or ev
    elif dialog in call.dialogs:
        since = call.dialogs[dialog].offer.ts
    call.legs.answer(dialog, ev.agent, ev.ts, since, pickup=_is_pickup(call, dialog, ev.agent))
    return call


def _is_pickup(call: _Call, dialog: str, agent: str | None) -> bool:
    return dialog in call.pickups and call.pickups[dialog] == agent


def _leg_outcome(ev: Event) -> LegOutcome:
    if ev.type is EventType.CALL_CANCELLED:
        return LegOutcome.CANCELLED
    return LegOutcome(_FAILURE_DISPOSITIONS.get(ev.sip_code or 0, Disposition.FAILED).value)


def _on_failure(ev: Event, call: _Call) -> _Call:
    """call.failed / call.cancelled: of one leg, or of the call (the first one decides)."""
    dialog = call.dialog(ev)
    if dialog != call.call_id and ev.leg_id == dialog:
        # the whole of another dialog failed (the transfer target was busy, ...)
        if dialog not in call.dialogs:
            call.dialogs[dialog] = _Dialog(ev)
        other = call.dialogs[dialog]
        other.end = other.end or ev
        call.legs.close_all(ev.ts, _leg_outcome(ev), dialog)
        return call
    if _is_leg_event(ev):
        _close_leg(ev, call, dialog)
        return call
    call.failure = call.failure or ev
    if call.own_answer is None:
        call.legs.close_all(ev.ts, _leg_outcome(ev), dialog)
    return call


def _close_leg(ev: Event, call: _Call, dialog: str) -> None:
    """A leg's own failure. A leg cancelled (487) in a dialog someone picked up lost to
    the pickup, whether its 487 is stamped before or after the picker's answer. A
    target that fails without ringing (a busy phone: 486 straight away) still gets its
    leg, from and until the failure: a transfer attempt, or the agent a DID call was
    routed to, shows in the CDR - the leg is the only place that names who refused."""
    outcome = _leg_outcome(ev)
    if (outcome is LegOutcome.CANCELLED and dialog in call.pickups
            and ev.agent != call.pickups[dialog]):
        outcome = LegOutcome.PICKED_UP
    leg = call.legs.by_id.get(ev.leg_id or "")
    if leg is None and ev.leg_id and (dialog != call.call_id or ev.agent):
        call.legs.ring(ev.leg_id, ev.agent or ev.extra.get("leg_to"), ev.ts)
        leg = call.legs.by_id[ev.leg_id]
    if leg is not None:
        leg.close(ev.ts, outcome)


def _on_ended(ev: Event, call: _Call) -> _Call:
    dialog = call.dialog(ev)
    if dialog == call.call_id:
        call.end = call.end or ev
    else:
        if dialog not in call.dialogs:
            call.dialogs[dialog] = _Dialog(ev)
        other = call.dialogs[dialog]
        other.end = other.end or ev
    call.recorded = call.recorded or ev.extra.get("recorded") is True
    call.legs.close_all(ev.ts, LegOutcome.CANCELLED, dialog)
    call.holds.end(dialog, ev.ts)
    return call


def _on_held(ev: Event, call: _Call) -> _Call:
    """A party put its dialog on hold (re-INVITE a=sendonly/inactive, accepted)."""
    party = ev.extra.get("held_by") or ev.agent or ev.caller or ""
    call.holds.hold(call.dialog(ev), str(party), ev.ts)
    return call


def _on_resumed(ev: Event, call: _Call) -> _Call:
    party = ev.extra.get("held_by") or ev.agent or ev.caller or ""
    call.holds.resume(call.dialog(ev), str(party), ev.ts)
    return call


def _on_forwarded(ev: Event, call: _Call) -> _Call:
    """The edge forwards once every branch of the current target failed: they end here."""
    reason = ev.reason
    outcome = {"busy": LegOutcome.BUSY, "no_answer": LegOutcome.NO_ANSWER}.get(
        reason or "", LegOutcome.FAILED)
    call.legs.close_all(ev.ts, outcome)
    hop = ev.extra.get("hop")
    call.forwards.append(Forward(
        at=ev.ts, forwarded_from=ev.extra.get("forwarded_from"),
        forwarded_to=str(ev.extra.get("forwarded_to") or ""), reason=reason,
        hop=hop if isinstance(hop, int) and not isinstance(hop, bool) else None))
    return call


def _on_transferred(ev: Event, call: _Call) -> _Call:
    """The edge's REFER event: ``caller`` (from) transfers the call to ``callee`` (to)."""
    call.transfers.append(Transfer(
        at=ev.ts, transferred_from=ev.extra.get("transferred_from") or ev.caller or ev.agent,
        transferred_to=ev.extra.get("transferred_to") or ev.callee, kind=ev.extra.get("kind")))
    return call


def _on_picked_up(ev: Event, call: _Call) -> _Call:
    """Someone else took the ringing call (*8): the picker's leg (the branch the edge
    added to its phone; made up if it never rang) answers, the other ringing legs end
    ``picked_up``. The picker's ``call.answered`` does the same; the first of the two
    in event time decides, the second finds the picker answered and changes nothing."""
    dialog = call.dialog(ev)
    call.legs.answer(dialog, ev.agent, ev.ts, ev.ts, pickup=True)
    return call


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _on_recording(ev: Event, call: _Call) -> _Call:
    """call.recording_ready of one dialog (``leg_id``): the file (extra "recording",
    "file" or "path"), size, duration; announced again, the later one wins."""
    extra = ev.extra
    rec = call.recordings.setdefault(call.dialog(ev), _Recording())
    rec.file = extra.get("recording") or extra.get("file") or extra.get("path") or rec.file
    call.recorded = call.recorded or rec.file is not None
    size, seconds = _number(extra.get("size")), _number(extra.get("duration"))
    if size is not None:
        rec.size = int(size)
    if seconds is not None:
        rec.duration_ms = round(seconds * 1000)
    return call


def _recording(call: _Call) -> _Recording:
    """The CDR's recording: that of the call's last dialog that has one (the call's own
    dialog first, then the transferees' by their offers) - the conversation the call
    ended in. The others are each in their own ``call.recording_ready`` event."""
    order = [call.call_id, *sorted(call.dialogs, key=lambda d: _order(call.dialogs[d].offer))]
    found = [call.recordings[d] for d in order if d in call.recordings]
    found += [r for d, r in sorted(call.recordings.items()) if d not in order]
    return found[-1] if found else _Recording()


_HANDLERS: dict[EventType, Callable[[Event, _Call], _Call]] = {
    EventType.CALL_OFFERED: _on_offered,
    EventType.CALL_RINGING: _on_ringing,
    EventType.CALL_ANSWERED: _on_answered,
    EventType.CALL_FAILED: _on_failure,
    EventType.CALL_CANCELLED: _on_failure,
    EventType.CALL_ENDED: _on_ended,
    EventType.CALL_FORWARDED: _on_forwarded,
    EventType.CALL_TRANSFERRED: _on_transferred,
    EventType.CALL_PICKED_UP: _on_picked_up,
    EventType.CALL_RECORDING_READY: _on_recording,
    EventType.CALL_HELD: _on_held,
    EventType.CALL_RESUMED: _on_resumed,
}

FOLDED_TYPES = frozenset(_HANDLERS)
"""Event types that change a CDR; every other type (agent.*) is ignored."""


def _interpret(state: CallState) -> _Call:
    """Run the handlers over the sorted events; the latest media report wins."""
    call = _Call(state.call_id)
    call.pickups = {call.dialog(ev): ev.agent for ev in state.events
                    if ev.type is EventType.CALL_PICKED_UP}
    for ev in reversed(state.events):
        if ev.type is EventType.CALL_RINGING:
            leg_id = ev.leg_id or call.call_id
            call.legs.rung_later[(_dialog_of(leg_id), _ring_target(ev))] = leg_id
    for ev in state.events:
        if ev.media:
            call.media = dict(ev.media)
        call = _HANDLERS[ev.type](ev, call)
    return call


# --- finish: accumulator -> Cdr ------------------------------------------------------------


def to_cdr(state: CallState) -> Cdr:
    """The CDR revision for the events folded so far; raises IncompleteCall without an offer."""
    call = _interpret(state)
    if call.offer is None:
        seen = ", ".join(ev.type.value for ev in state.events) or "nothing"
        raise IncompleteCall(f"call {state.call_id}: no call.offered folded yet (have: {seen})")
    own = _own_outcome(call)
    outcome = _outcome(call, own)
    parties = _parties(state, call.offer)
    rec = _recording(call)
    return Cdr(
        tenant=call.offer.tenant,
        call_id=state.call_id,
        version=len(state.events),
        **parties,
        agent=_agent(call, parties),
        **_timing(call, outcome),
        disposition=_disposition(call, own if outcome is not None else None),
        sip_code=_sip_code(call, own if outcome is not None else None),
        reason=_first_set("reason", (outcome, call.answer)),
        hangup_by=outcome.hangup_by if outcome else None,
        closed=outcome is not None,
        recording=rec.file,
        mos=call.media.get("mos"),
        packet_loss=call.media.get("packet_loss"),
        jitter_ms=call.media.get("jitter_ms"),
        event_count=len(state.events),
        last_event_ts=state.events[-1].ts,
        **_participants(call, state.events[-1].ts),
        recorded=call.recorded,
        recording_bytes=rec.size,
        recording_duration_ms=rec.duration_ms,
        **_rtp(call.media),
        **_routing(state, call),
    )


_TRUNK_TARGETS = ("tel:", "mask:")
"""Route targets the edge sends out through the trunk (a masked client is a tel: too)."""


def _routing(state: CallState, call: _Call) -> dict[str, Any]:
    """route_target, route_group and the post-dial delay of a trunk call (see the rules)."""
    assert call.offer is not None
    target = call.offer.extra.get("route_target")
    group = next((ev.extra["group"] for ev in (call.offer, *state.events)
                  if isinstance(ev.extra.get("group"), str) and ev.extra["group"]), None)
    pdd = None
    if isinstance(target, str) and target.startswith(_TRUNK_TARGETS):
        first = next((ev for ev in state.events
                      if ev.type in (EventType.CALL_RINGING, EventType.CALL_ANSWERED)
                      and call.dialog(ev) == call.call_id), None)
        pdd = _ms(call.offer.ts, first.ts) if first is not None else None
    return {"route_target": target if isinstance(target, str) else None,
            "route_group": group, "pdd_ms": pdd}


def _participants(call: _Call, last: datetime) -> dict[str, Any]:
    legs = sorted((leg.freeze() for leg in call.legs.by_id.values()),
                  key=lambda leg: (leg.rang_from, leg.leg_id))
    return {"legs": tuple(legs), "forwards": tuple(call.forwards),
            "transfers": tuple(call.transfers), "hold_ms": call.holds.until(last)}


def _rtp(media: dict[str, float]) -> dict[str, int | None]:
    """RTP counters of the latest media report (whole numbers)."""
    def count(name: str) -> int | None:
        value = media.get(name)
        return int(value) if value is not None else None
    return {"rtp_packets": count("packets"), "rtp_bytes": count("bytes"),
            "rtp_errors": count("errors")}


def _first_set(name: str, events: Iterable[Event | None]) -> Any:
    """The first non-null ``name`` among ``events`` (missing events are skipped)."""
    values = (getattr(ev, name) for ev in events if ev is not None)
    return next((v for v in values if v is not None), None)


def _parties(state: CallState, offer: Event) -> dict[str, Any]:
    """Who called whom: the offer's view, gaps filled from the other events in time order."""
    sources = (offer, *state.events)
    direction = _first_set("direction", sources)
    return {
        "direction": direction.value if direction is not None else None,
        "caller": _first_set("caller", sources),
        "callee": _first_set("callee", sources),
        "did": _first_set("did", sources),
    }


def _agent(call: _Call, parties: dict[str, Any]) -> str | None:
    """The extension that handled the call: on an outbound call the one that placed it
    (whoever answers there is the client, not an agent), else the one that answered."""
    if parties["direction"] == Direction.OUTBOUND:
        return parties["caller"]
    return _first_set("agent", (call.answer, call.end))


def _own_outcome(call: _Call) -> Event | None:
    """The call's own dialog's terminal event: a BYE always; a failure only unanswered."""
    if call.end is not None:
        return call.end
    return call.failure if call.own_answer is None else None


def _outcome(call: _Call, own: Event | None) -> Event | None:
    """The call's terminal event, once every dialog of the call has one: the last BYE
    (the parties really hung up then; a transfer attempt that failed later - the target
    was busy - ends no talk), or the last failure if no dialog was ever talked on."""
    if own is None or any(d.end is None for d in call.dialogs.values()):
        return None
    ends = (own, *(d.end for d in call.dialogs.values() if d.end is not None))
    talked = [ev for ev in ends if ev.type is EventType.CALL_ENDED]
    return max(talked or ends, key=_order)


def _answered_at(call: _Call) -> datetime | None:
    """call.answered's time; if that event was lost, call.ended's time minus its duration."""
    if call.answer is not None:
        return call.answer.ts
    if call.end is not None and call.end.duration_ms is not None:
        return call.end.ts - call.end.duration_ms * _MS
    return None


def _ms(start: datetime | None, end: datetime | None) -> int:
    """Whole milliseconds from start to end; 0 if either is unknown or clocks disagree."""
    if start is None or end is None:
        return 0
    return max(0, (end - start) // _MS)


def _timing(call: _Call, outcome: Event | None) -> dict[str, Any]:
    """started/answered/ended times and the caller's ring and talk durations (event time)."""
    assert call.offer is not None  # to_cdr raised IncompleteCall otherwise
    started_at = call.offer.ts
    answered_at = _answered_at(call)
    ended_at = outcome.ts if outcome is not None else None
    return {
        "started_at": started_at,
        "answered_at": answered_at,
        "ended_at": ended_at,
        "ring_ms": _ms(started_at, answered_at if answered_at is not None else ended_at),
        "talk_ms": _ms(answered_at, ended_at),
    }


def _disposition(call: _Call, outcome: Event | None) -> Disposition:
    """How the call ended from the caller's side; in_progress until a terminal event."""
    if outcome is None:
        return Disposition.IN_PROGRESS
    if _interrupted(outcome):
        return Disposition.INTERRUPTED
    if outcome.type is EventType.CALL_ENDED:
        return Disposition.ANSWERED  # a BYE only ends an established dialog
    if outcome.type is EventType.CALL_CANCELLED:
        return Disposition.CANCELLED
    return _FAILURE_DISPOSITIONS.get(outcome.sip_code or 0, Disposition.FAILED)


def _sip_code(call: _Call, outcome: Event | None) -> int | None:
    """The final response code: 200 once answered, the failure's code, None while ringing."""
    if call.answer is not None or (outcome is not None and outcome.type is EventType.CALL_ENDED
                                   and not _interrupted(outcome)):
        return ANSWERED_CODE
    if outcome is None:
        return None
    if outcome.sip_code is None and outcome.type is EventType.CALL_CANCELLED:
        return CANCELLED_CODE
    return outcome.sip_code


def _interrupted(outcome: Event) -> bool:
    """The call's end was lost and ingest's reconciler closed it (``call.ended`` reason
    ``interrupted``, at the last known event time): a distinct disposition, no SIP code
    unless it was answered. A real end arriving later sorts after it and changes nothing."""
    return outcome.type is EventType.CALL_ENDED and outcome.reason == INTERRUPTED_REASON
