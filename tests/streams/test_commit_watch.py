"""The commit watch names a partition only when a message was skipped for good.

The case it is for, as the kill-under-traffic test met it (streams killed, new worker):
repartition partition 1 committed at 100, offsets 101.. acknowledged as they came, 100
never delivered -- the commit stays at 100 and the agents' rows lack that call.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from faust.types import TP as FaustTP

from core.settings import Settings
from streams.app import build_streams, new_app
from streams.commit_watch import REWINDS, SKIPS, CommitWatch, check, hold_skips, skipped

TP = ("tawag-streams-agent-events-repartition", 1)


def test_a_hole_held_for_the_stall_time_is_rewound_to_the_committed_offset():
    watch = CommitWatch(stall_s=20)
    acked = {TP: [102, 103, 104]}
    assert watch.holes({TP: 100}, acked, {}, now=0.0) == []
    assert watch.holes({TP: 100}, {TP: [102, 103, 104, 105]}, {}, now=19.9) == []
    assert watch.holes({TP: 100}, {TP: [102, 103, 104, 105]}, {}, now=20.0) == [(TP, 100)]
    # a rewind restarts the clock: the redelivery gets its time before another one
    assert watch.holes({TP: 100}, acked, {}, now=25.0) == []
    assert watch.holes({TP: 100}, acked, {}, now=40.0) == [(TP, 100)]


def test_no_rewind_while_the_message_at_the_hole_is_in_flight():
    # a slow fold holds the commit too, but its message is in the stream: not skipped
    watch = CommitWatch(stall_s=20)
    for now in (0.0, 30.0, 60.0):
        assert watch.holes({TP: 100}, {TP: [102, 103]}, {TP: [100, 101]}, now=now) == []


def test_contiguous_acks_or_a_moving_commit_are_no_hole():
    watch = CommitWatch(stall_s=20)
    # Faust commits these: acked right after the committed offset, or nothing acked
    assert watch.holes({TP: 100}, {TP: [100, 101]}, {}, now=0.0) == []
    assert watch.holes({TP: 100}, {TP: [101, 102]}, {}, now=30.0) == []
    assert watch.holes({TP: 100}, {TP: []}, {}, now=60.0) == []
    assert watch.holes({TP: None}, {TP: [5, 6]}, {}, now=90.0) == []
    # a hole that the commit then moves past starts again from the new offset
    assert watch.holes({TP: 100}, {TP: [103]}, {}, now=100.0) == []
    assert watch.holes({TP: 110}, {TP: [113]}, {}, now=119.0) == []
    assert watch.holes({TP: 110}, {TP: [113]}, {}, now=130.0) == []
    assert watch.holes({TP: 110}, {TP: [113]}, {}, now=139.0) == [(TP, 110)]


def test_partitions_are_watched_apart():
    other = ("tawag.call-events", 0)
    watch = CommitWatch(stall_s=10)
    watch.holes({TP: 100, other: 7}, {TP: [105], other: [7, 8]}, {}, now=0.0)
    assert watch.holes({TP: 100, other: 9}, {TP: [105], other: [9]}, {}, now=10.0) == [
        (TP, 100)]


def test_check_reads_a_real_faust_consumer_and_seeks_it_back(tmp_path):
    """Faust's own consumer object (no broker): its bookkeeping with offset 100 never
    acknowledged and 102-104 acknowledged -> one seek to 100, logged and counted."""
    app = new_app(Settings(data_dir=tmp_path))
    consumer = app.consumer
    tp = FaustTP("tawag-streams-agent-events-repartition", 1)
    consumer._committed_offset[tp] = 100
    consumer._acked[tp].extend([102, 103, 104])
    sought = []

    async def seek(partition, offset):
        sought.append((partition, offset))

    consumer.seek = seek
    before = REWINDS.labels(tp.topic, "1")._value.get()
    watch = CommitWatch(stall_s=20)
    assert asyncio.run(check(consumer, watch, now=0.0)) == []
    assert asyncio.run(check(consumer, watch, now=20.0)) == [(tp, 100)]
    assert sought == [(tp, 100)]
    assert REWINDS.labels(tp.topic, "1")._value.get() == before + 1


def test_partitions_without_a_commit_are_read_from_their_start_after_faust_seeks(tmp_path):
    """Faust's consumer object (no broker): after its seek to the committed offsets, the
    stream partitions with no commit (None, 0) are sought to 0 — the ones aiokafka's
    seek_to_committed leaves wherever the fetcher got before it; committed ones and table
    changelogs are left alone."""
    settings = Settings(data_dir=tmp_path)
    app = new_app(settings)
    build_streams(app, settings)  # installs the commit watch and the completed seek
    consumer = app.consumer
    events = [FaustTP("tawag.call-events", p) for p in range(4)]
    changelog = FaustTP("tawag-streams-calls-changelog", 0)
    consumer._committed_offset[events[1]] = 7
    consumer._committed_offset[events[2]] = 0
    calls = []

    async def seek(partition, offset):
        calls.append(("seek", partition, offset))

    async def seek_to_committed():  # aiokafka's: what the group committed, seeking those
        calls.append(("committed",))
        return {events[1]: 7, events[2]: 0}

    consumer.seek = seek
    consumer.seek_to_committed = seek_to_committed
    consumer.assignment = lambda: {*events, changelog}
    consumer.app.topics.acks_enabled_for = lambda topic: not topic.endswith("-changelog")

    asyncio.run(consumer.perform_seek())

    assert calls[0] == ("committed",)  # Faust's own seek first
    assert calls[1:] == [("seek", events[0], 0), ("seek", events[2], 0),
                         ("seek", events[3], 0)]


class _Consumer:
    """Faust's consumer as hold_skips sees it: batches from getmany, the read offset the
    drain loop keeps (set after each message handed over), and seek."""

    def __init__(self, batches: list[list[tuple[FaustTP, int]]]) -> None:
        self.batches = batches
        self._read_offset: dict[FaustTP, int | None] = {}
        self.seeks: list[tuple[FaustTP, int]] = []

    async def getmany(self, timeout: float):
        for tp, offset in self.batches.pop(0):
            yield tp, SimpleNamespace(offset=offset)

    async def seek(self, tp: FaustTP, offset: int) -> None:
        self.seeks.append((tp, offset))
        self._read_offset[tp] = offset if offset else None


def _drain(consumer: _Consumer) -> list[tuple[FaustTP, int]]:
    """One getmany, as Faust's drain loop takes it: each message's offset becomes the read
    offset once handed over."""
    async def run() -> list[tuple[FaustTP, int]]:
        out = []
        async for tp, message in consumer.getmany(1.0):
            out.append((tp, message.offset))
            consumer._read_offset[tp] = message.offset
        return out
    return asyncio.run(run())


def test_a_batch_after_a_hole_is_held_and_the_partition_sought_back():
    """What test_crash_replay met: committed (and sought) at 37, a batch fetched before
    the seek (95, 96) comes first. Without the guard Faust counts 38..94 as a gap and drops
    them: 17 calls without a CDR. Held, the partition is sought back to 37 and the next
    fetch brings 37.. in order; the other partition's messages pass meanwhile."""
    events3, events2 = FaustTP("tawag.call-events", 3), FaustTP("tawag.call-events", 2)
    consumer = _Consumer([[(events3, 95), (events2, 11), (events3, 96)],
                          [(events3, 37), (events3, 38), (events3, 39)]])
    consumer._read_offset[events3] = 37
    consumer._read_offset[events2] = 10
    before = SKIPS.labels(events3.topic, "3")._value.get()
    hold_skips(consumer, frozenset({"tawag.call-events"}))

    assert _drain(consumer) == [(events2, 11)]
    assert consumer.seeks == [(events3, 37)]
    assert SKIPS.labels(events3.topic, "3")._value.get() == before + 1
    assert _drain(consumer) == [(events3, 37), (events3, 38), (events3, 39)]


def test_a_hole_the_log_really_has_is_passed_after_one_seek_and_compacted_topics_never_held():
    """Retention took offsets 0..499: sought back to 0, the fetch again starts at 500, which
    is then handed over. A compacted topic (tawag.cdrs) has holes by design: not held."""
    events0, cdrs0 = FaustTP("tawag.call-events", 0), FaustTP("tawag.cdrs", 0)
    consumer = _Consumer([[(events0, 500), (cdrs0, 90)], [(events0, 500), (events0, 501)]])
    consumer._read_offset[events0] = 0
    consumer._read_offset[cdrs0] = 3
    hold_skips(consumer, frozenset({"tawag.call-events"}))

    assert _drain(consumer) == [(cdrs0, 90)]
    assert consumer.seeks == [(events0, 0)]
    assert _drain(consumer) == [(events0, 500), (events0, 501)]
    assert consumer.seeks == [(events0, 0)]


def test_skipped_is_a_jump_past_the_next_expected_offset():
    assert not skipped(None, 95)  # nothing read yet: no judgement
    assert not skipped(37, 37) and not skipped(37, 38)  # just sought / the next one
    assert skipped(37, 39) and skipped(0, 500)
