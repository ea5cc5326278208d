"""What ClickHouse clients ask of the HTTP interface, byte by byte: ClickHouse's
compressed blocks, HTTP compression, formats, the X-ClickHouse-* headers, errors, and the
tenant-safe catalogue (system.tables/columns/databases/settings)."""

from __future__ import annotations

import csv
import gzip
import io
import json
import zlib

import httpx
import lz4.frame
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from chdb.session import Session
from served import serve

from warehouse import chblocks, guard
from warehouse.http_server import http_decode, pick_encoding, summary_header

COUNT = "SELECT call_id FROM cdrs FINAL ORDER BY call_id"


@pytest.fixture
def served(tmp_path):
    with serve(tmp_path) as s:
        yield s


def http(served, user: str = "alice") -> httpx.Client:
    return httpx.Client(base_url=served.server.url, timeout=30,
                        auth=(user, served.passwords[user]))


# --- pure helpers -------------------------------------------------------------------------

@pytest.mark.parametrize(("accept", "chosen"), [
    ("gzip", "gzip"), ("identity", None), ("", None), ("br, zstd", "zstd"),
    ("lz4,zstd,gzip,deflate", "lz4"), ("gzip;q=0.5, deflate", "deflate"),
    ("zstd;q=0, gzip", "gzip"), ("GZIP", "gzip"), ("gzip;q=bad", None),
])
def test_pick_encoding_follows_q_values_and_order(accept, chosen):
    assert pick_encoding(accept) == chosen


@pytest.mark.parametrize(("encoding", "encode"), [
    ("gzip", gzip.compress), ("deflate", zlib.compress),
    ("zstd", zstandard.ZstdCompressor().compress), ("lz4", lz4.frame.compress)])
def test_request_bodies_are_decoded_and_capped(encoding, encode):
    body = b"SELECT 1 " * 200
    assert http_decode(encode(body), encoding) == body
    with pytest.raises(ValueError, match="larger"):
        http_decode(encode(body), encoding, limit=100)


def test_summary_header_is_clickhouses_shape():
    summary = json.loads(summary_header({"read_rows": 3, "result_rows": 1}))
    assert summary["read_rows"] == "3" and summary["total_rows_to_read"] == "3"
    assert summary["written_rows"] == "0" and summary["result_rows"] == "1"


def test_system_columns_list_matches_this_clickhouse():
    """SYSTEM_COLUMNS must hold every column of the catalogue tables, or an alias could
    take the name of a column outside METADATA_COLUMNS."""
    session = Session()
    try:
        for table, allowed in guard.METADATA_COLUMNS.items():
            db, name = table.split(".")
            columns = set(session.query(
                f"SELECT name FROM system.columns WHERE database = '{db}' AND table = "
                f"'{name}'", "TSV").bytes().decode().split())
            assert columns, table
            assert {c.lower() for c in columns} <= guard.SYSTEM_COLUMNS, table
            assert allowed <= {c.lower() for c in columns}, table
    finally:
        session.close()


# --- compression --------------------------------------------------------------------------

def test_compress_1_answers_in_clickhouse_blocks(served):
    with http(served) as c:
        plain = c.post("/", content=COUNT)
        framed = c.post("/?compress=1", content=COUNT)
    assert framed.status_code == 200
    assert framed.content[16] == chblocks.LZ4
    assert chblocks.decompress(framed.content) == plain.content == b"c1\nc2\n"


def test_decompress_1_reads_a_body_in_clickhouse_blocks(served):
    with http(served) as c:
        resp = c.post("/?decompress=1&compress=1", content=chblocks.compress(COUNT.encode()))
        broken = bytearray(chblocks.compress(COUNT.encode()))
        broken[-1] ^= 0xFF
        bad = c.post("/?decompress=1", content=bytes(broken))
    assert chblocks.decompress(resp.content) == b"c1\nc2\n"
    assert bad.status_code == 400
    assert bad.headers["X-ClickHouse-Exception-Code"] == "36"
    assert b"checksum" in bad.content


def raw_post(served, url: str, body: str, headers: dict[str, str]) -> tuple[dict, bytes]:
    """Headers and the bytes on the wire (httpx would decode some encodings itself)."""
    with httpx.Client(base_url=served.server.url, timeout=30,
                      auth=("alice", served.passwords["alice"])) as c, \
            c.stream("POST", url, content=body, headers=headers) as resp:
        return dict(resp.headers), b"".join(resp.iter_raw())


