"""KPI queries on hand-made calls, each expected figure worked out here from the table.

The day (UTC, window [09:00, 12:00) on 2026-11-26, tenant acme; T = 20 s, S = 10 s).
"wait" is ring_ms (offer -> answer, or offer -> end when unanswered):

    call  start  dir  caller  disposition (sip)  wait    talk  agent  note
    a1    09:00  in   A       answered           5       60    101    v1 in_progress, v2 closed
    a2    09:10  in   B       answered           20      120   101    wait exactly T
    a3    09:20  in   A       answered           20.001  30    102    just over T
    out1  09:45  out  101     answered           10      1200  103    talk crosses 10:00
    a4    10:05  in   C       answered           40      90    102    v2 counts (v1: 5 s, 10 s)
    ab1   09:30  in   D       cancelled          8                    short abandon (< S)
    ab2   10:30  in   E       cancelled          10                   wait exactly S: not short
    ab3   11:00  in   A       cancelled          45
    na1   11:10  in   F       no_answer (480)    30
    bz1   11:20  in   G       busy (486)         2
    fl1   11:30  in   H       failed (302)       1                    a redirect
    fl2   11:40  in   B       failed (503)       3
    ip1   11:50  in   B       in_progress                             no outcome yet
    h1    11:55  in   (none)  in_progress                             hidden number
  out of the window or of the tenant:
    pre1  08:50  in   Z       answered           10      1200  101    talks 08:50:10-09:10:10
    x2    08:59:59.999 in A   busy               0.5                  starts before the window
    x1    12:00  in   A       answered           5       60    101    end is exclusive
    mv    10:00 in v1, moved to 08:00 by v2 (a late event; latest revision counts)
    g1    09:30 globex's call, answered after 100 s

    ab3 and a4 came in on the sales line (did SALES); every other call on MAIN.

Queue KPIs count inbound calls only (out1 is outbound); busy counts as queued.
Counts: total 14 (every direction), in progress 2 (ip1, h1), offered = closed inbound 11,
answered 4 (a1 a2 a3 a4), abandoned 3, short abandons 1 (ab1), queued = answered +
abandoned + no_answer + busy = 9. SIP-level KPIs (ASR, SER, SEER, ACD, AHT) count every
direction: 12 closed calls, 5 answered (out1 too).
"""

from datetime import datetime, timedelta

import pandas as pd
import pytest
from conftest import SETTINGS, T0, cdr_records, make_cdr

from core.records import Cdr, Disposition
from warehouse.loader import Loader, routes_for
from warehouse.queries import Queries, kpi
from warehouse.queries import cdr as cdr_queries

D = Disposition
START, END = T0, T0 + timedelta(hours=3)
MAIN, SALES = "+74957654321", "+74950000002"
A, B, C, Z = "+79160000001", "+79160000002", "+79160000003", "+79160000026"


def at(minutes: float, seconds: float = 0) -> datetime:
    return T0 + timedelta(minutes=minutes, seconds=seconds)


def call(call_id: str, start: datetime, disposition: Disposition, wait_s: float = 0,
         talk_s: float = 0, version: int = 1, **kw) -> Cdr:
    """A CDR revision whose times agree with each other, as the fold makes them."""
    closed = disposition != D.IN_PROGRESS
    answered = start + timedelta(seconds=wait_s) if disposition == D.ANSWERED else None
    ended = None
    if closed:
        ended = (answered + timedelta(seconds=talk_s) if answered
                 else start + timedelta(seconds=wait_s))
    kw.setdefault("did", MAIN)
    return make_cdr(call_id, version=version, event_count=version, started_at=start,
                    answered_at=answered, ended_at=ended, ring_ms=round(wait_s * 1000),
                    talk_ms=round(talk_s * 1000), disposition=disposition, closed=closed,
                    last_event_ts=ended or start, **kw)


