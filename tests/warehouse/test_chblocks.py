"""ClickHouse's compressed-block framing, checked against clickhouse-driver's own codec."""

from __future__ import annotations

import io
import os

import pytest
from clickhouse_driver.compression.lz4 import Compressor as DriverLz4
from clickhouse_driver.streams.compressed import CompressedBlockInputStream
from hypothesis import given
from hypothesis import strategies as st

from warehouse import chblocks

DATA = b"tenant\tcall_id\n" + b"".join(b"acme\tc%d\n" % i for i in range(50_000))


def driver_decompress(framed: bytes) -> bytes:
    """What clickhouse-driver reads from the blocks (it verifies every checksum)."""
    raw = io.BytesIO(framed)
    stream = CompressedBlockInputStream(raw, context=None)
    out = []
    while raw.tell() < len(framed):
        out.append(bytes(stream.read_block()))
    return b"".join(out)


def driver_compress(data: bytes) -> bytes:
    """One block as clickhouse-driver writes it (CompressedBlockOutputStream.finalize)."""
    from clickhouse_cityhash.cityhash import CityHash128
    from clickhouse_driver.writer import write_binary_uint128

    compressor = DriverLz4()
    compressor.write(data)
    body = bytes([compressor.method_byte]) + compressor.get_compressed_data(1)
    out = io.BytesIO()
    write_binary_uint128(CityHash128(body), out)
    return out.getvalue() + body


def test_clickhouse_driver_reads_our_blocks():
    framed = chblocks.compress(DATA)
    assert framed[16] == chblocks.LZ4
    assert len(framed) < len(DATA) / 2
    assert driver_decompress(framed) == DATA


def test_we_read_clickhouse_drivers_blocks():
    assert chblocks.decompress(driver_compress(DATA)) == DATA


def test_large_data_is_split_into_blocks_of_at_most_one_mebibyte():
    data = os.urandom(2_500_000)
    framed = list(chblocks.blocks(data))
    assert len(framed) == 3
    assert chblocks.decompress(b"".join(framed)) == data
    assert driver_decompress(b"".join(framed)) == data


@pytest.mark.parametrize("method", [chblocks.LZ4, chblocks.ZSTD, chblocks.NONE])
def test_each_method_round_trips(method):
    framed = chblocks.compress(DATA, method)
    assert framed[16] == method
    assert chblocks.decompress(framed) == DATA


def test_empty_data_is_no_block():
    assert chblocks.compress(b"") == b""
    assert chblocks.decompress(b"") == b""


def test_a_flipped_bit_fails_the_checksum():
    framed = bytearray(chblocks.compress(DATA))
    framed[40] ^= 1
    with pytest.raises(chblocks.CompressedBlockError, match="checksum"):
        chblocks.decompress(bytes(framed))


def test_truncated_and_oversized_input_is_refused():
    framed = chblocks.compress(DATA)
    with pytest.raises(chblocks.CompressedBlockError):
        chblocks.decompress(framed[:-1])
    with pytest.raises(chblocks.CompressedBlockError, match="larger"):
        chblocks.decompress(framed, limit=1000)


@given(st.binary(max_size=5000), st.integers(min_value=1, max_value=700))
def test_any_bytes_round_trip_in_any_block_size(data, block_bytes):
    framed = b"".join(chblocks.blocks(data, block_bytes=block_bytes))
    assert chblocks.decompress(framed) == data
