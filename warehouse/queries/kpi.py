"""Contact-centre and trunk KPIs over CDRs (``tawag.cdrs``), computed in ClickHouse SQL.

Every published KPI has variants (abandons in the service level or not, a short-abandon
cut-off, what an "attempt" is); each function here names the variant it implements and
its source in ``reference/peer-survey.md`` §3 (DESIGN §7).

Population (every function):

* the tenant's calls whose ``started_at`` (when the call was offered) is in the half-open
  window ``[start, end)``, UTC, read with ``FINAL`` so a call counts once, with its latest
  revision (a late event may move a call in or out of the window);
* optionally only ``direction``, ``did`` (the number dialled) or ``agent`` (the extension
  that answered, or that placed an outbound call -- unanswered inbound calls have none,
  so rates filtered by agent are over that agent's answered calls and outbound attempts);
  filters are bound parameters;
* **outcome KPIs count closed calls only**: a call still ``in_progress`` has no outcome
  yet, and counting it as "not answered" would make the figures of the current hour drop
  and then recover. **Contact KPIs** (contacts per client, repeat calls) count every call
  that started, closed or not: an in-progress call is already a contact.

Populations (one meaning per KPI; the glossary, :mod:`warehouse.queries.glossary`, lists
each KPI with its population and source, and the dashboards show it):

* **queue KPIs** (offered, answered, abandoned, queued, service levels, answer rate,
  abandonment rates, ASA, average wait, contacts) count **inbound** calls only, whatever
  page or filter asks: an outbound or internal call is not a contact-centre call. A
  ``direction`` filter other than ``inbound`` leaves them empty (None);
* **SIP-level and handle-time KPIs** (ASR, SER, SEER, ACD, AHT) count every closed call
  of the filters, any direction (pass ``direction`` to narrow: ``outbound`` is the trunk
  view);
* **PDD** counts the calls the PBX sent to the trunk (route ``tel:``/``mask:``).

Vocabulary (the CDR's dispositions mapped onto the queue terms of the peers):

===============  ==========================================================================
offered          closed inbound calls, whatever the outcome (Wazo "received", Genesys
                 "offered")
answered         disposition ``answered``
abandoned        ``cancelled``: the caller hung up while it rang (SIP 487 / CANCEL) --
                 Amazon Connect's "disconnected by the customer while in queue"
queued           answered + abandoned + ``no_answer`` + ``busy`` + declined (``failed``
                 with 603): every call that reached an agent's phone or was refused by
                 one. Busy and declined count as queued and never inside the service
                 level, so an agent who rejects calls lowers it (as in Wazo, where a
                 refused call is not "answered within T"). Only ``failed`` calls the
                 network could not place (404, 5xx, 3xx) are left out
wait             ``ring_ms``: offer to answer, or offer to the end when unanswered
talk             ``talk_ms``: answer to end, **hold included** (``hold_ms`` is the part
                 on hold): ACD and AHT are connected time, not talk net of hold
===============  ==========================================================================

Rates are fractions in ``[0, 1]`` (as :func:`warehouse.queries.cdr.calls_summary`), not
percentages; durations are seconds. A KPI whose denominator is empty is ``None``, never
a division by zero.

Not computable from the CDR (say so rather than guess): after-call work (so AHT is talk
including hold, without wrap-up: :func:`aht_talk_only`), occupancy (needs agent states),
callback success / time to callback (need the callbacks table, not CDRs).
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pandas as pd

from core.records import Disposition
from core.timezones import BUCKETS, UTC_ZONE, bounds, zone
from warehouse.client import WarehouseClient
from warehouse.queries.window import CALL_WINDOW, TALK_LOOKBACK_DAYS, day_bounds
from warehouse.schema import (
    CDR_DAYS_LOADED,
    CDR_ROLLUP,
    CDR_ROLLUP_CALLERS,
    CDR_ROLLUP_DAYS,
    CDR_ROLLUP_TALK,
    CDRS,
    TENANTS,
)

__all__ = [
    "INTERVALS",
    "service_level_answered",
    "service_level_offered",
    "answer_rate",
    "abandonment_rate",
    "asr",
    "ser",
    "seer",
    "acd",
    "asa",
    "average_wait",
    "aht_talk_only",
    "pdd",
    "pdd_by_trunk",
    "contacts_per_client",
    "repeat_call_rate",
    "kpi_summary",
    "period_comparison",
    "kpis_by_interval",
    "talk_time_by_interval",
]

INTERVALS = tuple(BUCKETS)
"""Interval names accepted by the ``*_by_interval`` queries (local to the tenant's zone)."""

DEFAULT_THRESHOLD_S = 20.0
"""Service-level threshold T of the classic 80/20 target."""

DEFAULT_SHORT_ABANDON_S = 10.0
"""The industry "adjusted" abandonment rate ignores abandons shorter than 10 s (survey §3)."""

DEFAULT_REPEAT_WINDOW_H = 24.0
"""Repeat-call window N: a second call within 24 h counts as a repeat."""

DECLINED_CODES = (603,)
"""A ``failed`` call with one of these codes was refused by the callee (603 Decline): it
reached a phone, so it is queued (and not within the service level), like busy."""

SEER_CODES = (480, 486, 600, 603)
"""RFC 6076 SEER: final responses that show the network did its job (callee side)."""

Row = dict[str, Any]

# --- the catalogue: one SQL aggregate per KPI, shared by every query ------------------------
# Conditions over the ``calls`` CTE (one row per call, latest revision). Disposition names
# are bound parameters like every other value. Queue KPIs count inbound calls only (the
# contact centre's calls: what an outside caller dialled); see warehouse.queries.glossary.
_INBOUND = "direction = {d_inbound:String}"
_OFFERED = f"(closed AND {_INBOUND})"
_ANSWERED = f"(closed AND {_INBOUND} AND disposition = {{d_answered:String}})"
_ABANDONED = f"(closed AND {_INBOUND} AND disposition = {{d_abandoned:String}})"
_QUEUED = (f"(closed AND {_INBOUND} AND (disposition IN {{d_queued:Array(String)}} OR "
           "(disposition = {d_failed:String} AND ifNull(sip_code, 0) IN "
           "{declined_codes:Array(UInt16)})))")
_CALL_ANSWERED = "(closed AND disposition = {d_answered:String})"
"""Answered, any direction: the SIP-level and handle-time KPIs (ASR, SER, ACD, AHT)."""
_IN_SL = "ring_ms <= {threshold_ms:Int64}"
_NOT_3XX = "(closed AND intDiv(ifNull(sip_code, 0), 100) != 3)"
_SEER_OK = f"({_CALL_ANSWERED} OR (closed AND ifNull(sip_code, 0) IN {{seer_codes:Array(UInt16)}}))"
_CONTACT = "(direction = {d_inbound:String} AND caller != '')"
_CUTOFF = "short_abandon_ms"
"""Parameter of the short-abandon cut-off: 0 when none is asked (no wait is below 0 ms)."""


def _short(cutoff: str) -> str:
    """An abandon that waited less than the cut-off bound as ``cutoff`` (ms)."""
    return f"({_ABANDONED} AND ring_ms < {{{cutoff}:Int64}})"


# Every KPI below is built from *components*: ``countIf(condition)`` or
# ``sumIf(column, condition)`` over the calls, which add up across any split of the calls.
# A formula names a component as ``§k_<hash>§``; :func:`_render` puts in either its SQL over
# the calls (one row per call) or ``sum(k_<hash>)`` over rows that already hold it (the
# rollup, :mod:`warehouse.rollup`, stores the same components per 15-minute slot). So a
# formula is written once and gives the same value on both paths.
COMPONENTS: dict[str, str] = {}
"""Component name -> its aggregate over the ``calls`` CTE (registered at import)."""
_MARK = re.compile(r"§(k_[0-9a-f]{12})§")


def _component(sql: str) -> str:
    name = "k_" + hashlib.sha1(sql.encode()).hexdigest()[:12]
    if name not in COMPONENTS and globals().get("_FROZEN"):
        raise RuntimeError("a KPI component registered after import: the rollup's "
                           "catalogue would not hold it")
    COMPONENTS.setdefault(name, sql)
    return f"§{name}§"


def _count(condition: str) -> str:
    return _component(f"countIf({condition})")


def _sum(column: str, condition: str) -> str:
    return _component(f"sumIf({column}, {condition})")


def _render(expr: str, over: str = "calls") -> str:
    """``expr`` with its components as SQL over the calls (``over="calls"``) or as sums of
    the component columns (``over="components"``)."""
    if over == "calls":
        return _MARK.sub(lambda m: COMPONENTS[m[1]], expr)
    return _MARK.sub(lambda m: f"sum({m[1]})", expr)


def components_of(exprs: dict[str, str]) -> list[str]:
    """The component names ``exprs`` use, in a stable order."""
    return sorted({m[1] for expr in exprs.values() for m in _MARK.finditer(expr)})


def _ratio(numerator: str, denominator: str) -> str:
    """``numerator / denominator``, NULL (not inf/nan) when the denominator is 0."""
    return f"if(({denominator}) = 0, NULL, ({numerator}) / ({denominator}))"


def _rate(condition: str, population: str) -> str:
    return _ratio(_count(f"{condition} AND {population}"), _count(population))


def _mean_s(column: str, population: str) -> str:
    """Mean of a millisecond column over ``population``, in seconds (NULL when empty)."""
    return _ratio(f"{_sum(column, population)} / 1000", _count(population))


def _abandon_kpis(cutoff: str, suffix: str = "") -> dict[str, str]:
    """The two KPIs a short-abandon cut-off changes, with the cut-off bound as ``cutoff``."""
    population = f"{_QUEUED} AND NOT {_short(cutoff)}"
    removed_in_sl = f"({_ANSWERED} OR {_ABANDONED}) AND {_IN_SL}"
    return {f"service_level_offered{suffix}": _rate(removed_in_sl, population),
            f"abandonment_rate{suffix}": _rate(_ABANDONED, population)}


def _counts(cutoff: str) -> dict[str, str]:
    return {
        "total": _count("1"),
        "in_progress": _count("NOT closed"),
        "offered": _count(_OFFERED),
        "answered": _count(_ANSWERED),
        "abandoned": _count(_ABANDONED),
        "short_abandoned": _count(_short(cutoff)),
        "queued": _count(_QUEUED),
    }


def _outcomes(cutoff: str) -> dict[str, str]:
    return {
        "service_level_answered": _rate(_IN_SL, _ANSWERED),
        **_abandon_kpis(cutoff),
        "answer_rate": _rate(_ANSWERED, _OFFERED),
        "asr": _rate("answered_at IS NOT NULL", "closed"),
        "ser": _rate(_CALL_ANSWERED, _NOT_3XX),
        "seer": _rate(_SEER_OK, _NOT_3XX),
        "acd": _mean_s("talk_ms", _CALL_ANSWERED),
        "asa": _mean_s("ring_ms", _ANSWERED),
        "average_wait": _mean_s("ring_ms", _QUEUED),
        "aht_talk_only": _mean_s("talk_ms", _CALL_ANSWERED),
        "pdd": _mean_s("pdd_ms", "pdd_ms IS NOT NULL"),
    }


_NO_CUTOFF = "no_cutoff_ms"
"""Parameter bound to 0: the variant that keeps every abandon."""
_COUNTS = _counts(_CUTOFF)
_OUTCOMES = _outcomes(_CUTOFF)
_SUMMARY_EXPRS = {**_COUNTS, **_OUTCOMES, **_abandon_kpis(_NO_CUTOFF),
                  **_abandon_kpis(_CUTOFF, "_adjusted")}
"""kpi_summary's and period_comparison's counts and outcome KPIs."""
_INTERVAL_EXPRS = {_CUTOFF: {**_COUNTS, **_OUTCOMES},
                   _NO_CUTOFF: {**_counts(_NO_CUTOFF), **_outcomes(_NO_CUTOFF)}}
"""kpis_by_interval's, with a short-abandon cut-off and without one."""

_CONTACTS = {
    "contacts_per_client": _ratio(f"countIf({_CONTACT})", f"uniqExactIf(caller, {_CONTACT})"),
}

_REPEATS = (
    "SELECT " + _ratio("countIf(repeated)", "count()") + " AS repeat_call_rate, "
    "countIf(repeated) AS repeat_callers FROM ("
    "SELECT arraySort(groupArray(toUnixTimestamp64Milli(started_at))) AS ts, "
    "arrayExists((a, b) -> b - a <= {repeat_window_ms:Int64}, "
    "arrayPopBack(ts), arrayPopFront(ts)) AS repeated "
    f"FROM calls WHERE {_CONTACT} GROUP BY caller)"
)
"""Per inbound caller: are two of their calls at most N apart? (sorted, so neighbours)."""

_CONTACTS_OF_PIECES = (
    "SELECT " + _ratio("sum(n)", "count()") + " AS contacts_per_client, "
    + _ratio("countIf(repeated)", "count()") + " AS repeat_call_rate, "
    "countIf(repeated) AS repeat_callers FROM ("
    "SELECT sum(calls) AS n, arraySort(groupArray(bitShiftLeft(first_ms, 20) + "
    "(last_ms - first_ms))) AS ps, n > count() OR arrayExists((p, q) -> bitShiftRight(q, 20)"
    " - bitShiftRight(p, 20) - bitAnd(p, 1048575) <= {repeat_window_ms:Int64}, "
    "arrayPopBack(ps), arrayPopFront(ps)) AS repeated FROM contact_pieces GROUP BY contact)"
)
"""The three contact KPIs of :data:`_CONTACTS` and :data:`_REPEATS` over ``contact_pieces``
(:func:`_contact_pieces_sql`: per caller, runs of their contacts inside one 15-minute slot,
``calls`` and first/last start). Two calls of one slot are less than 15 minutes apart and
pieces of different slots do not overlap, so for N >= 15 minutes a caller repeats iff a
piece holds two calls or two neighbouring pieces (sorted) are at most N apart: the same
figures as over the calls, from rows that were grouped once, at the rollup's rebuild.
A piece is packed into one Int64, ``first_ms << 20 | (last_ms - first_ms)`` (a piece spans
less than a slot, 900,000 < 2^20 ms): sorted like ``(first_ms, last_ms)``, and sorting one
number per piece took half the time of tuples on a month of the 10 M benchmark."""


_CALL_COLUMNS = ("started_at", "answered_at", "ended_at", "ring_ms", "talk_ms", "disposition",
                 "closed", "sip_code", "caller", "direction", "pdd_ms")
_FILTER_COLUMNS = ("direction", "did", "agent")


# --- building blocks ----------------------------------------------------------------------


def _ms(seconds: float | None) -> int:
    return round(seconds * 1000) if seconds else 0


def _filters(direction: str | None, did: str | None, agent: str | None) -> tuple[str, Row]:
    """Extra WHERE conditions (values bound as ``f_<column>``) for the filters given."""
    values = dict(zip(_FILTER_COLUMNS, (direction, did, agent), strict=True))
    given = {col: value for col, value in values.items() if value is not None}
    sql = "".join(f" AND {col} = {{f_{col}:String}}" for col in given)
    return sql, {f"f_{col}": value for col, value in given.items()}


def _calls_cte(filter_sql: str) -> str:
    """``WITH calls AS (...)``: the window's calls, latest revision (FINAL) only."""
    return (f"WITH calls AS (SELECT {', '.join(_CALL_COLUMNS)} FROM {CDRS} FINAL "
            f"WHERE {CALL_WINDOW}{filter_sql}) ")


def _params(tenant: str, start: datetime, end: datetime, *,
            threshold_s: float = DEFAULT_THRESHOLD_S, short_abandon_s: float | None = None,
            repeat_window_h: float = DEFAULT_REPEAT_WINDOW_H) -> Row:
    """Every parameter the catalogue may use (ClickHouse ignores the unused ones)."""
    return {
        "tenant": tenant, "start": start, "end": end,
        "d_answered": Disposition.ANSWERED, "d_abandoned": Disposition.CANCELLED,
        "d_queued": [Disposition.ANSWERED, Disposition.CANCELLED, Disposition.NO_ANSWER,
                     Disposition.BUSY],
        "d_failed": Disposition.FAILED, "declined_codes": list(DECLINED_CODES),
        "d_inbound": "inbound", "seer_codes": list(SEER_CODES),
        "threshold_ms": _ms(threshold_s), "short_abandon_ms": _ms(short_abandon_s),
        "repeat_window_ms": _ms(repeat_window_h * 3600),
    }


def _select(exprs: dict[str, str], over: str = "calls") -> str:
    return ", ".join(f"{_render(sql, over)} AS {name}" for name, sql in exprs.items())


def _scalar(client: WarehouseClient, name: str, tenant: str, start: datetime, end: datetime,
            filters: tuple[str | None, str | None, str | None], **options: Any) -> Any:
    """One catalogue KPI over the window (the value, or None on an empty population)."""
    filter_sql, filter_params = _filters(*filters)
    expr = _render({**_OUTCOMES, **_CONTACTS}[name])
    rows = client.query(f"{_calls_cte(filter_sql)}SELECT {expr} AS value FROM calls",
                        {**_params(tenant, start, end, **options), **filter_params})
    return rows[0]["value"]


# --- service level ------------------------------------------------------------------------


def service_level_answered(client: WarehouseClient, tenant: str, start: datetime,
                           end: datetime, threshold_s: float = DEFAULT_THRESHOLD_S, *,
                           direction: str | None = None, did: str | None = None,
                           agent: str | None = None) -> float | None:
    """Answered within T / answered (Wazo QoS, Asterisk ``ServiceLevelPerf``).

    ``answered(wait <= T) / answered``; abandons are on neither side, and a wait of
    exactly T is inside (Wazo ``waittime <= qos_threshold``). Sources:
    ``wazo-platform/wazo-call-logd:wazo_call_logd/database/queries/queue_stat.py``,
    ``asterisk/asterisk:apps/app_queue.c`` (set_queue_variables).
    """
    return _scalar(client, "service_level_answered", tenant, start, end,
                   (direction, did, agent), threshold_s=threshold_s)


def service_level_offered(client: WarehouseClient, tenant: str, start: datetime,
                          end: datetime, threshold_s: float = DEFAULT_THRESHOLD_S,
                          short_abandon_s: float | None = None, *,
                          direction: str | None = None, did: str | None = None,
                          agent: str | None = None) -> float | None:
    """Removed from the queue within T / queued (Amazon Connect "Service level X").

    ``(answered within T + abandoned within T) / queued``: an abandon inside T counts as
    a success, as in Connect; a no-answer timeout never does (Connect counts removals by
    answer, abandon or callback only). With ``short_abandon_s`` = S, abandons shorter
    than S leave both sides (RingCentral ``abandonedThresholdSeconds``, the survey's
    ``sl_excl_short_abandon(k)``). Sources:
    ``awsdocs/amazon-connect-admin-guide:doc_source/historical-metrics-definitions.md``;
    ringcentral CallQueueServiceLevelSettings.
    """
    return _scalar(client, "service_level_offered", tenant, start, end,
                   (direction, did, agent), threshold_s=threshold_s,
                   short_abandon_s=short_abandon_s)


# --- rates --------------------------------------------------------------------------------


def answer_rate(client: WarehouseClient, tenant: str, start: datetime, end: datetime, *,
                direction: str | None = None, did: str | None = None,
                agent: str | None = None) -> float | None:
    """Answered / offered (Wazo ``answered_rate`` as coded, Genesys answered / offered).

    Wazo divides by answered + abandoned + full + leaveempty + joinempty + timeout, i.e.
    every outcome: here, every closed call. Same figure as ``cdr.calls_summary``'s
    ``answer_rate``. Source: ``wazo_call_logd/database/queries/queue_stat.py``.
    """
    return _scalar(client, "answer_rate", tenant, start, end, (direction, did, agent))


def abandonment_rate(client: WarehouseClient, tenant: str, start: datetime, end: datetime,
                     short_abandon_s: float | None = None, *, direction: str | None = None,
                     did: str | None = None, agent: str | None = None) -> float | None:
    """Abandoned / queued (Amazon Connect); with ``short_abandon_s``, the "adjusted" rate.

    ``short_abandon_s=None``: Connect's ``abandoned / queued``. ``short_abandon_s=S``:
    abandons that waited less than S (``ring_ms < S``; exactly S counts) are removed
    from numerator and denominator (Google CCAI ``abandoned / (handled + abandoned)``
    without short abandons; the industry "adjusted" rate with S = 10 s). Sources: Connect
    data-lake reference SQL; docs.cloud.google.com/contact-center/ccai-platform data
    dictionary; support.pressone.net call-center definitions.
    """
    return _scalar(client, "abandonment_rate", tenant, start, end, (direction, did, agent),
                   short_abandon_s=short_abandon_s)


def asr(client: WarehouseClient, tenant: str, start: datetime, end: datetime, *,
        direction: str | None = None, did: str | None = None,
        agent: str | None = None) -> float | None:
    """Answer-seizure ratio, CGRateS ``*asr``: answered / attempts.

    An attempt is every closed call (CGRateS counts every CDR in the queue: busy, no
    answer, cancelled by the caller and failed all count); answered means
    ``answered_at`` is set (CGRateS: ``AnswerTime`` non-zero). On our CDRs this equals
    :func:`answer_rate`; it is the trunk view (use ``direction='outbound'``). For the
    RFC 6076 variant that leaves redirected attempts out, see :func:`ser`. Source:
    ``cgrates/cgrates:engine/statmetrics.go``, ``docs/stats.rst``.
    """
    return _scalar(client, "asr", tenant, start, end, (direction, did, agent))


def ser(client: WarehouseClient, tenant: str, start: datetime, end: datetime, *,
        direction: str | None = None, did: str | None = None,
        agent: str | None = None) -> float | None:
    """Session establishment ratio (RFC 6076 §4.6): answered / (attempts - 3xx).

    Attempts that ended with a 3xx redirect are not attempts of this hop. Source:
    RFC 6076 (survey §3; sipcapture/heplify-server#50).
    """
    return _scalar(client, "ser", tenant, start, end, (direction, did, agent))


def seer(client: WarehouseClient, tenant: str, start: datetime, end: datetime, *,
         direction: str | None = None, did: str | None = None,
         agent: str | None = None) -> float | None:
    """Session establishment effectiveness ratio (RFC 6076 §4.7).

    ``(answered + ended 480/486/600/603) / (attempts - 3xx)``: a busy or unavailable
    callee is the network doing its job. Source: RFC 6076 (survey §3).
    """
    return _scalar(client, "seer", tenant, start, end, (direction, did, agent))


# --- durations (seconds) ------------------------------------------------------------------


def acd(client: WarehouseClient, tenant: str, start: datetime, end: datetime, *,
        direction: str | None = None, did: str | None = None,
        agent: str | None = None) -> float | None:
    """Average call duration: connected seconds (hold included) per answered call (ALOC).

    Any direction (``direction='outbound'`` for the trunk view). CGRateS
    ``ACD = sum(Usage) / count(events with Usage)`` lets unanswered zero-usage
    calls drag it down unless filtered out; this is the filtered form (answered calls
    only), as Kazoo's ``billing_seconds``. Source: ``engine/statmetrics.go``.
    """
    return _scalar(client, "acd", tenant, start, end, (direction, did, agent))


def asa(client: WarehouseClient, tenant: str, start: datetime, end: datetime, *,
        direction: str | None = None, did: str | None = None,
        agent: str | None = None) -> float | None:
    """Average speed of answer: mean wait of answered calls, seconds.

    Amazon Connect "Average queue answer time". Source: historical-metrics-definitions.md.
    """
    return _scalar(client, "asa", tenant, start, end, (direction, did, agent))


def average_wait(client: WarehouseClient, tenant: str, start: datetime, end: datetime, *,
                 direction: str | None = None, did: str | None = None,
                 agent: str | None = None) -> float | None:
    """Mean wait of every queued call (answered, abandoned, timed out), seconds.

    Wazo ``average_waiting_time = sum(waittime) / (answered + abandoned + leaveempty +
    timeout)``. Source: ``wazo_call_logd/database/queries/queue_stat.py``.
    """
    return _scalar(client, "average_wait", tenant, start, end, (direction, did, agent))


def aht_talk_only(client: WarehouseClient, tenant: str, start: datetime, end: datetime, *,
                  direction: str | None = None, did: str | None = None,
                  agent: str | None = None) -> float | None:
    """Average handle time without after-call work: talk seconds (hold included) per
    answered call.

    AHT is (talk + hold + after-call work) / handled (Amazon Connect, Genesys, Voximplant
    ``TalkTime + AfterCallWork``). ``talk_ms`` runs from answer to end, so it includes
    hold (``hold_ms`` is that part); after-call work is not in the CDR (the agent
    statistics count wrap-up), so this is talk + hold: equal to :func:`acd` on the same
    calls, and named so that nobody mistakes it for the full AHT. Any direction (an
    agent's outbound calls are handled too). Source: historical-metrics-definitions.md.
    """
    return _scalar(client, "aht_talk_only", tenant, start, end, (direction, did, agent))


def pdd(client: WarehouseClient, tenant: str, start: datetime, end: datetime, *,
        direction: str | None = None, did: str | None = None,
        agent: str | None = None) -> float | None:
    """Post-dial delay, seconds: mean time from INVITE to the first 18x or the answer of
    the calls the PBX sent to the trunk (RFC 6076 §4.2 Session Request Delay, successful
    setups; CGRateS ``*pdd``; heplify ``heplify_kpi_srd``).

    A trunk call that failed before any 18x has no PDD (RFC 6076's "failed session setup
    SRD" is a separate figure, not computed here). Sources: RFC 6076;
    ``cgrates/cgrates:docs/stats.rst``; sipcapture/heplify-server#326.
    """
    return _scalar(client, "pdd", tenant, start, end, (direction, did, agent))


def pdd_by_trunk(client: WarehouseClient, tenant: str, start: datetime,
                 end: datetime) -> pd.DataFrame:
    """PDD per trunk: ``trunk, calls, pdd_s`` (mean, as :func:`pdd`), ``pdd_p95_s``.

    A trunk call's trunk is its tenant's trunk from provisioning (``tawag.tenants``; one
    trunk per tenant today): the edge names no trunk in its events yet, so a tenant that
    changes trunks sees its history under the new one. ``(unknown)`` when the tenant has
    no provisioned trunk.
    """
    sql = (f"{_calls_cte('')}SELECT ifNull((SELECT any(trunk) FROM {TENANTS} FINAL WHERE "
           "tenant = {tenant:String}), '(unknown)') AS trunk, count() AS calls, "
           "avg(pdd_ms) / 1000 AS pdd_s, quantileExactInclusive(0.95)(pdd_ms) / 1000 AS "
           "pdd_p95_s FROM calls WHERE pdd_ms IS NOT NULL")
    frame = client.query_df(sql, _params(tenant, start, end))
    return frame[frame["calls"] > 0].reset_index(drop=True)


# --- per client ---------------------------------------------------------------------------


def contacts_per_client(client: WarehouseClient, tenant: str, start: datetime,
                        end: datetime, *, did: str | None = None,
                        agent: str | None = None) -> float | None:
    """Inbound calls per distinct calling number (Zadarma analytics; CGRateS ``*ddc``).

    ``count(inbound calls) / count(distinct caller)``, calls from a hidden number (no
    caller) left out of both; in-progress calls count (they are contacts already).
    Source: ``cgrates/cgrates:docs/stats.rst``; Zadarma analytics (survey §3).
    """
    return _scalar(client, "contacts_per_client", tenant, start, end, (None, did, agent))


def repeat_call_rate(client: WarehouseClient, tenant: str, start: datetime, end: datetime,
                     repeat_window_h: float = DEFAULT_REPEAT_WINDOW_H, *,
                     did: str | None = None, agent: str | None = None) -> float | None:
    """Share of inbound callers who called again within N hours.

    ``callers with two inbound calls started at most N hours apart / inbound callers``,
    both calls inside ``[start, end)`` -- so a closed window's figure never changes when
    later calls arrive (a repeat across ``end`` is not seen). Any outcome counts, as for
    contacts. No peer defines it from CDRs; it is the survey's FCR proxy without the
    "first call answered" condition (survey §3, "First-call resolution (proxy)").
    """
    filter_sql, filter_params = _filters(None, did, agent)
    params = _params(tenant, start, end, repeat_window_h=repeat_window_h)
    rows = client.query(f"{_calls_cte(filter_sql)}{_REPEATS}", {**params, **filter_params})
    return rows[0]["repeat_call_rate"]


# --- the dashboard's one query ------------------------------------------------------------


def kpi_summary(client: WarehouseClient, tenant: str, start: datetime, end: datetime, *,
                threshold_s: float = DEFAULT_THRESHOLD_S,
                short_abandon_s: float = DEFAULT_SHORT_ABANDON_S,
                repeat_window_h: float = DEFAULT_REPEAT_WINDOW_H,
                direction: str | None = None, did: str | None = None,
                agent: str | None = None) -> Row:
    """Every KPI of this module in one statement, for the dashboard's headline tiles.

    Keys: the counts ``total, in_progress, offered, answered, abandoned, short_abandoned
    (waited less than short_abandon_s), queued, repeat_callers``; each function's KPI
    under its own name, computed exactly as that function does (``abandonment_rate`` and
    ``service_level_offered`` here keep every abandon), plus ``abandonment_rate_adjusted``
    and ``service_level_offered_adjusted`` (abandons shorter than ``short_abandon_s``
    left out: both variants side by side). Contact KPIs are always over inbound calls,
    so they are None when ``direction`` selects another direction. One statement: the
    rollup (for the whole slots of days rolled up since their last load: outcome
    components and, for a repeat window of 15 minutes or more, the callers' pieces) and
    cdrs FINAL for the rest of the window; without a rollup, cdrs FINAL twice (outcomes,
    and per-caller repeats).
    """
    filter_sql, filter_params = _filters(direction, did, agent)
    params = {**_params(tenant, start, end, threshold_s=threshold_s,
                        short_abandon_s=short_abandon_s, repeat_window_h=repeat_window_h),
              **filter_params, _NO_CUTOFF: 0}
    plan = _rollup_plan(client, _SUMMARY_EXPRS, params, agent)
    if plan is None:
        outcomes = f"SELECT {_select(_SUMMARY_EXPRS)} FROM calls"
    else:
        outcomes = (f"SELECT {_select(_SUMMARY_EXPRS, 'components')} FROM "
                    f"({_parts_sql(plan, _SUMMARY_EXPRS, filter_sql)})")
        params.update(plan["params"])
    ctes = f"{_calls_cte(filter_sql)}{_part_calls_cte(plan, filter_sql)}"
    contacts = f"(SELECT {_select(_CONTACTS)} FROM calls) AS c CROSS JOIN ({_REPEATS}) AS r"
    if plan is not None and params["repeat_window_ms"] >= SLOT_MS:  # see _CONTACTS_OF_PIECES
        ctes = f"{_part_calls_cte(plan, filter_sql, 'WITH ')}{_contacts_sql(plan, filter_sql)}"
        contacts = f"({_CONTACTS_OF_PIECES}) AS c"
    sql = f"{ctes}SELECT * FROM ({outcomes}) AS k CROSS JOIN {contacts}"
    rows = client.query(sql, params)
    return {key: (int(value) if key in _COUNTS or key == "repeat_callers" else value)
            for key, value in rows[0].items()}


def period_comparison(client: WarehouseClient, tenant: str, start: datetime, end: datetime,
                      *, threshold_s: float = DEFAULT_THRESHOLD_S,
                      short_abandon_s: float = DEFAULT_SHORT_ABANDON_S,
                      direction: str | None = None, did: str | None = None,
                      agent: str | None = None) -> dict[str, Row]:
    """The counts and outcome KPIs of ``[start, end)`` and of the window of the same length
    just before it: ``{"current": {...}, "previous": {...}}``.

    Each side holds exactly the keys and values :func:`kpi_summary` gives over its window,
    without the contact KPIs (``contacts_per_client``, ``repeat_call_rate``,
    ``repeat_callers``): those group every call by caller, which costs more than the rest
    together, and a period-over-period view does not show them. One statement and one
    FINAL read of the double window, split by period, so the two sides are read at the
    same moment and cannot disagree about a call revised in between.
    """
    filter_sql, filter_params = _filters(direction, did, agent)
    exprs = _SUMMARY_EXPRS
    previous_start = start - (end - start)
    params = {**_params(tenant, previous_start, end, threshold_s=threshold_s,
                        short_abandon_s=short_abandon_s), **filter_params, _NO_CUTOFF: 0,
              "split": start, "split_ms": _epoch_ms(start)}
    # the rollup's slots fall on one side of the split only if it is on a slot bound
    plan = (_rollup_plan(client, exprs, params, agent)
            if _epoch_ms(start) % SLOT_MS == 0 else None)
    is_current = "started_at >= {split:DateTime64(3, 'UTC')}"
    if plan is None:
        sql = (f"{_calls_cte(filter_sql)}SELECT {is_current} AS is_current, "
               f"{_select(exprs)} FROM calls GROUP BY is_current")
    else:
        split_key = ("is_current", "slot_ms >= {split_ms:Int64}", is_current)
        parts = _parts_sql(plan, exprs, filter_sql, key=split_key)
        sql = (f"{_part_calls_cte(plan, filter_sql, 'WITH ')}SELECT is_current, "
               f"{_select(exprs, 'components')} FROM ({parts}) GROUP BY is_current")
        params.update(plan["params"])
    rows = client.query(sql, params)
    by_period = {bool(row.pop("is_current")): row for row in rows}
    return {name: {key: (int(value) if key in _COUNTS else value)
                   for key, value in by_period.get(side, _empty(exprs)).items()}
            for name, side in (("current", True), ("previous", False))}


def _empty(exprs: dict[str, str]) -> Row:
    """A period without calls: counts 0, every rate and mean None (its denominator is 0)."""
    return {key: (0 if key in _COUNTS else None) for key in exprs}


# --- intervals ----------------------------------------------------------------------------


def _step(interval: str) -> str:
    if interval not in INTERVALS:
        raise ValueError(f"interval must be one of {', '.join(INTERVALS)}; got {interval!r}")
    return interval


def _interval_params(start: datetime, end: datetime, interval: str, tz: str) -> Row:
    """The bucket bounds (epoch ms) of ``[start, end)`` in the zone ``tz``: computed by
    :func:`core.timezones.bounds`, the same arithmetic as the agent statistics' intervals,
    so a local day is 23 or 25 hours long across a DST change."""
    edges = bounds(_aware(start), _aware(end), _step(interval), zone(tz))
    return {"bounds": [_epoch_ms(b) for b in edges], "start_ms": _epoch_ms(start),
            "end_ms": _epoch_ms(end), "tz": tz}


def _aware(ts: datetime) -> datetime:
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def _epoch_ms(ts: datetime) -> int:
    """Epoch milliseconds; a naive datetime is UTC, as everywhere in the warehouse."""
    return round(_aware(ts).timestamp() * 1000)


_BOUNDS = "{bounds:Array(Int64)}"
def _bucket(ms: str) -> str:
    """The bucket an instant (epoch ms) falls in: the last bound at or before it."""
    return f"{_BOUNDS}[arrayCount(b -> b <= {ms}, {_BOUNDS})]"


_BUCKET = _bucket("toUnixTimestamp64Milli(started_at)")
"""The bucket a call's start falls in."""
_BUCKET_KEY = ("bucket_ms", _bucket("slot_ms"), _BUCKET)
_GRID = f"(SELECT arrayJoin(arrayPopBack({_BOUNDS})) AS bucket_ms) AS g"
"""Every bucket of the window, empty ones included."""


_TALK_DAYS = day_bounds("start", "end", lookback_days=TALK_LOOKBACK_DAYS)
"""Calls that can talk inside the window: offered from TALK_LOOKBACK_DAYS before it on."""


_TALKED = ("closed AND answered_at IS NOT NULL AND ended_at IS NOT NULL "
           "AND ended_at > answered_at")
"""A call that talked: closed, answered, with an end after its answer."""


def _talk_split_sql(filter_sql: str, days: str = "", lo: str = "{start_ms:Int64}",
                    hi: str = "{end_ms:Int64}") -> str:
    """Talk ms per bucket, each call's ``[answered_at, ended_at)`` cut at bucket bounds.

    The talk is first clipped to ``[lo, hi)`` (SQL of epoch ms; the window by default);
    ``arrayFilter`` lists the buckets the clipped segment overlaps and ``arrayJoin`` makes
    one row per (call, bucket), whose share is the overlap of the segment with that
    bucket. ``days``: more conditions on the calls read (e.g. which ``call_day``).
    """
    return (
        f"SELECT {_BOUNDS}[i] AS bucket_ms, sum(least(e, {_BOUNDS}[i + 1]) - "
        f"greatest(a, {_BOUNDS}[i])) AS talk_time_ms FROM ("
        f"SELECT greatest(toUnixTimestamp64Milli(assumeNotNull(answered_at)), {lo})"
        f" AS a, least(toUnixTimestamp64Milli(assumeNotNull(ended_at)), {hi}) AS e, "
        f"arrayJoin(arrayFilter(j -> {_BOUNDS}[j] < e AND {_BOUNDS}[j + 1] > a, "
        f"range(1, length({_BOUNDS})))) AS i "
        f"FROM {CDRS} FINAL WHERE tenant = {{tenant:String}} AND {_TALK_DAYS}{days} AND "
        f"{_TALKED} AND answered_at < {{end:DateTime64(3, 'UTC')}} AND ended_at > "
        f"{{start:DateTime64(3, 'UTC')}}{filter_sql} AND e > a) GROUP BY bucket_ms"
    )


def _talk_sql(plan: Row | None, filter_sql: str) -> str:
    """``bucket_ms, talk_time_ms`` of the window: with a plan, the rollup's talk slots
    (:data:`CDR_ROLLUP_TALK`) of the window's whole slots, from the calls of the current
    days (the day before the window included: its calls may still talk in it), plus cdrs
    FINAL for the calls of the other days and for the talk outside whole slots."""
    if plan is None:
        return _talk_split_sql(filter_sql)
    p = plan["params"]
    talk_days = " AND call_day IN {talk_days:Array(Date)}"
    parts = [f"SELECT {_bucket('slot_ms')} AS bucket_ms, talk_ms AS talk_time_ms FROM "
             f"{CDR_ROLLUP_TALK} FINAL WHERE tenant = {{tenant:String}} AND catalogue = "
             f"{{catalogue:String}}{talk_days} AND generation = {{talk_generations:Array("
             "DateTime64(3, 'UTC'))}[indexOf({talk_days:Array(Date)}, call_day)] AND "
             f"slot_ms >= {{whole_from:Int64}} AND slot_ms < {{whole_to:Int64}}{filter_sql}"]
    if p["talk_raw_days"]:
        parts.append(_talk_split_sql(filter_sql, " AND call_day IN {talk_raw_days:Array(Date)}"))
    if p["talk_days"]:
        if p["whole_from"] >= p["whole_to"]:  # no whole slot: the window is all ragged
            parts.append(_talk_split_sql(filter_sql, talk_days))
        else:
            if p["start_ms"] < p["whole_from"]:
                parts.append(_talk_split_sql(filter_sql, talk_days, hi="{whole_from:Int64}"))
            if p["whole_to"] < p["end_ms"]:
                parts.append(_talk_split_sql(filter_sql, talk_days, lo="{whole_to:Int64}"))
    return (f"SELECT bucket_ms, sum(talk_time_ms) AS talk_time_ms FROM ("
            f"{' UNION ALL '.join(parts)}) GROUP BY bucket_ms")


def talk_time_by_interval(client: WarehouseClient, tenant: str, start: datetime,
                          end: datetime, interval: str = "1 hour", *, tz: str = UTC_ZONE,
                          direction: str | None = None, did: str | None = None,
                          agent: str | None = None) -> pd.DataFrame:
    """Talk time that happened in each interval of ``[start, end)``, in ms (DESIGN §7).

    A call talking from 09:55 to 10:07 gives 5 min to 09:00 and 7 min to 10:00; calls
    that started before ``start`` give the part of their talk inside the window. Flex
    Insights attributes a whole talk to its start interval and over/under-reports
    intraday (survey §3, data-model caveats); this does not. Closed answered calls only
    (an ongoing talk has no end yet). Intervals are local to ``tz`` (the tenant's IANA
    zone: a '1 day' interval is a local day). Columns ``interval_start`` (in ``tz``),
    ``talk_time_ms``; empty intervals are present with 0. Whole slots of rolled-up days
    come from the talk rollup (:func:`_talk_sql`), without an agent filter.
    """
    filter_sql, filter_params = _filters(direction, did, agent)
    params = {**_params(tenant, start, end), **filter_params,
              **_interval_params(start, end, interval, tz)}
    plan = (_rollup_plan(client, {}, params, agent)
            if all(b % SLOT_MS == 0 for b in params["bounds"]) else None)
    if plan is not None:
        params.update(plan["params"])
    sql = (f"SELECT fromUnixTimestamp64Milli(bucket_ms, {{tz:String}}) AS interval_start, "
           f"talk_time_ms FROM {_GRID} LEFT JOIN ({_talk_sql(plan, filter_sql)}) AS t "
           "USING bucket_ms ORDER BY interval_start")
    return client.query_df(sql, params)


def kpis_by_interval(client: WarehouseClient, tenant: str, start: datetime, end: datetime,
                     interval: str = "1 hour", *, tz: str = UTC_ZONE,
                     threshold_s: float = DEFAULT_THRESHOLD_S,
                     short_abandon_s: float | None = None, direction: str | None = None,
                     did: str | None = None, agent: str | None = None) -> pd.DataFrame:
    """The counts and outcome KPIs per interval (``'15 minute'``, ``'1 hour'``, ``'1 day'``).

    A call belongs to the interval in which it started (was offered), as Amazon Connect
    and Wazo bucket contacts; ``talk_time_ms`` instead is the talk that happened inside
    the interval (:func:`talk_time_by_interval`), so a long call does not pile its talk
    onto its first interval. One row per interval from the one holding ``start`` up to
    ``end``, empty ones included (counts 0, KPIs None -- NaN in the DataFrame).
    ``short_abandoned`` and the two abandon KPIs use ``short_abandon_s`` (None: every
    abandon counts). Intervals are local to ``tz`` (the tenant's IANA zone; a '1 day'
    interval is a local day, 23 or 25 h across DST); ``interval_start`` is shown in it.
    """
    filter_sql, filter_params = _filters(direction, did, agent)
    exprs = _INTERVAL_EXPRS[_CUTOFF if short_abandon_s else _NO_CUTOFF]
    interval_params = _interval_params(start, end, interval, tz)
    params = {**_params(tenant, start, end, threshold_s=threshold_s,
                        short_abandon_s=short_abandon_s), **filter_params, _NO_CUTOFF: 0,
              **interval_params}
    aligned = all(b % SLOT_MS == 0 for b in interval_params["bounds"])
    plan = _rollup_plan(client, exprs, params, agent) if aligned else None
    if plan is None:
        per_bucket = (f"SELECT {_BUCKET} AS bucket_ms, {_select(exprs)} FROM calls "
                      "GROUP BY bucket_ms")
        ctes = _calls_cte(filter_sql)
    else:
        per_bucket = (f"SELECT bucket_ms, {_select(exprs, 'components')} FROM "
                      f"({_parts_sql(plan, exprs, filter_sql, key=_BUCKET_KEY)}) "
                      "GROUP BY bucket_ms")
        ctes = _part_calls_cte(plan, filter_sql, "WITH ")
        params.update(plan["params"])
    sql = (f"{ctes}SELECT fromUnixTimestamp64Milli(bucket_ms, {{tz:String}})"
           f" AS interval_start, {', '.join(exprs)}, talk_time_ms FROM {_GRID} LEFT JOIN ("
           f"{per_bucket}) AS k USING bucket_ms LEFT JOIN ({_talk_sql(plan, filter_sql)}) AS t "
           "USING bucket_ms ORDER BY interval_start")
    return client.query_df(sql, params)


# --- the rollup path ------------------------------------------------------------------------
# warehouse.rollup stores the components per (tenant, call_day, 15-minute UTC slot,
# direction, did) for days rebuilt from cdrs FINAL. A query reads the rollup rows of the
# slots wholly inside its window on the days whose rollup is current (no revision loaded
# since it was built), and cdrs FINAL for everything else: the days not current, and the
# parts of the first and last day outside whole slots. The two sets of calls are disjoint
# and cover the window, and the components add up, so every formula gives what it gives
# over cdrs FINAL alone. The same split serves the talk per interval (cdr_rollup_talk: talk
# ms per slot it happened in, from the calls of current days, the day before the window
# included) and the contact KPIs (cdr_rollup_callers: per slot and caller, the contacts and
# their first and last start; see _CONTACTS_OF_PIECES).

SLOT_MS = 15 * 60 * 1000
"""The rollup's slot: every bucket bound of a zone whose offset is a multiple of 15 minutes
(every zone in use today) falls on one, so slots never straddle a bucket."""

_PIECE_KEYS = "slot_ms, direction, did, contact"
"""What the rollup's caller pieces are keyed by (with tenant and day)."""

_FROZEN = True
"""Set below: every component is registered by then (the catalogue is fixed at import)."""


def build_params() -> Row:
    """The parameter values the rollup's components are built with (the defaults)."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    params = _params("", epoch, epoch, threshold_s=DEFAULT_THRESHOLD_S,
                     short_abandon_s=DEFAULT_SHORT_ABANDON_S)
    return {**params, _NO_CUTOFF: 0}


def _param_names(sql: str) -> set[str]:
    return set(re.findall(r"\{(\w+):", sql))


_CALLER_KEY = "reinterpretAsUInt128(sipHash128(assumeNotNull(caller)))"
"""A caller as the rollup keeps it: the 128-bit SipHash uniqExact counts strings by (a
collision among 10^7 numbers has odds near 10^-25), grouped twice as fast as a String."""


def _contact_pieces_sql(source: str, keys: str = "slot_ms, contact") -> str:
    """The inbound contacts (:data:`_CONTACT`) of ``source``, a relation of calls, grouped
    by ``keys`` (always within one 15-minute slot of the start, ``slot_ms``; ``contact``
    is the caller, :data:`_CALLER_KEY`): ``calls`` and the first and last start in ms."""
    ms = "toUnixTimestamp64Milli(started_at)"
    return (f"SELECT {keys}, toUInt32(count()) AS calls, min({ms}) AS first_ms, "
            f"max({ms}) AS last_ms FROM (SELECT *, intDiv({ms}, {SLOT_MS}) * {SLOT_MS} AS "
            f"slot_ms, {_CALLER_KEY} AS contact FROM {source} WHERE {_CONTACT}) "
            f"GROUP BY {keys}")


def _talk_slots_sql(source: str) -> str:
    """``slot_ms, direction, did, talk_ms``: the talk of ``source``'s calls (a relation of
    calls) per 15-minute UTC slot it happened in, each ``[answered_at, ended_at)`` cut at
    slot bounds (as :func:`_talk_split_sql` cuts at bucket bounds)."""
    return (f"SELECT slot_ms, direction, did, sum(least(e, slot_ms + {SLOT_MS}) - "
            "greatest(a, slot_ms)) AS talk_ms FROM (SELECT toUnixTimestamp64Milli("
            "assumeNotNull(answered_at)) AS a, toUnixTimestamp64Milli(assumeNotNull(ended_at))"
            f" AS e, direction, did, arrayJoin(range(intDiv(a, {SLOT_MS}) * {SLOT_MS}, e, "
            f"{SLOT_MS})) AS slot_ms FROM {source} WHERE {_TALKED}) "
            "GROUP BY slot_ms, direction, did")


def _catalogue() -> str:
    """Hash of every component's SQL and the values of the parameters they use."""
    build = build_params()
    text = "\n".join(f"{name}={sql}" for name, sql in sorted(COMPONENTS.items()))
    text += f"\n{_talk_slots_sql('calls')}\n{_contact_pieces_sql('calls', _PIECE_KEYS)}"
    used = sorted(set().union(*(_param_names(sql) for sql in COMPONENTS.values())))
    text += "\n" + "\n".join(f"{name}={build[name]!r}" for name in used)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


