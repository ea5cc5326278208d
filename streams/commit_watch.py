"""Rewind a partition whose commit is held by a message Faust never delivered.

Faust commits a partition only up to its first offset no stream has acknowledged. Around a
restart (``kill -9`` of the worker, under traffic) faust-streaming 0.15 was seen to fetch a
repartition topic out of order and never hand some messages to the agent: later offsets
were folded and acknowledged, the skipped ones never were, and the commit stayed at the
first of them for good ("Has not committed ... last commit 6.68 minutes ago" in the log)
while the agents' rows silently lacked those calls.

A second way to lose messages at a restart, seen in ``test_restarts`` (streams killed
right after the first call; the next call's events reached partition 0 of
``tawag.call-events`` before the new worker had sought its partitions): Faust's fetcher
runs from "Resuming flow" and drops what it fetches while the flow is suspended, counting
on "Seek stream partitions to committed offsets" to fetch it again. aiokafka's
``seek_to_committed`` seeks only partitions with a committed offset above 0, so on a
partition nobody had committed yet those messages were gone for good (no later offset was
acknowledged either, so the watch below saw no hole). :func:`seek_uncommitted` makes that
seek complete: after Faust's own, every stream partition without a commit is sought to its
start; what is delivered again is recognised as repeats.

A third, seen in ``test_crash_replay`` (a worker killed while another joined): a batch
the fetcher got before the seek to the committed offsets is handed over after it. Faust
takes the jump from the committed offset to that batch for a gap (as compaction or a
transaction marker leaves), counts the offsets in between as done and drops them when
they come (older than the last one read): 64 messages of ``tawag.call-events[3]`` were
never folded and 17 calls got no CDR. :func:`hold_skips` stops that at the door: on the
topics whose offsets have no holes (``streams.topics.contiguous_sources``), a message past
the next expected offset is not handed over, and the partition is sought back to it.

The first signature is what this module watches for: the consumer holds acknowledged offsets
beyond a hole, the message at the hole is not in flight (delivered to a stream and not
yet acknowledged), and this has lasted ``stall_s``. The partition is then sought back to
its committed offset, so every message from the hole on is delivered again: the skipped
ones are folded, the others are repeats, which every stage recognises and answers by
sending its current records again (``streams.runner``). Nothing is lost, nothing counted
twice, and the worker does not restart.

:func:`holes` is the rule (pure); :func:`install` reads Faust's consumer bookkeeping on a
timer and seeks. The bookkeeping is private to Faust (``_acked``, ``_committed_offset``,
``_unacked_messages``), which is why the dependency is capped below 0.16 in pyproject.toml.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import faust
from prometheus_client import Counter

__all__ = ["CommitWatch", "REWINDS", "SKIPS", "check", "hold_skips", "install", "seek_uncommitted",
           "skipped"]

log = logging.getLogger(__name__)

REWINDS = Counter("tawag_streams_rewinds",
                  "Partitions sought back to their committed offset because a message "
                  "was never delivered to its stream (the commit was held by it)",
                  ["topic", "partition"])

SKIPS = Counter("tawag_streams_skips_held",
                "Batches not handed to a stream because they came after a hole in a topic "
                "whose offsets have none; the partition was sought back to the hole",
                ["topic", "partition"])

CHECK_INTERVAL_S = 5.0


@dataclass
class CommitWatch:
    """Remembers since when each partition's commit has been held by the same hole."""

    stall_s: float
    _held: dict[Hashable, tuple[int, float]] = field(default_factory=dict)

    def holes(self, committed: Mapping[Hashable, int | None],
              acked: Mapping[Hashable, Sequence[int]],
              in_flight: Mapping[Hashable, Iterable[int]], now: float,
              ) -> list[tuple[Hashable, int]]:
        """The partitions to rewind, each with the offset to go back to: its committed
        offset has not been acknowledged while later ones were, the message there is not
        in flight, and that has held for ``stall_s`` (a rewind restarts the clock)."""
        due: list[tuple[Hashable, int]] = []
        for tp, offsets in acked.items():
            at = committed.get(tp)
            held = (at is not None and bool(offsets) and min(offsets) - at > 1
                    and at not in set(in_flight.get(tp, ())))
            if not held:
                self._held.pop(tp, None)
                continue
            assert at is not None
            since = self._held.get(tp)
            if since is None or since[0] != at:
                self._held[tp] = (at, now)
            elif now - since[1] >= self.stall_s:
                due.append((tp, at))
                self._held[tp] = (at, now)
        return due


