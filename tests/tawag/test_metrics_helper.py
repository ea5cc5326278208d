"""The shared metrics helper: a served registry answers in Prometheus' text format, a
callback collector reports what its function returns at scrape time, and a taken port
does not stop the component."""

from __future__ import annotations

import socket

import pytest
from metrics_scrape import scrape, value
from prometheus_client import CollectorRegistry, Counter

from core.metrics import CallbackCollector, register_callback, serve


def test_a_served_registry_is_scraped_with_its_current_values():
    registry = CollectorRegistry()
    hits = Counter("tawag_test_hits", "hits", ["kind"], registry=registry)
    server = serve("127.0.0.1", 0, "test", registry)
    assert server is not None
    try:
        hits.labels("a").inc(3)
        first = scrape(server.url)
        hits.labels("a").inc()
        hits.labels("b").inc(2)
        second = scrape(server.url)
    finally:
        server.stop()
    assert value(first, "tawag_test_hits_total", kind="a") == 3
    assert value(second, "tawag_test_hits_total", kind="a") == 4
    assert value(second, "tawag_test_hits_total", kind="b") == 2


def test_callback_families_are_read_at_each_scrape():
    registry = CollectorRegistry()
    depth = {"x": 1}
    register_callback(
        [("tawag_test_depth", "depth", "gauge", ["queue"]),
         ("tawag_test_done_total", "done", "counter", ["queue"])],
        lambda: {"tawag_test_depth": [(("x",), depth["x"])],
                 "tawag_test_done_total": [(("x",), 7)]},
        registry)
    server = serve("127.0.0.1", 0, "test", registry)
    try:
        assert value(scrape(server.url), "tawag_test_depth", queue="x") == 1
        depth["x"] = 5
        samples = scrape(server.url)
    finally:
        server.stop()
    assert value(samples, "tawag_test_depth", queue="x") == 5
    assert value(samples, "tawag_test_done_total", queue="x") == 7


def test_a_failing_callback_leaves_its_families_empty_and_the_endpoint_up():
    registry = CollectorRegistry()

    def broken():
        raise RuntimeError("boom")

    register_callback([("tawag_test_broken", "b", "gauge", [])], broken, registry)
    assert [m.samples for m in registry.collect()] == [[]]


def test_only_gauges_and_counters_are_accepted():
    with pytest.raises(ValueError):
        CallbackCollector([("x", "x", "histogram", [])], dict)


def test_a_taken_port_is_logged_and_the_component_runs_on(caplog):
    holder = socket.create_server(("127.0.0.1", 0))
    try:
        port = holder.getsockname()[1]
        assert serve("127.0.0.1", port, "ingest", CollectorRegistry()) is None
    finally:
        holder.close()
    assert "cannot serve metrics" in caplog.text
