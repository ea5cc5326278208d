"""The ingest bridge's local spool: events kept on disk until Kafka has acknowledged them.

Kamailio's evapi does not buffer, so the bridge must take every event at once, whether
or not Kafka is there. It writes each event here first (``append`` then ``sync``: an
fsync of the batch, before the next read from evapi), a forwarder produces the spooled
records to Kafka in order, and each record is forgotten only after Kafka acknowledged it
(``ack``). A bridge killed at any moment finds the unacknowledged records on its next
start and sends them before anything newer.

On disk: a directory of segment files, each named after the sequence number of its first
data record (``00000000000000000042.seg``), written append-only. A segment is a run of
records::

    record  = length:u32 crc32:u32 body            (little-endian; crc32 of body)
    body    = 0x01 seq:u64 channel:u8 klen:u16 key value     data record
            | 0x02 (first:u64 last:u64)*                      ack record (seq ranges)

Sequence numbers grow by one per data record. An ack record lists ranges of data records
Kafka acknowledged; it is appended to the newest segment, so it never sits in a segment
older than the records it names. The oldest segments are deleted once every data record
in them is acknowledged, and the newest is truncated to nothing once no record waits;
acks naming records that are gone are ignored when read back.

Reading back (:func:`decode`, pure) stops at the first record that is cut short, too
long, or fails its CRC: that is the record a crash interrupted mid-write, and it was
never acknowledged as taken (its ``sync`` did not return). :class:`Spool` logs it and
truncates the file there, so the next append starts on a clean boundary.

Size bound: ``max_bytes`` caps the bytes of all segments. A data record that would cross
it is refused: ``append`` returns ``None``, the spool counts it in ``overflowed`` and logs
when refusing starts and when it ends (the caller logs which event it was). Refused
events are lost — they are not written anywhere else — so the limit should hold many
hours of traffic; it exists so that a long Kafka outage cannot fill the disk Kafka itself
needs to come back. Ack records are always written (they are what frees space).

Guarantees: a record whose ``sync`` returned survives a crash (kill -9, power loss with
honest disks) until acknowledged. Records come back from :meth:`Spool.pending` in
sequence order, oldest first. Delivery is at least once: a record Kafka acknowledged in
the instant before a crash, before its ack record reached the disk, is sent again after
the restart with the same bytes, hence the same ``event_id``; consumers drop such repeats
(the CDR and agent folds in ``streams/folds`` skip an ``event_id`` they already hold).

Usage::

    spool = Spool(data_dir / "spool", max_bytes=256 * 2**20)
    seq = spool.append(0, b"call-1", b'{"event_id": ...}')   # None: refused (full)
    spool.sync()                                               # durable from here on
    for rec in spool.pending(100):
        ...                                                    # produce rec.key, rec.value
    spool.ack([rec.seq for rec in delivered])
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import zlib
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "Spool",
    "Record",
    "scan",
    "Ack",
    "decode",
    "encode_data",
    "encode_ack",
    "DEFAULT_SEGMENT_BYTES",
]

log = logging.getLogger("tawag.ingest.spool")

DEFAULT_SEGMENT_BYTES = 4 * 2**20
"""Small enough that a drained segment frees its space soon, large enough to be few files."""
MAX_BODY = 16 * 2**20
"""A length field above this is garbage (a torn header), not a record."""
SUFFIX = ".seg"

_HEADER = struct.Struct("<II")  # body length, crc32(body)
_DATA = struct.Struct("<BQBH")  # kind, seq, channel, key length
_RANGE = struct.Struct("<QQ")  # first, last (inclusive)
_KIND_DATA = 1
_KIND_ACK = 2


@dataclass(frozen=True)
class Record:
    """One spooled message: where it goes (``channel``), its Kafka key and value."""

    seq: int
    channel: int
    key: bytes
    value: bytes


@dataclass(frozen=True)
class Ack:
    """Kafka acknowledged these data records: inclusive ``(first, last)`` ranges."""

    ranges: tuple[tuple[int, int], ...]

    def seqs(self) -> Iterable[int]:
        for first, last in self.ranges:
            yield from range(first, last + 1)


# --- the format, pure -------------------------------------------------------------------


def _frame(body: bytes) -> bytes:
    return _HEADER.pack(len(body), zlib.crc32(body)) + body


def encode_data(seq: int, channel: int, key: bytes, value: bytes) -> bytes:
    """The bytes of one data record."""
    return _frame(_DATA.pack(_KIND_DATA, seq, channel, len(key)) + key + value)


def to_ranges(seqs: Iterable[int]) -> tuple[tuple[int, int], ...]:
    """``[1, 2, 3, 7]`` -> ``((1, 3), (7, 7))``."""
    ranges: list[list[int]] = []
    for seq in sorted(set(seqs)):
        if ranges and ranges[-1][1] == seq - 1:
            ranges[-1][1] = seq
        else:
            ranges.append([seq, seq])
    return tuple((first, last) for first, last in ranges)


def encode_ack(seqs: Iterable[int]) -> bytes:
    """The bytes of one ack record naming ``seqs``."""
    ranges = to_ranges(seqs)
    return _frame(bytes([_KIND_ACK]) + b"".join(_RANGE.pack(f, la) for f, la in ranges))


def _decode_body(body: bytes) -> Record | Ack | None:
    kind = body[0]
    if kind == _KIND_DATA and len(body) >= _DATA.size:
        _, seq, channel, klen = _DATA.unpack_from(body)
        if _DATA.size + klen <= len(body):
            key = body[_DATA.size:_DATA.size + klen]
            return Record(seq, channel, bytes(key), bytes(body[_DATA.size + klen:]))
    elif kind == _KIND_ACK and (len(body) - 1) % _RANGE.size == 0:
        ranges = tuple(_RANGE.unpack_from(body, 1 + i * _RANGE.size)
                       for i in range((len(body) - 1) // _RANGE.size))
        if all(first <= last for first, last in ranges):
            return Ack(ranges)
    return None


def decode(buf: bytes) -> tuple[list[tuple[int, int, Record | Ack]], int]:
    """Records of a segment's bytes as ``(offset, size, record)``, and the length of the
    valid prefix: decoding stops at the first record cut short or failing its CRC."""
    out: list[tuple[int, int, Record | Ack]] = []
    offset = 0
    view = memoryview(buf)
    while offset + _HEADER.size <= len(buf):
        length, crc = _HEADER.unpack_from(buf, offset)
        end = offset + _HEADER.size + length
        if not 0 < length <= MAX_BODY or end > len(buf):
            break
        body = view[offset + _HEADER.size:end]
        if zlib.crc32(body) != crc:
            break
        record = _decode_body(bytes(body))
        if record is None:
            break
        out.append((offset, end - offset, record))
        offset = end
    return out, offset


def scan(directory: Path) -> list[Record]:
    """The unacknowledged records of a spool directory, oldest first, read without
    changing anything (safe beside a running bridge: a record being written is just
    not there yet). For operators and tests; the bridge itself uses :class:`Spool`."""
    waiting: dict[int, Record] = {}
    for path in sorted(Path(directory).glob("*" + SUFFIX)):
        records, _ = decode(path.read_bytes())
        for _, _, record in records:
            if isinstance(record, Record):
                waiting[record.seq] = record
            else:
                for seq in record.seqs():
                    waiting.pop(seq, None)
    return [waiting[seq] for seq in sorted(waiting)]


# --- the files ----------------------------------------------------------------------------


@dataclass
class _Segment:
    first_seq: int
    path: Path
    fd: int
    size: int
    unacked: int = 0


class Spool:
    """A bounded, fsynced, append-only log of records waiting for Kafka (see module doc).

    Thread-safe: the bridge's reader appends while the forwarder reads and acknowledges.
    """

    def __init__(self, directory: Path, *, max_bytes: int,
                 segment_bytes: int = DEFAULT_SEGMENT_BYTES) -> None:
        if max_bytes <= 0 or segment_bytes <= 0:
            raise ValueError("spool sizes must be positive")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = max(1, min(segment_bytes, max_bytes // 4))
        """At most a quarter of the limit, so that drained segments free space in time."""
        self.spooled_total = 0
        """Data records written since this process opened the spool."""
        self.acked_total = 0
        """Data records Kafka acknowledged since this process opened the spool."""
        self.overflowed = 0
        """Data records refused because the spool was full, since the spool was opened."""
        self.recovered = 0
        """Unacknowledged records found on disk when the spool was opened."""
        self.torn_bytes = 0
        """Bytes of torn records dropped when the spool was opened."""
        self._lock = threading.Lock()
        self._segments: list[_Segment] = []
        self._where: OrderedDict[int, tuple[_Segment, int, int]] = OrderedDict()
        self._next_seq = 0
        self._synced_seq = -1
        self._refusing = False
        self._refused_run = 0
        self.directory.mkdir(parents=True, exist_ok=True)
        self._load()

    # --- reading back ---------------------------------------------------------------------

    def _load(self) -> None:
        highest = -1
        paths = sorted(self.directory.glob("*" + SUFFIX))
        for path in paths:
            seg = self._open_segment(path, int(path.stem))
            data = path.read_bytes()
            records, valid = decode(data)
            if valid < len(data):
                self._drop_torn_tail(seg, len(data) - valid, newest=path == paths[-1])
            highest = max(highest, seg.first_seq - 1)
            for offset, size, record in records:
                if isinstance(record, Record):
                    self._where[record.seq] = (seg, offset, size)
                    seg.unacked += 1
                    highest = max(highest, record.seq)
                else:
                    for seq in record.seqs():
                        self._forget(seq)
                    highest = max(highest, max(last for _, last in record.ranges))
        self._next_seq = highest + 1
        self._synced_seq = highest
        self.recovered = len(self._where)
        self._delete_drained()
        if self.recovered:
            log.warning("spool %s: %d events from an earlier run still wait for Kafka "
                        "(%d bytes); they go first", self.directory, self.recovered, self.bytes)

    def _open_segment(self, path: Path, first_seq: int) -> _Segment:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o640)
        seg = _Segment(first_seq, path, fd, os.fstat(fd).st_size)
        self._segments.append(seg)
        return seg

    def _drop_torn_tail(self, seg: _Segment, torn: int, *, newest: bool) -> None:
        where = "the record a crash cut short" if newest else "corruption in an old segment"
        log.warning("spool %s: dropping %d bytes at the end of %s (%s)",
                    self.directory, torn, seg.path.name, where)
        seg.size -= torn
        os.ftruncate(seg.fd, seg.size)
        os.fsync(seg.fd)
        self.torn_bytes += torn

    # --- writing --------------------------------------------------------------------------

    def append(self, channel: int, key: bytes, value: bytes) -> int | None:
        """Write one record (durable after :meth:`sync`); its sequence number, or ``None``
        when the spool is full and the record is refused (counted in ``overflowed``)."""
        with self._lock:
            data = encode_data(self._next_seq, channel, key, value)
            if self.bytes + len(data) > self.max_bytes:
                self._refuse()
                return None
            if self._refusing:
                log.warning("spool %s accepts events again; %d were refused while it was full",
                            self.directory, self._refused_run)
                self._refusing, self._refused_run = False, 0
            seg = self._writable(len(data))
            self._write(seg, data)
            seq = self._next_seq
            self._where[seq] = (seg, seg.size - len(data), len(data))
            seg.unacked += 1
            self._next_seq += 1
            self.spooled_total += 1
            return seq

    def _refuse(self) -> None:
        self.overflowed += 1
        self._refused_run += 1
        if not self._refusing:
            self._refusing = True
            log.error("spool %s is full (%d of %d bytes, %d events waiting for Kafka): "
                      "refusing new events, each is logged and counted as overflow",
                      self.directory, self.bytes, self.max_bytes, len(self._where))

    def _writable(self, size: int) -> _Segment:
        active = self._segments[-1] if self._segments else None
        if active is not None and active.size + size <= self.segment_bytes:
            return active
        if active is not None and active.size == 0:
            return active
        if active is not None:
            os.fsync(active.fd)  # sync() only fsyncs the newest segment
        path = self.directory / f"{self._next_seq:020d}{SUFFIX}"
        seg = self._open_segment(path, self._next_seq)
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the new file's name must survive a crash too
        finally:
            os.close(dir_fd)
        return seg

    @staticmethod
    def _write(seg: _Segment, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(seg.fd, view):]
        seg.size += len(data)

    def sync(self) -> None:
        """Make every appended record durable (one fsync); only then may it be sent."""
        with self._lock:
            if self._segments and self._synced_seq < self._next_seq - 1:
                os.fsync(self._segments[-1].fd)
            self._synced_seq = self._next_seq - 1

    def ack(self, seqs: Iterable[int]) -> None:
        """Kafka has these records: write an ack record, delete segments fully acked."""
        with self._lock:
            known = [seq for seq in seqs if seq in self._where]
            if not known:
                return
            # Into the newest segment even past segment_bytes: only data records start
            # a segment, so each segment's name is the seq of its first data record.
            seg = self._segments[-1]
            self._write(seg, encode_ack(known))
            os.fsync(seg.fd)
            for seq in known:
                self._forget(seq)
            self.acked_total += len(known)
            self._delete_drained()

    def _forget(self, seq: int) -> None:
        where = self._where.pop(seq, None)
        if where is not None:
            where[0].unacked -= 1

    def _delete_drained(self) -> None:
        """Delete the oldest segments while all their records are acknowledged; once
        nothing waits, empty the newest too (truncated, not re-created: no directory
        fsync on every drained batch)."""
        while len(self._segments) > 1 and self._segments[0].unacked == 0:
            seg = self._segments.pop(0)
            os.close(seg.fd)
            seg.path.unlink(missing_ok=True)
        if not self._where and self._segments and self._segments[0].size:
            os.ftruncate(self._segments[0].fd, 0)
            self._segments[0].size = 0

    # --- the forwarder's side ---------------------------------------------------------------

    def pending(self, limit: int) -> list[Record]:
        """Up to ``limit`` unacknowledged, synced records, oldest first."""
        with self._lock:
            out = []
            for seq, (seg, offset, size) in self._where.items():
                if seq > self._synced_seq or len(out) >= limit:
                    break
                records, _ = decode(os.pread(seg.fd, size, offset))
                out.append(records[0][2])
            return out

    # --- what an operator reads ------------------------------------------------------------

    @property
    def depth(self) -> int:
        """Records waiting for Kafka's acknowledgement."""
        return len(self._where)

    @property
    def bytes(self) -> int:
        """Bytes of all segment files (what ``max_bytes`` bounds)."""
        return sum(seg.size for seg in self._segments)

    def metrics(self) -> dict[str, int]:
        """The spool's gauges and counters, named for a metrics endpoint."""
        with self._lock:
            return {
                "spool_depth": self.depth,
                "spool_bytes": self.bytes,
                "spool_max_bytes": self.max_bytes,
                "spool_segments": len(self._segments),
                "spooled_total": self.spooled_total,
                "spool_acked_total": self.acked_total,
                "spool_overflow_total": self.overflowed,
                "spool_recovered": self.recovered,
                "spool_torn_bytes": self.torn_bytes,
            }

    def close(self) -> None:
        """Sync and close the files; records not acknowledged stay for the next run."""
        with self._lock:
            for seg in self._segments:
                os.fsync(seg.fd)
                os.close(seg.fd)
            self._segments.clear()
            self._where.clear()