def install(app: faust.App, stall_s: float, contiguous: frozenset[str]) -> CommitWatch:
    """Run :func:`check` on the app's consumer every few seconds, complete the seek after
    each rebalance (:func:`seek_uncommitted`) and hold back what comes after a hole on the
    ``contiguous`` topics (:func:`hold_skips`)."""
    watch = CommitWatch(stall_s)
    seek_uncommitted(app.consumer)
    hold_skips(app.consumer, contiguous)

    @app.timer(CHECK_INTERVAL_S, name="commit-watch")
    async def commit_watch() -> None:
        await check(app.consumer, watch, time.monotonic())

    return watch


async def check(consumer: Any, watch: CommitWatch, now: float) -> list[tuple[Any, int]]:
    """Seek back each partition :meth:`CommitWatch.holes` names, from Faust's consumer
    bookkeeping; the (partition, offset) pairs it sought."""
    in_flight: dict[Hashable, list[int]] = {}
    for message in list(consumer._unacked_messages):
        in_flight.setdefault(message.tp, []).append(message.offset)
    acked = {tp: list(offsets) for tp, offsets in consumer._acked.items()}
    due = watch.holes(dict(consumer._committed_offset), acked, in_flight, now)
    for tp, offset in due:
        log.error("%s[%s]: offset %s never reached its stream while %d later offsets were "
                  "processed; seeking back to it (what follows is delivered again, repeats "
                  "are recognised)", tp.topic, tp.partition, offset, len(acked[tp]))
        REWINDS.labels(tp.topic, str(tp.partition)).inc()
        await consumer.seek(tp, offset)
    return due


CHANGELOG_SUFFIX = "-changelog"


def seek_uncommitted(consumer: Any) -> None:
    """After Faust's seek to the committed offsets, seek each assigned stream partition
    that has no commit (None or 0: the ones aiokafka leaves where its fetcher got to) to
    its start. Table changelogs are Faust's recovery's business and left alone."""
    faust_seek = consumer.perform_seek

    async def perform_seek() -> None:
        await faust_seek()
        for tp in sorted(consumer.assignment()):
            if (tp.topic.endswith(CHANGELOG_SUFFIX)
                    or not consumer.app.topics.acks_enabled_for(tp.topic)
                    or consumer._committed_offset.get(tp)):
                continue
            log.info("%s[%s]: no committed offset; reading it from its start (a message "
                     "fetched before the seek is not lost)", tp.topic, tp.partition)
            await consumer.seek(tp, 0)
            # Faust reads 0 as "nothing read yet"; 0 lets hold_skips see a batch from later
            consumer._read_offset[tp] = 0

    consumer.perform_seek = perform_seek


def skipped(read: int | None, offset: int) -> bool:
    """Whether ``offset`` lies past a hole: Faust's read offset is the last offset handed
    over, or the one just sought to, so the next is ``read`` or ``read + 1``."""
    return read is not None and offset > read + 1


def hold_skips(consumer: Any, contiguous: frozenset[str]) -> None:
    """Wrap Faust's ``getmany`` so that a message past a hole on a ``contiguous`` topic is
    not handed over: the partition is sought back to Faust's read offset and the rest of
    that batch for it dropped; the fetch then brings the hole's messages first. When the
    same hole comes back after that seek, the log itself lacks those offsets (retention
    took them) and the message is handed over."""
    faust_getmany = consumer.getmany
    sought: dict[Hashable, int] = {}

    async def getmany(timeout: float) -> AsyncIterator[tuple[Any, Any]]:
        held: set[Hashable] = set()
        async for tp, message in faust_getmany(timeout):
            if tp in held:
                continue
            read = consumer._read_offset.get(tp)
            if (tp.topic in contiguous and skipped(read, message.offset)
                    and sought.get(tp) != read):
                assert read is not None
                sought[tp] = read
                held.add(tp)
                log.warning("%s[%s]: offset %s handed over after %s (a batch fetched before "
                            "a seek); seeking back to %s so nothing in between is skipped",
                            tp.topic, tp.partition, message.offset, read, read)
                SKIPS.labels(tp.topic, str(tp.partition)).inc()
                await consumer.seek(tp, read)
                consumer._read_offset[tp] = read  # Faust's seek makes 0 "nothing read"
                continue
            sought.pop(tp, None)
            yield tp, message

    consumer.getmany = getmany
