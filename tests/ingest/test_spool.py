"""The spool on its own: the format, torn writes, the size bound, and the promise that
every appended record is handed out exactly once, in order, across any number of
re-opens.

Tried: records written and synced, acknowledged in pieces, the spool re-opened (cleanly
and as after kill -9, with the files left as they were), the last record cut at every byte
and its CRC broken, the spool filled past its limit, segments rolled and drained, and a
hypothesis-generated interleaving of all of these. Asserted: what comes back is exactly
what was appended and not yet acknowledged, oldest first; a torn tail is dropped,
counted and logged, and the spool appends cleanly after it; overflow is refused, counted
and logged; drained segments leave the disk.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.spool import Ack, Record, Spool, decode, encode_ack, encode_data, scan, to_ranges

MB = 2**20


def values(spool: Spool, limit: int = 10_000) -> list[bytes]:
    return [r.value for r in spool.pending(limit)]


def fill(spool: Spool, *vals: bytes, key: bytes = b"k") -> list[int]:
    seqs = [spool.append(0, key, v) for v in vals]
    spool.sync()
    return seqs


def abandon(spool: Spool) -> None:
    """What kill -9 leaves: the files as written so far, nothing closed or synced."""
    for seg in spool._segments:
        os.close(seg.fd)


def segment_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.seg"))


# --- the format ---------------------------------------------------------------------------


def test_records_decode_to_what_was_encoded():
    buf = encode_data(7, 1, b"call-1", b'{"a":1}') + encode_ack([3, 4, 5, 9]) \
        + encode_data(8, 0, b"", b"")
    records, valid = decode(buf)
    assert valid == len(buf)
    assert [r for _, _, r in records] == [
        Record(7, 1, b"call-1", b'{"a":1}'), Ack(((3, 5), (9, 9))), Record(8, 0, b"", b"")]
    assert [(off, size) for off, size, _ in records][0] == (0, len(encode_data(7, 1, b"call-1",
                                                                              b'{"a":1}')))


def test_ranges_are_compact_and_sorted():
    assert to_ranges([5, 1, 2, 3, 9, 8, 2]) == ((1, 3), (5, 5), (8, 9))
    assert list(Ack(((1, 3), (8, 9))).seqs()) == [1, 2, 3, 8, 9]


@pytest.mark.parametrize("tail", [b"\x00" * 40, b"\xff" * 3, b"\x05\x00\x00\x00garbage!!"])
def test_decoding_stops_at_garbage(tail):
    good = encode_data(0, 0, b"k", b"v")
    records, valid = decode(good + tail)
    assert len(records) == 1 and valid == len(good)


# --- append, sync, pending, ack -------------------------------------------------------------


def test_pending_hands_out_synced_records_oldest_first(tmp_path):
    spool = Spool(tmp_path, max_bytes=MB)
    assert fill(spool, b"a", b"b") == [0, 1]
    spool.append(0, b"k", b"c")  # written, not synced: not to be sent yet
    assert values(spool) == [b"a", b"b"]
    spool.sync()
    assert values(spool) == [b"a", b"b", b"c"]
    assert values(spool, 2) == [b"a", b"b"]
    spool.ack([1])
    assert values(spool) == [b"a", b"c"]
    assert spool.depth == 2 and spool.spooled_total == 3 and spool.acked_total == 1


def test_reopen_gives_back_what_was_not_acknowledged_and_numbers_on(tmp_path):
    spool = Spool(tmp_path, max_bytes=MB)
    fill(spool, b"a", b"b", b"c", b"d")
    spool.ack([0, 2])
    spool.close()
    again = Spool(tmp_path, max_bytes=MB)
    assert [(r.seq, r.value) for r in again.pending(10)] == [(1, b"b"), (3, b"d")]
    assert again.recovered == 2
    assert fill(again, b"e") == [4]
    assert values(again) == [b"b", b"d", b"e"]


def test_a_killed_process_loses_nothing_that_was_synced(tmp_path):
    spool = Spool(tmp_path, max_bytes=MB)
    fill(spool, b"a", b"b", b"c")
    spool.ack([0])
    abandon(spool)
    again = Spool(tmp_path, max_bytes=MB)
    assert values(again) == [b"b", b"c"]
    assert scan(tmp_path) == again.pending(10)


def test_scan_reads_without_changing_anything(tmp_path):
    spool = Spool(tmp_path, max_bytes=MB)
    fill(spool, b"a", b"b")
    spool.ack([0])
    path = segment_files(tmp_path)[0]
    with path.open("ab") as f:
        f.write(encode_data(2, 0, b"k", b"c")[:-3])  # a record being written right now
    before = path.read_bytes()
    assert [r.value for r in scan(tmp_path)] == [b"b"]
    assert path.read_bytes() == before


# --- torn writes ---------------------------------------------------------------------------


def test_a_record_cut_at_any_byte_is_dropped_and_the_spool_goes_on(tmp_path, caplog):
    last = encode_data(2, 0, b"call-9", b'{"event_id":"x"}')
    for cut in range(1, len(last)):
        directory = tmp_path / f"cut{cut}"
        spool = Spool(directory, max_bytes=MB)
        fill(spool, b"a", b"b")
        abandon(spool)
        path = segment_files(directory)[0]
        whole = path.stat().st_size
        with path.open("ab") as f:
            f.write(last[:cut])  # the crash came mid-write
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="tawag.ingest.spool"):
            again = Spool(directory, max_bytes=MB)
        assert values(again) == [b"a", b"b"], cut
        assert again.torn_bytes == cut and path.stat().st_size == whole
        assert f"dropping {cut} bytes" in caplog.text and "crash cut short" in caplog.text
        fill(again, b"c")
        again.close()
        assert values(Spool(directory, max_bytes=MB)) == [b"a", b"b", b"c"]


def test_a_last_record_failing_its_crc_is_dropped(tmp_path):
    spool = Spool(tmp_path, max_bytes=MB)
    fill(spool, b"a", b"bbbb")
    spool.close()
    path = segment_files(tmp_path)[0]
    data = bytearray(path.read_bytes())
    data[-2] ^= 0x40  # one bit of the last value flipped
    path.write_bytes(bytes(data))
    again = Spool(tmp_path, max_bytes=MB)
    assert values(again) == [b"a"]
    assert again.torn_bytes == len(encode_data(1, 0, b"k", b"bbbb"))


# --- size bound and segments ------------------------------------------------------------------


def test_a_full_spool_refuses_counts_and_says_so_then_accepts_again(tmp_path, caplog):
    size = len(encode_data(0, 0, b"k", b"x" * 100))
    spool = Spool(tmp_path, max_bytes=10 * size, segment_bytes=2 * size)
    with caplog.at_level(logging.WARNING, logger="tawag.ingest.spool"):
        seqs = [spool.append(0, b"k", b"x" * 100) for _ in range(14)]
    spool.sync()
    assert seqs[:10] == list(range(10)) and seqs[10:] == [None] * 4
    assert spool.overflowed == 4 and spool.metrics()["spool_overflow_total"] == 4
    assert spool.bytes <= spool.max_bytes
    assert caplog.text.count("is full") == 1  # one line when refusing starts
    spool.ack(range(4))  # Kafka took the two oldest segments: their space is free
    assert spool.bytes < spool.max_bytes - 2 * size
    with caplog.at_level(logging.WARNING, logger="tawag.ingest.spool"):
        assert spool.append(0, b"k", b"x" * 100) == 10
    spool.sync()
    assert "accepts events again; 4 were refused" in caplog.text
    assert spool.depth == 7 and len(values(spool)) == 7


def test_segments_roll_and_drained_ones_leave_the_disk(tmp_path):
    size = len(encode_data(0, 0, b"k", b"v" * 50))
    spool = Spool(tmp_path, max_bytes=MB, segment_bytes=3 * size)
    fill(spool, *[b"v" * 50] * 10)
    assert [p.name for p in segment_files(tmp_path)] == [
        f"{n:020d}.seg" for n in (0, 3, 6, 9)]
    spool.ack(range(5))
    assert [int(p.stem) for p in segment_files(tmp_path)] == [3, 6, 9]  # 3..5 holds 5
    spool.ack(range(5, 10))
    assert [p.stat().st_size for p in segment_files(tmp_path)] == [0]  # emptied, not re-made
    assert spool.bytes == 0 and spool.depth == 0
    fill(spool, b"after")
    spool.close()
    again = Spool(tmp_path, max_bytes=MB, segment_bytes=3 * size)
    assert [(r.seq, r.value) for r in again.pending(10)] == [(10, b"after")]


def test_metrics_name_what_an_operator_reads(tmp_path):
    spool = Spool(tmp_path, max_bytes=MB)
    fill(spool, b"a", b"b")
    spool.ack([0])
    m = spool.metrics()
    assert {k: m[k] for k in ("spool_depth", "spooled_total", "spool_acked_total",
                              "spool_overflow_total")} == {
        "spool_depth": 1, "spooled_total": 2, "spool_acked_total": 1,
        "spool_overflow_total": 0}
    assert m["spool_bytes"] == spool.bytes > 0


# --- any interleaving ------------------------------------------------------------------------

OPS = st.lists(st.one_of(
    st.tuples(st.just("append"), st.integers(1, 5)),
    st.tuples(st.just("deliver"), st.integers(1, 6), st.integers(0, 6), st.randoms()),
    st.tuples(st.just("reopen"), st.booleans()),
), max_size=40)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_any_interleaving_delivers_every_record_exactly_once_in_order(tmp_path_factory, ops):
    """A forwarder takes the oldest ``n`` records, Kafka acknowledges the first ``k`` of
    them (in any order, in pieces), and the process may be stopped or killed between any
    two steps; at the end everything is drained. Segments are tiny so that they roll and
    are deleted all the time."""
    directory = tmp_path_factory.mktemp("prop")
    open_spool = lambda: Spool(directory, max_bytes=MB, segment_bytes=120)  # noqa: E731
    spool = open_spool()
    appended: list[bytes] = []
    delivered: list[bytes] = []

    def deliver(n: int, k: int, rnd) -> None:
        batch = spool.pending(n)
        taken = batch[:k]
        delivered.extend(r.value for r in taken)
        seqs = [r.seq for r in taken]
        rnd.shuffle(seqs)
        while seqs:
            cut = rnd.randint(1, len(seqs))
            spool.ack(seqs[:cut])
            seqs = seqs[cut:]

    for op in ops:
        if op[0] == "append":
            for _ in range(op[1]):
                value = b"e%d" % len(appended)
                assert spool.append(0, value, value) is not None
                appended.append(value)
            spool.sync()
        elif op[0] == "deliver":
            deliver(*op[1:])
        else:
            spool.close() if op[1] else abandon(spool)
            spool = open_spool()
        assert values(spool) == appended[len(delivered):]
    while spool.depth:
        deliver(3, 3, __import__("random").Random(0))
    assert delivered == appended
    spool.close()
    assert sum(p.stat().st_size for p in segment_files(directory)) == 0