@pytest.mark.parametrize(("encoding", "decode"), [
    ("gzip", gzip.decompress), ("deflate", zlib.decompress),
    ("zstd", lambda b: zstandard.ZstdDecompressor().decompressobj().decompress(b)),
    ("lz4", lz4.frame.decompress)])
def test_http_compression_when_enabled(served, encoding, decode):
    headers, raw = raw_post(served, "/?enable_http_compression=1", COUNT,
                            {"Accept-Encoding": encoding})
    assert headers["content-encoding"] == encoding
    assert decode(raw) == b"c1\nc2\n"
    headers, raw = raw_post(served, "/", COUNT, {"Accept-Encoding": encoding})
    assert "content-encoding" not in headers and raw == b"c1\nc2\n"


def test_http_compression_around_clickhouse_blocks(served):
    headers, raw = raw_post(served, "/?enable_http_compression=1&compress=1", COUNT,
                            {"Accept-Encoding": "zstd"})
    assert headers["content-encoding"] == "zstd"
    inner = zstandard.ZstdDecompressor().decompressobj().decompress(raw)
    assert chblocks.decompress(inner) == b"c1\nc2\n"


def test_compressed_request_bodies(served):
    with http(served) as c:
        resp = c.post("/", content=zstandard.ZstdCompressor().compress(COUNT.encode()),
                      headers={"Content-Encoding": "zstd"})
    assert resp.content == b"c1\nc2\n"


# --- formats, parameters, headers ---------------------------------------------------------

def test_binary_and_text_formats(served):
    sql = "SELECT call_id, toUInt32(length(call_id)) AS n FROM cdrs FINAL ORDER BY call_id"
    with http(served) as c:
        def get(fmt: str) -> httpx.Response:
            resp = c.post(f"/?default_format={fmt}", content=sql)
            assert resp.status_code == 200, resp.text
            assert resp.headers["X-ClickHouse-Format"] == fmt
            return resp

        arrow = pa.ipc.open_file(io.BytesIO(get("Arrow").content)).read_all()
        assert arrow.column("call_id").to_pylist() == ["c1", "c2"]
        stream = pa.ipc.open_stream(io.BytesIO(get("ArrowStream").content)).read_all()
        assert stream.column("n").to_pylist() == [2, 2]
        parquet = pq.read_table(io.BytesIO(get("Parquet").content))
        assert parquet.column("call_id").to_pylist() == ["c1", "c2"]
        rb = get("RowBinaryWithNamesAndTypes").content
        assert rb[:1] == b"\x02" and b"call_id" in rb and b"UInt32" in rb
        assert rb.endswith(b"\x02c2\x02\x00\x00\x00")
        assert b"call_id" in get("Native").content
        assert json.loads(get("JSON").content)["data"] == [
            {"call_id": "c1", "n": 2}, {"call_id": "c2", "n": 2}]
        assert json.loads(get("JSONCompact").content)["rows"] == 2
        assert get("JSONEachRow").text.splitlines()[1] == '{"call_id":"c2","n":2}'
        assert list(csv.reader(io.StringIO(get("CSVWithNames").text))) == [
            ["call_id", "n"], ["c1", "2"], ["c2", "2"]]
        assert get("TSVWithNamesAndTypes").text.splitlines()[:2] == [
            "call_id\tn", "String\tUInt32"]


def test_query_parameters_and_the_format_header(served):
    with http(served) as c:
        resp = c.get("/", params={"query": "SELECT call_id FROM cdrs FINAL WHERE caller = "
                                           "{c:String}", "param_c": "+7 'quoted'"},
                     headers={"X-ClickHouse-Format": "JSONEachRow"})
    assert resp.json() == {"call_id": "c2"}


def test_clickhouse_response_headers(served):
    with http(served) as c:
        given = c.post("/?query_id=my-query-1", content=COUNT)
        generated = c.post("/", content=COUNT, headers={"X-ClickHouse-Query-Id": "hdr-2"})
        fresh = c.post("/", content=COUNT)
        failed = c.post("/?query_id=q3", content="SELECT nope FROM cdrs")
    assert given.headers["X-ClickHouse-Query-Id"] == "my-query-1"
    assert generated.headers["X-ClickHouse-Query-Id"] == "hdr-2"
    assert len(fresh.headers["X-ClickHouse-Query-Id"]) == 36
    assert given.headers["X-ClickHouse-Timezone"] == served.server.executor.timezone != ""
    summary = json.loads(given.headers["X-ClickHouse-Summary"])
    assert summary["result_rows"] == "2"
    assert int(summary["read_rows"]) >= 2
    assert failed.headers["X-ClickHouse-Query-Id"] == "q3"
    assert failed.headers["X-ClickHouse-Exception-Code"] == "47"
    assert failed.text.startswith("Code: 47. DB::Exception: ")


