"""The topology is declared once (streams.topology): the worker runs exactly its stages,
replay folds through the same steps, and every stage has the one dead-letter path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from faust_harness import run, streams_on_channels
from test_replay_fold import ANSWERED, MISSED

from core.events import to_json
from core.settings import load
from streams.app import Streams, agent_config, callback_config
from streams.topics import Topics
from streams.topology import routing_stages, stages
from tawag import replay

SETTINGS = load(environ={})
STAGES = stages(agent_config(SETTINGS), callback_config(SETTINGS))


@pytest.fixture
def streams(tmp_path: Path) -> Streams:
    return streams_on_channels(load(environ={}, data_dir=tmp_path))


def test_the_worker_runs_every_stage_of_the_topology_on_its_source(streams: Streams) -> None:
    live = routing_stages()
    assert list(streams.agents) == [stage.key for stage in (*STAGES, *live)]
    for stage in (*STAGES, *live):
        agent = streams.agents[stage.key]
        assert agent.name.endswith(stage.name)
        assert agent.channel is getattr(streams.topics, stage.source)


def test_each_stage_reads_the_log_or_what_an_earlier_stage_writes() -> None:
    """Flow order: a stage's source is the call-events log or an internal topic written
    by a stage declared before it, so replay's depth-first walk meets them in order."""
    fields = set(Topics.__dataclass_fields__)
    written: set[str] = {"call_events"}
    for stage in STAGES:
        assert stage.source in written, stage.name
        assert set(stage.outputs) <= fields, stage.name
        written |= set(stage.outputs)
    assert [s.table for s in STAGES if s.table] == ["calls", "agents", "callbacks"]


def test_replay_walks_the_same_stages() -> None:
    assert [s.name for s in replay.Replayer().stages] == [s.name for s in STAGES]


@pytest.mark.parametrize(("stage", "key", "value", "reason"), [
    ("agent_stats", b"acme:102", b"{not json", "not JSON"),
    ("callbacks", b"acme:+74951234567", b'{"call_id": 1}', ""),
    ("callback_router", b"c-1", b"[]", ""),
])
def test_every_stage_dead_letters_what_it_cannot_process_and_goes_on(
        streams: Streams, stage: str, key: bytes, value: bytes, reason: str) -> None:
    out = run(streams, stage, [(key, value)])
    [(dead_key, raw)] = out["dead_letter"]
    dead = json.loads(raw)
    assert (dead_key, dead["stage"], dead["value"]) == (
        key, next(s.name for s in STAGES if s.key == stage), value.decode())
    assert reason in dead["error"]
    assert sum(dict(streams.tables.dead_letters).values()) == 1


class Recording(replay.Replayer):
    """Replay that keeps every message it delivers, per topic."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[str, list[tuple[bytes | None, bytes]]] = {}

    def deliver(self, topic: str, key: bytes | None, value: bytes) -> None:
        self.seen.setdefault(topic, []).append((key, value))
        super().deliver(topic, key, value)


@pytest.mark.parametrize("stage", [s.key for s in STAGES])
def test_a_stage_writes_only_the_topics_it_declares(streams: Streams, stage: str) -> None:
    declared = next(s for s in STAGES if s.key == stage)
    replayer = Recording()
    for event in ANSWERED + MISSED:
        replayer.event(to_json(event))
    messages = replayer.seen.get(declared.source, [])
    assert messages, f"no input reached {stage}"
    out = run(streams, stage, messages)
    assert {topic for topic, sent in out.items() if sent} <= set(declared.outputs)