REVISIONS = [
    call("a1", at(0), D.IN_PROGRESS, caller=A),
    call("a1", at(0), D.ANSWERED, 5, 60, version=2, caller=A, agent="101"),
    call("a2", at(10), D.ANSWERED, 20, 120, caller=B, agent="101"),
    call("a3", at(20), D.ANSWERED, 20.001, 30, caller=A, agent="102"),
    call("out1", at(45), D.ANSWERED, 10, 1200, direction="outbound", caller="101",
         callee="+79160000099", agent="103"),
    call("a4", at(65), D.ANSWERED, 40, 90, version=2, caller=C, agent="102", did=SALES),
    call("a4", at(65), D.ANSWERED, 5, 10, caller=C, agent="102", did=SALES),  # v1, late
    call("ab1", at(30), D.CANCELLED, 8, caller="+79160000004", sip_code=487),
    call("ab2", at(90), D.CANCELLED, 10, caller="+79160000005", sip_code=487),
    call("ab3", at(120), D.CANCELLED, 45, caller=A, sip_code=487, did=SALES),
    call("na1", at(130), D.NO_ANSWER, 30, caller="+79160000006", sip_code=480),
    call("bz1", at(140), D.BUSY, 2, caller="+79160000007", sip_code=486),
    call("fl1", at(150), D.FAILED, 1, caller="+79160000008", sip_code=302),
    call("fl2", at(160), D.FAILED, 3, caller=B, sip_code=503),
    call("ip1", at(170), D.IN_PROGRESS, caller=B),
    call("h1", at(175), D.IN_PROGRESS, caller=None),
    call("pre1", at(-10), D.ANSWERED, 10, 1200, caller=Z, agent="101"),
    call("x2", at(0, -0.001), D.BUSY, 0.5, caller=A, sip_code=486),
    call("x1", at(180), D.ANSWERED, 5, 60, caller=A, agent="101"),
    call("mv", at(60), D.ANSWERED, 5, 60, caller=A, agent="101"),
    call("mv", at(-60), D.CANCELLED, 5, version=2, caller=A),
    call("g1", at(30), D.ANSWERED, 100, 100, tenant="globex", caller=A, agent="101"),
]


@pytest.fixture
def day(store):
    loader = Loader(store, routes_for(SETTINGS), dead_letters=lambda d: None)
    for offset, revision in enumerate(REVISIONS):  # one insert per revision, as in life
        loader.load(cdr_records([revision], first_offset=offset))
    return store


def kpis(client, tenant="acme", start=START, end=END, **kw):
    return kpi.kpi_summary(client, tenant, start, end, **kw)


# --- service level ------------------------------------------------------------------------


def test_service_level_answered_counts_exactly_t_as_inside(day):
    # inbound answered waits 5, 20, 20.001, 40 -> 2 of 4 within 20 s (20.001 is outside)
    assert kpi.service_level_answered(day, "acme", START, END, 20) == pytest.approx(2 / 4)


def test_service_level_answered_moves_with_the_threshold(day):
    # T = 20.001 s takes a3 in (3 of 4); T = 5 s leaves only a1 (1 of 4)
    assert kpi.service_level_answered(day, "acme", START, END, 20.001) == pytest.approx(3 / 4)
    assert kpi.service_level_answered(day, "acme", START, END, 5) == pytest.approx(1 / 4)


def test_service_level_offered_counts_abandons_inside_t_as_success(day):
    # removed within 20 s: answered a1 a2 + abandoned ab1 (8 s), ab2 (10 s) = 4;
    # queued 9 (4 answered, 3 abandoned, 1 no-answer, 1 busy) -> 4/9: the busy bz1
    # (2 s) is queued and not a success, so refusing calls lowers the service level
    assert kpi.service_level_offered(day, "acme", START, END, 20) == pytest.approx(4 / 9)


def test_service_level_offered_without_short_abandons(day):
    # S = 10 s drops ab1 (8 s) from both sides: 3/8; ab2 waited exactly 10 s and stays
    assert kpi.service_level_offered(day, "acme", START, END, 20, short_abandon_s=10) \
        == pytest.approx(3 / 8)


# --- rates --------------------------------------------------------------------------------


def test_answer_rate_is_answered_over_every_closed_inbound_call(day):
    # 4 answered of 11 closed inbound; in-progress calls are not yet an outcome, out1 is
    # outbound
    assert kpi.answer_rate(day, "acme", START, END) == pytest.approx(4 / 11)


def test_answer_rate_matches_the_cdr_summary(day):
    assert kpi.answer_rate(day, "acme", START, END) \
        == pytest.approx(cdr_queries.calls_summary(day, "acme", START, END)["answer_rate"])


def test_abandonment_rate_both_variants(day):
    # Connect: 3 abandoned / 9 queued; adjusted (S = 10 s): ab1 out -> 2 / 8
    assert kpi.abandonment_rate(day, "acme", START, END) == pytest.approx(3 / 9)
    assert kpi.abandonment_rate(day, "acme", START, END, short_abandon_s=10) \
        == pytest.approx(2 / 8)


