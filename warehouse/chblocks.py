"""ClickHouse's own compressed-block framing (the HTTP ``compress=1``/``decompress=1``).

ClickHouse clients ask for it by default (the official JDBC driver does): the answer is
a sequence of blocks, each::

    16 bytes  CityHash128 (v1.0.2) of the rest of the block, as two little-endian UInt64
     1 byte   method: 0x82 LZ4, 0x90 ZSTD, 0x02 none
     4 bytes  compressed size, this 9-byte header included (little-endian)
     4 bytes  uncompressed size (little-endian)
     n bytes  the payload (an LZ4 *block*, a zstd frame, or the bytes themselves)

The hash and the codecs are the maintained libraries ClickHouse's own Python driver uses
(``clickhouse-cityhash``, ``lz4``, ``zstandard``); this module only lays out the bytes,
the way ``clickhouse_driver.streams.compressed`` writes them.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import lz4.block
import zstandard
from clickhouse_cityhash.cityhash import CityHash128

__all__ = ["LZ4", "ZSTD", "NONE", "BLOCK_BYTES", "CompressedBlockError", "compress",
           "decompress", "blocks"]

LZ4 = 0x82
ZSTD = 0x90
NONE = 0x02
BLOCK_BYTES = 1 << 20
"""Uncompressed bytes per block (ClickHouse's ``max_compress_block_size``)."""

_HEADER = struct.Struct("<BII")
_HASH = struct.Struct("<QQ")
_MASK = (1 << 64) - 1
MAX_BLOCK_BYTES = 1 << 30
"""Largest uncompressed block accepted from a client (ClickHouse refuses > 1 GiB too)."""


class CompressedBlockError(ValueError):
    """The bytes are not valid ClickHouse compressed blocks (bad hash, method, size)."""


def _hash(data: bytes) -> bytes:
    value = CityHash128(data)
    return _HASH.pack((value >> 64) & _MASK, value & _MASK)


def _block(chunk: bytes, method: int) -> bytes:
    if method == LZ4:
        payload = lz4.block.compress(chunk, store_size=False)
    elif method == ZSTD:
        payload = zstandard.ZstdCompressor(level=1).compress(chunk)
    elif method == NONE:
        payload = chunk
    else:
        raise ValueError(f"unknown compression method 0x{method:02x}")
    body = _HEADER.pack(method, _HEADER.size + len(payload), len(chunk)) + payload
    return _hash(body) + body


def blocks(data: bytes, method: int = LZ4, block_bytes: int = BLOCK_BYTES) -> Iterator[bytes]:
    """``data`` as compressed blocks of at most ``block_bytes`` uncompressed bytes each."""
    for start in range(0, len(data), block_bytes):
        yield _block(data[start:start + block_bytes], method)


def compress(data: bytes, method: int = LZ4) -> bytes:
    """``data`` framed as ClickHouse compressed blocks (empty data: no block at all)."""
    return b"".join(blocks(data, method))


def decompress(data: bytes, limit: int = MAX_BLOCK_BYTES) -> bytes:
    """The bytes inside a sequence of compressed blocks; each block's hash is verified.

    ``limit`` caps the total uncompressed size (a request body is small)."""
    out, pos, total = [], 0, 0
    view = memoryview(data)
    while pos < len(data):
        if len(data) - pos < 16 + _HEADER.size:
            raise CompressedBlockError("truncated compressed block header")
        method, size, raw_size = _HEADER.unpack_from(view, pos + 16)
        end = pos + 16 + size
        if size < _HEADER.size or end > len(data):
            raise CompressedBlockError("compressed block size runs past the data")
        body = bytes(view[pos + 16:end])
        if _hash(body) != bytes(view[pos:pos + 16]):
            raise CompressedBlockError("checksum doesn't match: corrupted data")
        total += raw_size
        if total > limit:
            raise CompressedBlockError(f"decompressed data is larger than {limit} bytes")
        payload = body[_HEADER.size:]
        if method == LZ4:
            chunk = lz4.block.decompress(payload, uncompressed_size=raw_size)
        elif method == ZSTD:
            chunk = zstandard.ZstdDecompressor().decompress(payload, max_output_size=raw_size)
        elif method == NONE:
            chunk = payload
        else:
            raise CompressedBlockError(f"unknown compression method 0x{method:02x}")
        if len(chunk) != raw_size:
            raise CompressedBlockError("decompressed size does not match the header")
        out.append(chunk)
        pos = end
    return b"".join(out)
