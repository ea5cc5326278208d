"""Per-agent statistics per interval (15 min, hour, day), read from the agent's row.

The agent fold (``agent_state``) keeps each interval's counters in the row (``counts``)
for as long as the interval can change; this module turns them into :class:`AgentStats`
rows and says which rows an event changed. Intervals are local to the tenant's IANA zone
(``AgentConfig.zone``, from provisioning) and a state crossing a boundary is split
(``agent_intervals``).

Definitions (named, see ``reference/peer-survey.md`` §3):

* ``logged_in_ms`` - time in any state but offline; ``available_ms``, ``ringing_ms``,
  ``talk_ms``, ``wrap_up_ms`` - time in that state (split across intervals).
* ``offered`` - calls that rang the agent (``call.ringing`` with callee = agent, or an
  answer by the agent); ``answered`` - of those, answered by the agent; ``missed`` - of
  those, the ring ended and the agent did not answer (Amazon Connect's *agent
  non-response*: a call answered by a colleague still counts as missed for this agent).
  All three count in the interval where the call started to ring the agent.
* ``handled`` - calls the agent talked on (answered, or placed and answered), counted in
  the interval where the talk ended; ``handled_talk_ms`` - their whole talk time.
* ``aht_talk_ms`` - **AHT without after-call work**: handled_talk_ms / handled, where talk
  runs from answer to end, so **hold is included** (as ``talk_ms`` of the CDR); wrap-up
  is not (it is ``wrap_up_ms``). None when nothing was handled.
* ``occupancy`` - **Amazon Connect variant**: handle / (handle + idle) with handle =
  talk + wrap-up and idle = available; ringing counts in neither. None when both are 0.

An agent's current state counts up to its newest event: numbers of the current interval
grow as events (registration refreshes included) come in. ``complete_until`` says how far
a row is counted: the newest event time, capped at the interval's end. The cap makes it a
function of the agent's events, not of their arrival order: uncapped, a finished
interval's row kept the newest time of whichever event happened to change it last, which
differs between two deliveries of the same events (the live worker's interleaving of
partitions and a replay's), while every number is the same. A row is sent again when its
numbers or its ``complete_until`` change, so the last revision of every interval has the
final value of both.
"""

from __future__ import annotations

import operator
from dataclasses import fields
from datetime import datetime
from zoneinfo import ZoneInfo

from core.agent_records import AgentStats
from core.events import Event
from streams.folds.agent_intervals import (
    AT,
    COUNTERS,
    INTERVALS,
    TOUCHES,
    Key,
    complete_until,
    interval_end,
    interval_start,
    split,
)
from streams.folds.agent_state import (
    DEFAULT_CONFIG,
    AgentConfig,
    AgentState,
    resend_since,
    without_event,
)

__all__ = ["INTERVALS", "interval_start", "split", "complete_until", "stats", "stats_changes",
           "resent_stats"]

_CONTENT = operator.attrgetter(*(f.name for f in fields(AgentStats) if f.name != "version"))


def _complete_until(key: Key, newest: datetime | None, tz: ZoneInfo) -> datetime | None:
    return None if newest is None else complete_until(key, newest, tz)


def _record(state: AgentState, key: Key, values: list[int] | tuple[int, ...],
            config: AgentConfig) -> AgentStats:
    handle = values[AT["talk_ms"]] + values[AT["wrap_up_ms"]]
    busy_or_idle = handle + values[AT["available_ms"]]
    handled = values[AT["handled"]]
    newest = state.newest
    assert newest is not None
    return AgentStats(
        tenant=state.tenant, agent=state.agent, interval_kind=key[0], interval_start=key[1],
        version=state.accepted, **{name: values[i] for i, name in enumerate(COUNTERS)},
        aht_talk_ms=values[AT["handled_talk_ms"]] / handled if handled else None,
        occupancy=handle / busy_or_idle if busy_or_idle else None,
        complete_until=complete_until(key, newest, config.zone(state.tenant)),
    )


def stats(state: AgentState, config: AgentConfig = DEFAULT_CONFIG,
          since: datetime | None = None) -> dict[Key, AgentStats]:
    """Every interval the row holds (those that can still change), from ``since`` on."""
    if state.newest is None:
        return {}
    return {key: _record(state, key, values, config)
            for key, values in sorted(state.counts.items())
            if since is None or key[1] >= since}


def _let_go(state: AgentState, key: Key, tz: ZoneInfo) -> bool:
    """Whether the row let go of ``key`` (final, published) rather than it vanishing."""
    return state.counts_from is not None and interval_end(key, tz) <= state.counts_from


def stats_changes(old: AgentState, new: AgentState,
                  config: AgentConfig = DEFAULT_CONFIG) -> list[AgentStats]:
    """Interval rows whose numbers or ``complete_until`` differ between ``old`` and ``new``.

    An interval that had numbers before and has none now is sent with zeros; one the row
    let go of (final) is not. The row holds only intervals that can still change, so
    comparing all of them costs a few dozen rows.
    """
    if new is old or new.newest is None:
        return []
    out: list[AgentStats] = []
    tz = config.zone(new.tenant)
    for key in sorted(set(old.counts) | set(new.counts)):
        before, after = old.counts.get(key), new.counts.get(key)
        if after is None:
            if before is not None and not _let_go(new, key, tz):
                out.append(_record(new, key, [0] * TOUCHES, config))
            continue
        moved = _complete_until(key, old.newest, tz) != _complete_until(key, new.newest, tz)
        if before is None or moved or before[:TOUCHES] != after[:TOUCHES]:
            out.append(_record(new, key, after, config))
    return out


def _content(row: AgentStats) -> tuple:
    """Every field but the version (no deep copy: all are scalars)."""
    return _CONTENT(row)


# --- redelivery: what a repeated event sends again -----------------------------------------


def resent_stats(state: AgentState, event: Event, config: AgentConfig = DEFAULT_CONFIG,
                 prior: AgentState | None = None) -> list[AgentStats]:
    """The interval rows a repeated ``event`` sends again ([] if the row does not hold it).

    A repeat finds the row unchanged, yet the first delivery's rows may have been lost
    (the worker killed after the changelog write, before the send). So: every held row
    from :func:`~streams.folds.agent_state.resend_since` on (the day of the event, or of
    the previous newest event if earlier), plus what comparing with ``prior``
    (``agent_state.without_event``) finds - intervals sent back with zeros. All at
    ``state.accepted``: the first delivery's rows when the event was the last one folded.
    """
    prior = prior if prior is not None else without_event(state, event, config)
    if prior is None:
        return []
    out = stats(state, config, resend_since(state, event, config))
    out.update(((r.interval_kind, r.interval_start), r)
               for r in stats_changes(prior, state, config))
    return sorted(out.values(), key=lambda r: (r.interval_kind, r.interval_start))