def test_abandonment_rate_short_cut_off_just_above_a_wait(day):
    # S = 10.001 s also takes ab2 (exactly 10 s) out: 1 / 7
    assert kpi.abandonment_rate(day, "acme", START, END, short_abandon_s=10.001) \
        == pytest.approx(1 / 7)


def test_asr_counts_every_closed_attempt(day):
    # CGRateS: answered 5 / attempts 12 (the 302 redirect is an attempt)
    assert kpi.asr(day, "acme", START, END) == pytest.approx(5 / 12)


def test_ser_leaves_redirects_out(day):
    # RFC 6076 SER: 5 / (12 - 1 redirect)
    assert kpi.ser(day, "acme", START, END) == pytest.approx(5 / 11)


def test_seer_counts_busy_and_unavailable_as_effective(day):
    # RFC 6076 SEER: (5 answered + na1 480 + bz1 486) / 11; fl2's 503 is not effective
    assert kpi.seer(day, "acme", START, END) == pytest.approx(7 / 11)


# --- durations ----------------------------------------------------------------------------


def test_acd_is_talk_per_answered_call(day):
    # (60 + 120 + 30 + 1200 + 90) / 5 = 300 s; a4's first revision (10 s) does not count
    assert kpi.acd(day, "acme", START, END) == pytest.approx(300)


def test_aht_talk_only_equals_acd_until_hold_and_wrap_up_exist(day):
    assert kpi.aht_talk_only(day, "acme", START, END) == pytest.approx(300)


def test_asa_is_the_mean_wait_of_answered_calls(day):
    # inbound: (5 + 20 + 20.001 + 40) / 4 s
    assert kpi.asa(day, "acme", START, END) == pytest.approx(85.001 / 4)


def test_average_wait_is_over_every_queued_call(day):
    # answered 85.001 + abandoned 8 + 10 + 45 + no-answer 30 + busy 2 = 180.001 s / 9
    assert kpi.average_wait(day, "acme", START, END) == pytest.approx(180.001 / 9)


# --- per client ---------------------------------------------------------------------------


def test_contacts_per_client(day):
    # 12 inbound calls with a number (ip1 counts, h1 is hidden, out1 is outbound)
    # from 8 numbers (A 3x, B 3x, C D E F G H once) -> 1.5
    assert kpi.contacts_per_client(day, "acme", START, END) == pytest.approx(12 / 8)


def test_repeat_call_rate_within_a_day(day):
    # A (09:00, 09:20, 11:00) and B (09:10, 11:40, 11:50) called again; 2 of 8 callers
    assert kpi.repeat_call_rate(day, "acme", START, END, 24) == pytest.approx(2 / 8)


def test_repeat_call_rate_window_boundary(day):
    # N = 15 min: only B (11:40 -> 11:50); N = exactly 20 min also takes A (09:00 -> 09:20)
    assert kpi.repeat_call_rate(day, "acme", START, END, 0.25) == pytest.approx(1 / 8)
    assert kpi.repeat_call_rate(day, "acme", START, END, 20 / 60) == pytest.approx(2 / 8)


def test_repeat_calls_across_the_window_end_are_not_seen(day):
    # N = 15 min: B's 11:40 -> 11:50 is a repeat in [09:00, 12:00) (1 of 8 callers), but
    # not in [09:00, 11:45), where 11:50 is outside: 0 of the same 8 callers
    assert kpi.repeat_call_rate(day, "acme", START, END, 0.25) == pytest.approx(1 / 8)
    assert kpi.repeat_call_rate(day, "acme", START, at(165), 0.25) == 0.0


# --- summary ------------------------------------------------------------------------------


def test_kpi_summary_counts(day):
    summary = kpis(day)
    assert {k: summary[k] for k in ("total", "in_progress", "offered", "answered",
                                     "abandoned", "short_abandoned", "queued",
                                     "repeat_callers")} \
        == {"total": 14, "in_progress": 2, "offered": 11, "answered": 4, "abandoned": 3,
            "short_abandoned": 1, "queued": 9, "repeat_callers": 2}


