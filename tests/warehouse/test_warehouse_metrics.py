"""The warehouse's metrics endpoint: the loader's rows, batches, dead letters and skipped
redeliveries, and the HTTP interface's queries, latency histogram and error codes."""

from __future__ import annotations

import threading

import httpx
import pytest
from conftest import SETTINGS, event_records, make_event
from metrics_scrape import free_port, scrape, total

from core.metrics import serve
from core.settings import load
from warehouse.loader import Loader, Record, routes_for
from warehouse.service import run
from warehouse.users import SERVICE_USER, service_password

ERROR_STATUS = 400
"""What ClickHouse answers for a query that fails while it runs (a bad cast)."""


def deltas(before, after):
    return lambda name, **labels: total(after, name, **labels) - total(before, name, **labels)


def test_loader_rows_batches_dead_letters_and_skips_are_counted(store):
    parked = []
    loader = Loader(store, routes_for(SETTINGS), dead_letters=parked.extend)
    server = serve("127.0.0.1", 0, "warehouse")
    topic = SETTINGS.topic_call_events
    try:
        before = scrape(server.url)
        records = event_records([make_event("e1"), make_event("e2"), make_event("e3")])
        loader.load([*records, Record(topic, 0, 3, b"{not json")])
        loader.load(event_records([make_event("e1")]))  # a redelivery: already stored
        loader.load([Record("tawag.unknown", 0, 0, b"{}")])
        after = scrape(server.url)
    finally:
        server.stop()
    delta = deltas(before, after)
    assert delta("tawag_warehouse_rows_loaded_total", table="call_events") == 3
    assert delta("tawag_warehouse_load_batches_total", table="call_events") == 1
    assert delta("tawag_warehouse_dead_letters_total", topic=topic) == 1
    assert delta("tawag_warehouse_dead_letters_total", topic="tawag.unknown") == 1
    assert delta("tawag_warehouse_records_skipped_total") == 1
    assert len(parked) == 2


def test_the_service_serves_query_counts_latency_and_http_errors(tmp_path):
    settings = load({}, data_dir=tmp_path, warehouse_http_port=free_port(),
                    warehouse_metrics_port=free_port(), kafka_bootstrap="127.0.0.1:1")
    metrics_url = f"http://127.0.0.1:{settings.warehouse_metrics_port}/metrics"
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(target=run, args=(settings, stop),
                              kwargs={"load": False, "ready": ready})
    thread.start()
    try:
        assert ready.wait(30)
        before = scrape(metrics_url)
        url = settings.warehouse_url
        auth = (SERVICE_USER, service_password(settings.data_dir))
        codes = [
            httpx.get(url, params={"query": "SELECT count() FROM cdrs"}, auth=auth),
            httpx.get(url, params={"query": "SELECT 1"}, auth=auth),
            httpx.post(url, content=b"DROP TABLE cdrs", auth=auth),
            httpx.get(url, params={"query": "SELECT toUInt8('not a number')"}, auth=auth),
            httpx.get(url, params={"query": "SELECT 1"}),  # no credentials
            httpx.get(url + "nothing", auth=auth),
        ]
        assert [r.status_code for r in codes] == [200, 200, 403, ERROR_STATUS, 401, 404]
        after = scrape(metrics_url)
    finally:
        stop.set()
        thread.join(60)
    delta = deltas(before, after)
    assert delta("tawag_warehouse_queries_total", outcome="ok") == 2
    assert delta("tawag_warehouse_queries_total", outcome="refused") == 1
    assert delta("tawag_warehouse_queries_total", outcome="error") == 1
    assert delta("tawag_warehouse_query_duration_seconds_count") == 3
    assert delta("tawag_warehouse_query_duration_seconds_sum") > 0
    assert delta("tawag_warehouse_http_errors_total", code="403") == 1
    assert delta("tawag_warehouse_http_errors_total", code=str(ERROR_STATUS)) == 1
    assert delta("tawag_warehouse_http_errors_total", code="401") == 1
    assert delta("tawag_warehouse_http_errors_total", code="404") == 1
    assert not thread.is_alive()
    with pytest.raises(httpx.ConnectError):
        httpx.get(metrics_url)
