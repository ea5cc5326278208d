"""A group consumer subscribes only once its metadata lists the topics' partitions
(core.kafka_group): a leader that joins without them assigns none."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from core.kafka_group import subscribe_known


class FakeConsumer:
    """kafka-python's consumer as subscribe_known uses it: the partitions it knows of each
    topic (learnt after ``unknown_for`` asks), and what it was subscribed to."""

    def __init__(self, unknown_for: dict[str, int]) -> None:
        self.unknown_for = dict(unknown_for)
        self.asked: list[str] = []
        self.subscribed: list[tuple[list[str], Any]] = []

    def partitions_for_topic(self, topic: str) -> set[int]:
        self.asked.append(topic)
        if self.unknown_for.get(topic, 0) > 0:
            self.unknown_for[topic] -= 1
            return set()
        return {0, 1, 2, 3}

    def subscribe(self, topics: list[str], listener: Any = None) -> None:
        assert not any(self.unknown_for.values()), "subscribed before the metadata"
        self.subscribed.append((topics, listener))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_it_subscribes_once_every_topic_has_partitions() -> None:
    consumer, clock = FakeConsumer({"tawag.cdrs": 2}), Clock()
    listener = object()
    subscribe_known(consumer, ["tawag.call-events", "tawag.cdrs"], listener=listener,
                    sleep=clock.sleep, clock=clock)
    assert consumer.subscribed == [(["tawag.call-events", "tawag.cdrs"], listener)]
    assert consumer.asked == ["tawag.call-events", "tawag.cdrs", "tawag.cdrs", "tawag.cdrs"]
    assert clock.now == 1.0  # two waits of 0.5 s


def test_a_topic_that_never_appears_is_subscribed_after_the_timeout_with_a_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    consumer, clock = FakeConsumer({"tawag.cdrs": 10**6}), Clock()
    consumer.subscribe = lambda topics, listener=None: consumer.subscribed.append(  # type: ignore[method-assign]
        (topics, listener))
    with caplog.at_level(logging.WARNING):
        subscribe_known(consumer, ["tawag.cdrs"], timeout_s=3.0, sleep=clock.sleep,
                        clock=clock)
    assert consumer.subscribed == [(["tawag.cdrs"], None)]
    assert clock.now == 3.0
    assert "without partition metadata for tawag.cdrs" in caplog.text
