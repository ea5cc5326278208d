"""The demo's call plan: what managers see on a fresh install comes from this mix."""

from __future__ import annotations

import random
import tomllib
from collections import Counter
from pathlib import Path

from core.settings import Settings
from edge import sipp
from tawag.demo import (
    AGENTS,
    ANSWER_RING_MS,
    DESK_PHONES,
    IMPATIENT_SHARE,
    MIX,
    OUTSIDE_CALLERS,
    QUEUE,
    QUEUE_OUTCOMES,
    SECOND_MEDIA_OFFSET,
    UNKNOWN_EXTENSION,
    WORKERS,
    DemoTenant,
    Ports,
    plan_call,
    plan_support_call,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "sip-edge" / "provisioning.example.toml"


def example_acme() -> dict:
    return tomllib.loads(EXAMPLE.read_text())["tenant"]["acme"]


def test_answered_demo_calls_ring_before_the_answer_and_within_the_timeout():
    """ASA and the service level need a real wait; the answer must beat the no-answer
    timer of the example provisioning the demo runs against."""
    rng = random.Random(7)
    answered = [c for c in (plan_call(rng, list(AGENTS)) for _ in range(2000))
                if c.outcome == "answered"]
    timeouts = [t.get("no_answer_timeout", 20)
                for t in tomllib.loads(EXAMPLE.read_text())["tenant"].values()]
    assert answered and all(ANSWER_RING_MS[0] <= c.ring_ms < ANSWER_RING_MS[1]
                            for c in answered)
    assert max(c.ring_ms for c in answered) < min(timeouts) * 1000
    assert len({c.ring_ms for c in answered}) > 10  # varied, not one fixed wait


def test_the_mix_follows_its_weights_and_callees_are_free_agents_or_the_queue():
    rng = random.Random(11)
    free = ["102", "104"]
    planned = [plan_call(rng, free) for _ in range(5000)]
    shares = Counter(c.outcome for c in planned)
    total = sum(w for _, w in MIX)
    for outcome, weight in MIX:
        assert abs(shares[outcome] / len(planned) - weight / total) < 0.03, outcome
    agent_calls = [c for c in planned if c.outcome not in (*QUEUE_OUTCOMES, "not_found")]
    assert {c.callee for c in agent_calls} == set(free)
    assert {c.callee for c in planned if c.outcome == "not_found"} == {UNKNOWN_EXTENSION}
    # the support line is called from outside (the carrier), never by an extension; a
    # burst brings a second caller, another number
    queue_calls = [c for c in planned if c.outcome in QUEUE_OUTCOMES]
    assert {c.callee for c in queue_calls} == {QUEUE}
    assert {c.caller for c in queue_calls} == set(OUTSIDE_CALLERS)
    assert all((c.second is not None) == (c.outcome == "queue_burst") for c in planned)
    seconds = [c.second for c in queue_calls if c.second]
    assert {c.callee for c in seconds} == {QUEUE} and {c.caller for c in seconds} <= set(
        OUTSIDE_CALLERS)
    assert all(c.second.caller != c.caller for c in queue_calls if c.second)
    assert all(c.caller != c.callee for c in planned)


def test_without_a_queue_the_mix_keeps_its_other_shares():
    rng = random.Random(5)
    planned = [plan_call(rng, list(AGENTS), queue=False) for _ in range(5000)]
    shares = Counter(c.outcome for c in planned)
    rest = [(o, w) for o, w in MIX if o not in QUEUE_OUTCOMES]
    assert set(shares) == {o for o, _ in rest}
    for outcome, weight in rest:
        assert abs(shares[outcome] / len(planned) - weight / sum(w for _, w in rest)) < 0.03


def test_support_callers_either_hang_up_before_the_desk_answers_or_fit_sipps_timeout():
    """An impatient caller (a burst's second, about IMPATIENT_SHARE of them) hangs up
    within the desk's ring, never answered; a patient one waits at most max_wait_s, rings
    a desk (or the overflow) and talks, all inside sipp's global timeout, or sipp would
    call it a failure."""
    rng = random.Random(3)
    firsts = [plan_support_call(rng, burst=True) for _ in range(3000)]
    support = firsts + [c.second for c in firsts]
    hangups = [c for c in support if c.outcome == "queue_hangup"]
    stays = [c for c in support if c.outcome != "queue_hangup"]
    assert abs(len(hangups) / len(firsts) - IMPATIENT_SHARE) < 0.03
    assert all(c.outcome == "queue_burst" for c in firsts)  # a first caller always stays
    assert hangups and all(1_000 <= c.ring_ms < sipp.DESK_RING_MS for c in hangups)
    assert all(c.talk_ms == 0 for c in hangups)
    max_wait_ms = example_acme()["group"]["support"]["queue"]["max_wait_s"] * 1000
    longest = max_wait_ms + sipp.DESK_RING_MS + max(c.talk_ms for c in stays)
    assert longest < (sipp.SIPP_TIMEOUT_S - 1) * 1000
    assert len({c.talk_ms for c in stays}) > 10


def test_the_example_has_a_support_queue_that_the_desk_phones_answer():
    tenant = DemoTenant.from_file(EXAMPLE, "pbx.test")
    assert tenant.queue_did == "74951230200" and tenant.has_queue
    support = example_acme()["group"]["support"]
    assert support["strategy"] == "longest_idle"
    # the desk answers the group and its overflow: every queue outcome reaches a phone
    assert (*support["members"], support["queue"]["overflow"].removeprefix("ext:")) \
        == DESK_PHONES
    assert set(DESK_PHONES) <= set(tenant.passwords)
    assert tenant.queue_did not in tenant.direct_dids.values()


def test_a_tenant_without_a_queue_or_a_trunk_has_no_support_line(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('[tenant.a]\ndomain = "a.test"\ntrunk_sources = ["127.0.0.1:5096"]\n'
                    '[tenant.a.group.g]\nstrategy = "longest_idle"\nmembers = ["101"]\n'
                    '[tenant.a.did."74951230001"]\nto = "group:g"\n')
    assert DemoTenant.from_file(path, "a.test").queue_did is None
    path.write_text(path.read_text().replace(
        'members = ["101"]', 'members = ["101"]\nqueue = { max_wait_s = 5, max_length = 1, '
        'overflow = "ext:101" }'))
    assert DemoTenant.from_file(path, "a.test").has_queue
    path.write_text(path.read_text().replace('trunk_sources = ["127.0.0.1:5096"]\n', ""))
    queue_only = DemoTenant.from_file(path, "a.test")
    assert queue_only.queue_did == "74951230001" and not queue_only.has_queue


def test_a_bursts_second_caller_has_a_trunk_source_of_its_own_per_worker():
    tenant = DemoTenant.from_file(EXAMPLE, "pbx.test")
    ports = [tenant.trunk_port(w, second=s) for w in range(WORKERS) for s in (False, True)]
    assert ports == [5096, 5094, 5097, 5095]
    # two sources only: one per worker, and a burst is a single call
    two = DemoTenant(trunk_ports=(5096, 5097), queue_did="74951230200")
    assert [two.trunk_port(w) for w in range(WORKERS)] == [5096, 5097]
    assert two.trunk_port(0, second=True) is None


def test_desk_phones_get_ports_of_their_own_in_the_demo_range():
    ports = Ports.for_settings(Settings())
    sip = [ports.agent_sip[p] for p in (*AGENTS, *DESK_PHONES)] + list(ports.caller_sip)
    media = [ports.agent_media[p] for p in (*AGENTS, *DESK_PHONES)] + list(ports.caller_media)
    media += [m + SECOND_MEDIA_OFFSET for m in ports.caller_media]  # a burst's second caller
    assert len(set(sip)) == len(sip) and len(set(media)) == len(media)
    assert [ports.agent_sip[p] for p in DESK_PHONES] == [5084, 5085]  # the example's header
