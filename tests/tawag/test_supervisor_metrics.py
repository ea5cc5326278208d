"""The supervisor's metrics: up, given up, restarts and last exit code per component,
read from its records at each scrape of the endpoint ``tawag up`` serves."""

from __future__ import annotations

import io

from metrics_scrape import free_port, scrape, value

from core.settings import load
from tawag.supervisor import Record, Supervisor, serve_supervisor_metrics


def test_records_become_gauges_and_counters(tmp_path):
    settings = load(environ={}, data_dir=tmp_path, supervisor_metrics_port=free_port())
    sup = Supervisor(settings, stack=[], out=io.StringIO())
    sup.records = {"streams": Record(state="up"), "warehouse": Record(state="starting")}
    server = serve_supervisor_metrics(sup)
    assert server is not None and server.port == settings.supervisor_metrics_port
    try:
        first = scrape(server.url)
        sup.records["streams"] = Record(state="restarting", restarts=2, last_exit_code=-9)
        sup.records["warehouse"] = Record(state="failed", restarts=5, last_exit_code=1)
        second = scrape(server.url)
    finally:
        server.stop()
    assert value(first, "tawag_component_up", component="streams") == 1
    assert value(first, "tawag_component_up", component="warehouse") == 0
    assert value(first, "tawag_component_restarts_total", component="streams") == 0
    assert ("tawag_component_last_exit_code", frozenset({("component", "streams")})) \
        not in first
    assert value(second, "tawag_component_up", component="streams") == 0
    assert value(second, "tawag_component_restarts_total", component="streams") == 2
    assert value(second, "tawag_component_last_exit_code", component="streams") == -9
    assert value(second, "tawag_component_given_up", component="streams") == 0
    assert value(second, "tawag_component_given_up", component="warehouse") == 1
    assert value(second, "tawag_component_last_exit_code", component="warehouse") == 1
