"""A restarted consumer is not ready while only the member it replaced holds partitions."""

from __future__ import annotations

import pytest

from tawag import readiness
from tawag.readiness import ConsumerGroupReady


def group(state: str, *members: tuple[str, bool]) -> dict:
    return {"group_state": state, "members": [
        {"member_id": mid, "member_assignment": b"parts" if assigned else b""}
        for mid, assigned in members]}


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch) -> list:
    answers: list = []
    monkeypatch.setattr(readiness, "_describe", lambda settings, gid: answers.pop(0))
    return answers


def test_the_dead_member_of_a_stable_group_does_not_count(broker: list) -> None:
    ready = ConsumerGroupReady("tawag-streams")
    broker.append(group("Stable", ("dead", True)))
    ready.prepare(None)
    broker.extend([
        group("Stable", ("dead", True)),                     # the new worker has not joined
        group("PreparingRebalance", ("dead", True), ("new", False)),
        group("Stable", ("new", True)),                      # the dead one timed out
    ])
    assert [ready(None) for _ in range(3)] == [False, False, True]


def test_a_first_start_and_an_unreachable_broker(broker: list) -> None:
    ready = ConsumerGroupReady("tawag-streams")
    broker.extend([None, None, group("Empty"), group("Stable", ("w1", True))])
    ready.prepare(None)  # Kafka not answering yet: nothing to exclude
    assert [ready(None) for _ in range(3)] == [False, False, True]


def test_another_live_worker_does_not_make_a_new_one_ready(broker: list) -> None:
    ready = ConsumerGroupReady("tawag-streams")
    broker.append(group("Stable", ("other", True)))
    ready.prepare(None)
    broker.extend([group("Stable", ("other", True)),
                   group("Stable", ("other", True), ("new", True))])
    assert [ready(None) for _ in range(2)] == [False, True]
