"""A fresh stack's first events wait for the changelog's metadata; they are not dead-lettered.

Seen in the inbound matrix (issue 13): the worker creates the ``agents`` changelog at start,
and until the consumer's next metadata refresh it reads as 0 partitions, so Faust's check of
every table write failed (``PartitionsMismatch``) and the runner dead-lettered the first
agent events - the registrations. Every agent stayed ``offline`` until its first call.
The order that broke it: the registration arrives before the metadata lists the changelog.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from faust_harness import run, streams_on_channels

from core.agent_records import AgentStateChange, AgentStatus, record_from_json
from core.events import Event, EventType, to_json
from core.settings import load
from streams.app import Streams

KEY = b"acme:102"
REGISTERED = Event(event_id="reg-102", type=EventType.AGENT_REGISTERED, tenant="acme",
                   ts=datetime(2026, 12, 6, 19, 47, tzinfo=UTC), source="test", agent="102",
                   extra={"expires": 300})
PARTITIONS = 4


@pytest.fixture
def streams(tmp_path: Path) -> Streams:
    return streams_on_channels(load(environ={}, data_dir=tmp_path,
                                    provisioning_file=tmp_path / "none.toml"))


def metadata(changelog: str, unknown_for: int) -> Callable[[str], int]:
    """The consumer's partition counts: the changelog reads 0 the first ``unknown_for``
    times it is asked (not refreshed yet), then as many partitions as its source."""
    asked = [0]

    def topic_partitions(topic: str) -> int:
        if topic != changelog:
            return PARTITIONS
        asked[0] += 1
        return 0 if asked[0] <= unknown_for else PARTITIONS
    return topic_partitions


def test_a_registration_before_the_changelog_metadata_is_folded_not_dead_lettered(
        streams: Streams, monkeypatch: pytest.MonkeyPatch) -> None:
    table = streams.tables.agents
    monkeypatch.setattr(streams.app.consumer, "topic_partitions",
                        metadata(table.changelog_topic_name, unknown_for=2))

    sent = run(streams, "agent_stats", [(KEY, to_json(REGISTERED))])

    assert sent["dead_letter"] == []
    assert [(c.state, c.since) for c in (record_from_json(AgentStateChange, v)
                                         for _, v in sent["agent_states"])] == [
        (AgentStatus.AVAILABLE, REGISTERED.ts)]
    assert KEY.decode() in table


def test_a_real_partition_mismatch_is_still_dead_lettered(
        streams: Streams, monkeypatch: pytest.MonkeyPatch) -> None:
    """A changelog with partitions, but not as many as its source, is a configuration
    error: no refresh mends it, the message goes to the dead letters at once."""
    monkeypatch.setattr(streams.app.consumer, "topic_partitions",
                        lambda topic: PARTITIONS + (topic == streams.tables.agents
                                                    .changelog_topic_name))

    sent = run(streams, "agent_stats", [(KEY, to_json(REGISTERED))])

    assert len(sent["dead_letter"]) == 1 and b"PartitionsMismatch" in sent["dead_letter"][0][1]
