"""The KPI glossary: one definition per KPI, the calls it counts, its source, its query.

Every page shows KPIs computed by the named query given here and links its figures to
this glossary (the dashboards' Glossary page renders :data:`GLOSSARY`); a KPI that
appears on several pages is the same SQL aggregate over the same calls on each
(:mod:`warehouse.queries.kpi`'s catalogue). ``tests/warehouse/test_glossary.py`` checks
that every entry names a real query and that the pages' figures agree.

Times: every day, hour and interval is the tenant's local one (its IANA zone from
provisioning, :mod:`core.timezones`); windows are instants, so a KPI over the same
calls is the same whatever zone shows it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Kpi", "GLOSSARY", "INBOUND", "ANY", "TRUNK", "AGENT", "entry"]

INBOUND = "inbound calls only (not outbound, not internal)"
ANY = "every direction (inbound, outbound, internal); a direction filter narrows it"
TRUNK = "calls the PBX sent to the trunk (outbound, forwards to outside numbers)"
AGENT = "calls that rang or were handled by the agent, any direction"


@dataclass(frozen=True)
class Kpi:
    """One KPI: ``name`` (the query's result key), a title, what it is, the calls it
    counts, where the definition comes from, and the named query computing it."""

    name: str
    title: str
    definition: str
    counts: str
    source: str
    query: str


GLOSSARY: tuple[Kpi, ...] = (
    Kpi("offered", "Offered", "Closed calls, whatever the outcome.", INBOUND,
        "Wazo 'received', Genesys 'offered'", "kpi.kpi_summary"),
    Kpi("queued", "Queued",
        "Calls that reached an agent's phone or were refused by one: answered, abandoned, "
        "no answer, busy and declined (603). Network failures (404, 5xx, 3xx) are not.",
        INBOUND, "Amazon Connect 'contacts queued'; busy/declined counted as in Wazo",
        "kpi.kpi_summary"),
    Kpi("service_level_offered", "Service level",
        "(Answered within T + abandoned within T) / queued; T = 20 s. Busy, declined and "
        "no-answer calls are queued and never inside T.", INBOUND,
        "Amazon Connect 'Service level X'", "kpi.service_level_offered"),
    Kpi("service_level_answered", "Service level (answered)",
        "Answered within T / answered; abandons on neither side.", INBOUND,
        "Wazo QoS, Asterisk ServiceLevelPerf", "kpi.service_level_answered"),
    Kpi("answer_rate", "Answer rate",
        "Answered / offered: over closed calls, calls still in progress left out (not yet "
        "an outcome).", INBOUND,
        "Wazo answered_rate, Genesys", "kpi.answer_rate"),
    Kpi("abandonment_rate", "Abandon rate",
        "Abandoned (caller hung up while it rang) / queued; 'adjusted' leaves abandons "
        "shorter than 10 s out of both sides.", INBOUND,
        "Amazon Connect; Google CCAI / industry 'adjusted'", "kpi.abandonment_rate"),
    Kpi("asa", "ASA", "Mean wait (offer to answer) of answered calls, seconds.", INBOUND,
        "Amazon Connect 'Average queue answer time'", "kpi.asa"),
    Kpi("average_wait", "Average wait",
        "Mean wait of every queued call (to answer, or to the end when unanswered).",
        INBOUND, "Wazo average_waiting_time", "kpi.average_wait"),
    Kpi("aht_talk_only", "AHT (talk + hold)",
        "Talk time per answered call, answer to end: hold included (hold_ms is the part "
        "on hold), after-call work not (see the agents' wrap-up).", ANY,
        "Amazon Connect / Genesys AHT without ACW", "kpi.aht_talk_only"),
    Kpi("acd", "ACD", "Connected time (hold included) per answered call, seconds.", ANY,
        "CGRateS *acd (answered calls only), Kazoo billing_seconds", "kpi.acd"),
    Kpi("asr", "ASR", "Answered / attempts (every closed call).", ANY,
        "CGRateS *asr", "kpi.asr"),
    Kpi("ser", "SER", "Answered / (attempts - 3xx redirects).", ANY, "RFC 6076 §4.6",
        "kpi.ser"),
    Kpi("seer", "SEER", "(Answered + 480/486/600/603) / (attempts - 3xx).", ANY,
        "RFC 6076 §4.7", "kpi.seer"),
    Kpi("pdd", "PDD",
        "Post-dial delay: INVITE to the first 18x or the answer, seconds; per trunk on "
        "the Trends page.", TRUNK, "RFC 6076 §4.2 SRD; CGRateS *pdd", "kpi.pdd_by_trunk"),
    Kpi("contacts_per_client", "Contacts per client",
        "Inbound calls / distinct calling numbers (hidden numbers left out); calls in "
        "progress count.", INBOUND, "Zadarma analytics; CGRateS *ddc",
        "kpi.contacts_per_client"),
    Kpi("repeat_call_rate", "Repeat-call rate",
        "Callers with two calls at most N hours apart (N = 24) / callers.", INBOUND,
        "survey §3 FCR proxy", "kpi.repeat_call_rate"),
    Kpi("agent_aht", "Agent AHT (talk + hold)",
        "Per agent: talk time (hold included) of the calls whose talk ended in the "
        "period / those calls.", AGENT, "Amazon Connect AHT without ACW",
        "agent_stats.agent_table"),
    Kpi("occupancy", "Occupancy",
        "(Talk + wrap-up) / (talk + wrap-up + available), a ratio of sums.", AGENT,
        "Amazon Connect occupancy", "agent_stats.agent_table"),
    Kpi("callback_success", "Callback success",
        "Missed-call items opened in the period that an answered call closed / items; "
        "night and weekend flags are the first missed call's, in the tenant's zone.",
        "inbound missed calls; the closing call in either direction",
        "Amazon Connect callbacks handled; Zadarma missed-call list",
        "callbacks.callback_summary"),
)
"""Every KPI the dashboards show, in the order the Glossary page lists them."""


def entry(name: str) -> Kpi:
    """The glossary entry of a KPI by name; KeyError if it has none."""
    for kpi in GLOSSARY:
        if kpi.name == name:
            return kpi
    raise KeyError(name)