def test_kpi_summary_agrees_with_every_function(day):
    summary = kpis(day, threshold_s=20, short_abandon_s=10, repeat_window_h=24)
    args = (day, "acme", START, END)
    assert summary == pytest.approx({
        **summary,
        "service_level_answered": kpi.service_level_answered(*args, 20),
        "service_level_offered": kpi.service_level_offered(*args, 20),
        "service_level_offered_adjusted": kpi.service_level_offered(*args, 20, 10),
        "answer_rate": kpi.answer_rate(*args),
        "abandonment_rate": kpi.abandonment_rate(*args),
        "abandonment_rate_adjusted": kpi.abandonment_rate(*args, 10),
        "asr": kpi.asr(*args), "ser": kpi.ser(*args), "seer": kpi.seer(*args),
        "acd": kpi.acd(*args), "asa": kpi.asa(*args), "average_wait": kpi.average_wait(*args),
        "aht_talk_only": kpi.aht_talk_only(*args),
        "contacts_per_client": kpi.contacts_per_client(*args),
        "repeat_call_rate": kpi.repeat_call_rate(*args, 24),
    })
    assert summary["service_level_offered_adjusted"] == pytest.approx(3 / 8)
    assert summary["abandonment_rate_adjusted"] == pytest.approx(2 / 8)


def test_another_tenant_sees_only_its_own_call(day):
    summary = kpis(day, "globex")
    assert (summary["total"], summary["answered"], summary["service_level_answered"],
            summary["asa"]) == (1, 1, 0.0, pytest.approx(100))


def test_empty_period_gives_none_not_a_division_by_zero(day):
    summary = kpis(day, start=END + timedelta(days=1), end=END + timedelta(days=2))
    counts = {"total", "in_progress", "offered", "answered", "abandoned", "short_abandoned",
              "queued", "repeat_callers"}
    assert {k for k, v in summary.items() if v == 0} == counts
    assert all(summary[k] is None for k in summary.keys() - counts)


@pytest.mark.parametrize("name", ["service_level_answered", "service_level_offered",
                                  "answer_rate", "abandonment_rate", "asr", "ser", "seer",
                                  "acd", "asa", "average_wait", "aht_talk_only",
                                  "contacts_per_client", "repeat_call_rate"])
def test_every_function_is_none_on_an_empty_period(day, name):
    assert getattr(kpi, name)(day, "acme", END + timedelta(days=1), END + timedelta(days=2)) \
        is None


def test_only_in_progress_calls_give_no_outcome(day):
    # [11:50, 12:00) holds ip1 and h1 only: contacts yes, outcomes none
    summary = kpis(day, start=at(170), end=END)
    assert (summary["total"], summary["offered"], summary["answer_rate"], summary["acd"],
            summary["contacts_per_client"]) == (2, 0, None, None, 1.0)


# --- filters ------------------------------------------------------------------------------


def test_direction_filter(day):
    # queue KPIs are inbound only: an outbound filter leaves them empty; ACD is any direction
    summary = kpis(day, direction="outbound")
    assert (summary["total"], summary["offered"], summary["answer_rate"], summary["acd"],
            summary["asr"], summary["contacts_per_client"]) \
        == (1, 0, None, pytest.approx(1200), 1.0, None)


def test_did_filter(day):
    # the sales line: a4 answered, ab3 abandoned
    assert kpi.answer_rate(day, "acme", START, END, did=SALES) == pytest.approx(1 / 2)
    assert kpi.abandonment_rate(day, "acme", START, END, did=SALES) == pytest.approx(1 / 2)


def test_agent_filter(day):
    # agent 101 answered a1 (5 s, 60 s) and a2 (20 s, 120 s)
    assert kpi.acd(day, "acme", START, END, agent="101") == pytest.approx(90)
    assert kpi.asa(day, "acme", START, END, agent="101") == pytest.approx(12.5)


def test_filter_values_are_bound_not_spliced(day):
    assert kpi.answer_rate(day, "acme", START, END, did="x' OR 1=1 --") is None


# --- intervals ----------------------------------------------------------------------------


def test_talk_time_is_split_across_hours(day):
    # 09h: pre1 09:00:00-09:10:10 610 s + a1 60 + a2 120 + a3 30 + out1 09:45:10-10:00 890
    # 10h: out1 10:00-10:05:10 310 + a4 90; 11h: nothing (x1 talks after the window)
    df = kpi.talk_time_by_interval(day, "acme", START, END, "1 hour")
    assert list(df["interval_start"]) == [T0, at(60), at(120)]
    assert list(df["talk_time_ms"]) == [1_710_000, 400_000, 0]


def test_talk_time_split_into_quarter_hours(day):
    df = kpi.talk_time_by_interval(day, "acme", START, END, "15 minute", agent="103")
    assert len(df) == 12
    by_start = dict(zip(df["interval_start"], df["talk_time_ms"], strict=True))
    assert by_start[at(45)] == 890_000 and by_start[at(60)] == 310_000  # out1 only
    assert sum(by_start.values()) == 1_200_000


