"""The demo's call plan: what managers see on a fresh install comes from this mix."""

from __future__ import annotations

import random
import tomllib
from collections import Counter
from pathlib import Path

from tawag.demo import AGENTS, ANSWER_RING_MS, MIX, UNKNOWN_EXTENSION, plan_call

EXAMPLE = Path(__file__).resolve().parents[2] / "sip-edge" / "provisioning.example.toml"


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


def test_the_mix_follows_its_weights_and_callees_are_free_agents():
    rng = random.Random(11)
    free = ["102", "104"]
    planned = [plan_call(rng, free) for _ in range(5000)]
    shares = Counter(c.outcome for c in planned)
    total = sum(w for _, w in MIX)
    for outcome, weight in MIX:
        assert abs(shares[outcome] / len(planned) - weight / total) < 0.03, outcome
    assert {c.callee for c in planned if c.outcome != "not_found"} == set(free)
    assert {c.callee for c in planned if c.outcome == "not_found"} == {UNKNOWN_EXTENSION}
    assert all(c.caller != c.callee for c in planned)