CATALOGUE = _catalogue()
"""The rollup rows of another catalogue (other formulas, other defaults) are never read."""


def component_column(name: str) -> str:
    """A component over the calls, as the Int64 the rollup stores (NULL sums are 0)."""
    return f"toInt64(ifNull({COMPONENTS[name]}, 0))"


def _rollup_plan(client: WarehouseClient, exprs: dict[str, str], params: Row,
                 agent: str | None) -> Row | None:
    """Which days of the window the rollup serves, or None when it cannot serve the query
    (an agent filter: the rollup has no agent; parameters other than the build's)."""
    if agent is not None:
        return None
    build = build_params()
    names = components_of(exprs)
    used = set().union(*(_param_names(COMPONENTS[n]) for n in names))
    if any(params[p] != build[p] for p in used):
        return None
    start, end = _aware(params["start"]), _aware(params["end"])
    if end <= start:
        return None
    current = client.query(
        f"SELECT r.call_day AS day, r.generation AS generation, r.build AS build FROM (SELECT "
        "call_day, max(m.generation) AS generation, argMax(m.build, (m.generation, m.build)) "
        f"AS build FROM {CDR_ROLLUP_DAYS} AS m WHERE tenant = "
        f"{{tenant:String}} AND catalogue = {{catalogue:String}} AND {_TALK_DAYS}"
        f" GROUP BY call_day) AS r INNER JOIN (SELECT call_day, max(loaded_to) AS loaded_to "
        f"FROM {CDR_DAYS_LOADED} WHERE tenant = {{tenant:String}} AND "
        f"{_TALK_DAYS} GROUP BY call_day) AS l USING call_day "
        "WHERE r.generation >= l.loaded_to ORDER BY day",
        {"tenant": params["tenant"], "catalogue": CATALOGUE, "start": start, "end": end})
    clean = {_as_date(row["day"]): row["generation"] for row in current}
    builds = {_as_date(row["day"]): int(row["build"]) for row in current}
    first, last = start.date(), (end - timedelta(milliseconds=1)).date()
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    talk = [first - timedelta(days=i) for i in range(TALK_LOOKBACK_DAYS, 0, -1)] + days
    start_ms, end_ms = _epoch_ms(start), _epoch_ms(end)
    whole_from = -(-start_ms // SLOT_MS) * SLOT_MS
    whole_to = end_ms // SLOT_MS * SLOT_MS
    rollup_days = [d for d in days if d in clean]
    talk_days = [d for d in talk if d in clean]
    return {"names": names, "params": {
        "raw_days": [d for d in days if d not in clean],
        # the calls of a current day outside whole slots: [start, whole_from) lies in the
        # start's day and [whole_to, end) in the end's (midnight is a slot bound)
        "edge_days": sorted({d for d, ragged in ((first, start_ms < whole_from),
                                                 (last, end_ms > whole_to))
                             if ragged and d in clean}),
        "rollup_days": rollup_days, "rollup_generations": [clean[d] for d in rollup_days],
        "rollup_builds": [builds[d] for d in rollup_days],
        # talk in the window: also from the calls of the days before it (TALK_LOOKBACK_DAYS)
        "talk_raw_days": [d for d in talk if d not in clean],
        "talk_days": talk_days, "talk_generations": [clean[d] for d in talk_days],
        "start_ms": start_ms, "end_ms": end_ms,
        "whole_from": whole_from, "whole_to": whole_to,
        "whole_from_ts": _from_ms(whole_from), "whole_to_ts": _from_ms(whole_to),
        "catalogue": CATALOGUE}}


def _contacts_sql(plan: Row, filter_sql: str) -> str:
    """``contact_pieces`` (a CTE, after ``part_calls``): the rollup's caller pieces of the
    window's whole slots on current days (:data:`CDR_ROLLUP_CALLERS`; no FINAL: the rows of
    the builds the days' markers name, one copy each -- a set lookup, as builds are random
    63-bit numbers, one per rebuild), and part_calls'."""
    return (f", contact_pieces AS (SELECT contact, calls, first_ms, last_ms FROM "
            f"{CDR_ROLLUP_CALLERS} WHERE tenant = {{tenant:String}} AND catalogue = "
            "{catalogue:String} AND call_day IN {rollup_days:Array(Date)} AND build IN "
            "{rollup_builds:Array(UInt64)} AND slot_ms >= {whole_from:Int64} AND "
            f"slot_ms < {{whole_to:Int64}}{filter_sql} UNION ALL SELECT contact, calls, "
            f"first_ms, last_ms FROM ({_contact_pieces_sql('part_calls')})) ")


def _as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def _from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _part_calls_cte(plan: Row | None, filter_sql: str, lead: str = ", ") -> str:
    """``part_calls``: the window's calls the rollup does not hold (cdrs FINAL): every call
    of a day whose rollup is not current, and on the first and last day the calls outside
    the window's whole slots. Nothing when the plan is None; an empty relation, with no
    FINAL read at all, when the rollup holds the whole window (a FINAL over an empty day
    list still cost up to 200 ms on the 10 M benchmark)."""
    if plan is None:
        return ""
    columns = ", ".join(_CALL_COLUMNS)
    ts = "DateTime64(3, 'UTC')"
    parts = []
    if plan["params"]["raw_days"]:
        parts.append(f"SELECT {columns} FROM {CDRS} FINAL WHERE {CALL_WINDOW} AND call_day IN "
                     f"{{raw_days:Array(Date)}}{filter_sql}")
    if plan["params"]["edge_days"]:
        parts.append(f"SELECT {columns} FROM {CDRS} FINAL WHERE {CALL_WINDOW} AND call_day IN "
                     f"{{edge_days:Array(Date)}} AND (started_at < {{whole_from_ts:{ts}}} OR "
                     f"started_at >= {{whole_to_ts:{ts}}}){filter_sql}")
    body = " UNION ALL ".join(parts) or f"SELECT {columns} FROM {CDRS} WHERE 0"
    return f"{lead}part_calls AS ({body}) "


def _parts_sql(plan: Row, exprs: dict[str, str], filter_sql: str, *,
               key: tuple[str, str, str] | None = None) -> str:
    """The components of ``exprs`` from the rollup's rows and from ``part_calls``, one
    row per rollup row and per ``key`` of part_calls (sum them: :func:`_render`).
    ``key``: (alias, its SQL over a rollup row's ``slot_ms``, its SQL over a call)."""
    names = plan["names"]
    stored = ", ".join(f"components['{n}'] AS {n}" for n in names)
    computed = ", ".join(f"{component_column(n)} AS {n}" for n in names)
    alias, over_slot, over_call = key or ("", "", "")
    rollup = (f"SELECT {f'{over_slot} AS {alias}, ' if key else ''}{stored} "
              f"FROM {CDR_ROLLUP} FINAL WHERE tenant = {{tenant:String}} AND catalogue = "
              "{catalogue:String} AND call_day IN {rollup_days:Array(Date)} AND generation = "
              "{rollup_generations:Array(DateTime64(3, 'UTC'))}[indexOf("
              "{rollup_days:Array(Date)}, call_day)] AND slot_ms >= {whole_from:Int64} AND "
              f"slot_ms < {{whole_to:Int64}}{filter_sql}")
    raw = (f"SELECT {f'{over_call} AS {alias}, ' if key else ''}{computed} FROM part_calls"
           f"{f' GROUP BY {alias}' if key else ''}")
    return f"{rollup} UNION ALL {raw}"