def test_a_query_id_cannot_inject_headers(served):
    with http(served) as c:
        resp = c.post("/", params={"query_id": "a\r\nX-Evil: 1"}, content=COUNT)
    assert resp.headers["X-ClickHouse-Query-Id"] == "aX-Evil:1"
    assert "X-Evil" not in resp.headers


def test_database_is_tawag_only(served):
    with http(served) as c:
        ok = c.post("/?database=tawag", content="SELECT count() FROM cdrs")
        header = c.post("/", content="SELECT count() FROM cdrs",
                        headers={"X-ClickHouse-Database": "tawag"})
        other = c.post("/?database=system", content="SELECT count() FROM cdrs")
    assert ok.text == header.text == "2\n"
    assert other.status_code == 404
    assert other.headers["X-ClickHouse-Exception-Code"] == "81"


def test_ping_and_replicas_status(served):
    with httpx.Client(base_url=served.server.url, timeout=10) as c:
        assert c.get("/ping").text == "Ok.\n"
        assert c.get("/replicas_status").text == "Ok.\n"


# --- the catalogue ------------------------------------------------------------------------

def rows(served, sql: str, user: str = "alice") -> list[list[str]]:
    with http(served, user) as c:
        resp = c.post("/", content=sql)
    assert resp.status_code == 200, resp.text
    return [line.split("\t") for line in resp.text.splitlines()]


def refused(served, sql: str, user: str = "alice") -> str:
    with http(served, user) as c:
        resp = c.post("/", content=sql)
    assert resp.status_code == 403, resp.text
    assert resp.headers["X-ClickHouse-Exception-Code"] == "497"
    return resp.text


def test_a_tenant_user_sees_only_the_analyst_tables_in_the_catalogue(served):
    analyst = sorted(t.split(".")[1] for t in guard.TABLES)
    assert rows(served, "SELECT name FROM system.tables ORDER BY name") == [[t] for t in analyst]
    assert rows(served, "SELECT name FROM system.databases") == [["tawag"]]
    tables = rows(served, "SELECT DISTINCT table FROM system.columns ORDER BY table")
    assert tables == [[t] for t in analyst]


@pytest.mark.parametrize("sql", [
    "SELECT total_rows FROM system.tables",
    "SELECT t.total_bytes FROM system.tables AS t",
    "SELECT `data_paths` FROM system.tables",
    "SELECT * FROM system.tables",
    "SELECT COLUMNS('.*') FROM system.columns",
    "SELECT data_compressed_bytes FROM system.columns",
    "SELECT metadata_path FROM system.databases",
    "SELECT name AS total_rows FROM system.tables ORDER BY total_rows",
    "SELECT name FROM system.tables WHERE name IN (SELECT call_id FROM cdrs)",
    "SELECT name FROM system.tables, tawag.cdrs",
    "SELECT name FROM system.parts",
    "SELECT name FROM system.tables SETTINGS additional_table_filters = {}",
])
def test_the_catalogue_refuses_sizes_paths_and_other_tables(served, sql):
    refused(served, sql)


def test_an_administrator_reads_the_whole_catalogue(served):
    names = [r[0] for r in rows(served, "SELECT name FROM system.tables WHERE database = "
                                        "'tawag'", "root")]
    assert "schema_migrations" in names
    assert rows(served, "SELECT total_rows > 0 FROM system.tables WHERE database = 'tawag' "
                        "AND name = 'cdrs'", "root") == [["1"]]


def test_settings_are_readable_but_not_changeable(served):
    got = rows(served, "SELECT value FROM system.settings WHERE name = 'readonly'")
    assert got == [["2"]]
    refused(served, "SELECT 1 SETTINGS readonly = 0")


def test_native_for_a_native_protocol_client_is_refused_not_misrendered(served):
    """clickhouse-go (Grafana's plugin) sends client_protocol_version and would misread
    chdb's Native bytes (no block info, no serialization flags) as an empty result."""
    with http(served) as c:
        resp = c.post("/?client_protocol_version=54460&default_format=Native",
                      content="SELECT 1 AS check")
        plain = c.post("/?default_format=Native", content="SELECT 1 AS check")
        other = c.post("/?client_protocol_version=54460&default_format=JSONEachRow",
                       content="SELECT 1 AS check")
    assert resp.status_code == 501
    assert resp.headers["X-ClickHouse-Exception-Code"] == "48"
    assert plain.status_code == 200 and plain.content.startswith(b"\x01\x01\x05check")
    assert other.json() == {"check": 1}