def test_talk_time_is_clipped_to_the_window(day):
    # [09:00, 10:00): out1's 310 s after 10:00 are outside
    df = kpi.talk_time_by_interval(day, "acme", START, at(60), "1 hour")
    assert list(df["talk_time_ms"]) == [1_710_000]


def test_talk_time_per_day_is_the_sum(day):
    df = kpi.talk_time_by_interval(day, "acme", START, END, "1 day")
    assert list(df["interval_start"]) == [T0.replace(hour=0)]
    assert list(df["talk_time_ms"]) == [2_110_000]


def test_kpis_by_interval_hourly(day):
    df = kpi.kpis_by_interval(day, "acme", START, END, "1 hour", threshold_s=20)
    assert list(df["interval_start"]) == [T0, at(60), at(120)]
    assert list(df["total"]) == [5, 2, 7]  # a1 a2 a3 ab1 out1 | a4 ab2 | ab3 .. h1
    assert list(df["offered"]) == [4, 2, 5]  # inbound: out1 is not offered
    assert list(df["answered"]) == [3, 1, 0]
    assert list(df["talk_time_ms"]) == [1_710_000, 400_000, 0]
    # 09h: 2 of 3 answered inbound calls waited <= 20 s (a1 5, a2 20; a3 20.001)
    assert df["service_level_answered"].iloc[0] == pytest.approx(2 / 3)
    assert df["service_level_answered"].iloc[1] == 0.0  # a4 waited 40 s
    assert pd.isna(df["service_level_answered"].iloc[2])  # nobody answered
    assert list(df["answer_rate"]) == pytest.approx([3 / 4, 1 / 2, 0.0])


def test_kpis_by_interval_adds_up_to_the_summary(day):
    df = kpi.kpis_by_interval(day, "acme", START, END, "15 minute")
    summary = kpis(day)
    for column in ("total", "in_progress", "offered", "answered", "abandoned", "queued"):
        assert df[column].sum() == summary[column]


def test_kpis_by_interval_keeps_empty_intervals(day):
    df = kpi.kpis_by_interval(day, "acme", at(-180), at(-60), "1 hour")
    assert list(df["interval_start"]) == [at(-180), at(-120)]
    assert list(df["total"]) == [0, 0]
    assert df["answer_rate"].isna().all()


def test_unknown_interval_is_refused(day):
    with pytest.raises(ValueError, match="interval must be one of"):
        kpi.kpis_by_interval(day, "acme", START, END, "5 minute")


def test_queries_facade_has_the_kpis(day):
    assert Queries(day).kpi.answer_rate("acme", START, END) == pytest.approx(4 / 11)


def test_naive_datetimes_are_utc(day):
    naive = kpi.talk_time_by_interval(day, "acme", START.replace(tzinfo=None),
                                      END.replace(tzinfo=None), "1 hour")
    assert list(naive["talk_time_ms"]) == [1_710_000, 400_000, 0]


# --- period over period -------------------------------------------------------------------

CONTACT_KEYS = ("contacts_per_client", "repeat_call_rate", "repeat_callers")


def test_period_comparison_is_kpi_summary_of_each_window(day):
    """Each side equals kpi_summary over its own window, contact KPIs aside; the previous
    window (same length, just before START) holds pre1 (answered) and the revised mv."""
    compared = kpi.period_comparison(day, "acme", START, END, threshold_s=20,
                                     short_abandon_s=10)
    before = START - (END - START)
    for side, (start, end) in (("current", (START, END)), ("previous", (before, START))):
        summary = kpis(day, start=start, end=end, threshold_s=20, short_abandon_s=10)
        expected = {k: v for k, v in summary.items() if k not in CONTACT_KEYS}
        assert compared[side] == pytest.approx(expected)
    assert compared["previous"]["offered"] == 3  # pre1, mv (moved back), x2 (1 ms before)
    assert compared["current"]["offered"] == 11


def test_period_comparison_of_an_empty_period_has_no_rates(day):
    later = END + timedelta(days=30)
    compared = kpi.period_comparison(day, "acme", later, later + timedelta(hours=1))
    assert compared["current"]["offered"] == compared["previous"]["offered"] == 0
    assert compared["current"]["answer_rate"] is None
    assert compared["previous"]["average_wait"] is None
