"""Every metrics endpoint of a real stack answers, and its counters move with a real call.

The stack is the one ``tawag up`` starts (supervisor, Kafka, rtpengine, Kamailio, ingest,
the Faust worker, the warehouse, the dashboard), on ports of its own; the supervisor's
endpoint is served as ``tawag up`` serves it. Each endpoint is scraped before and after a
sipp call (REGISTER + answered INVITE + BYE) and parsed with prometheus_client's parser:
the ingest events, the Faust agents' events in/out, the warehouse's loaded rows and
Kamailio's own transaction counters must have moved, rtpengine must report the media
session, and the Faust consumer group's lag must come back to 0.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from metrics_scrape import names, scrape, total, value
from stack_harness import running_stack, stack_settings, wait_for

from edge import sipp
from tawag.supervisor import Supervisor, serve_supervisor_metrics

pytestmark = pytest.mark.integration

BLOCK = 20000
AGENT, AGENT_PORT, AGENT_MEDIA = "102", BLOCK + 302, 39700
CALLER_PORT, CALLER_MEDIA = BLOCK + 310, 39600
PASSWORDS = {"101": "metrics-pw-101", "102": "metrics-pw-102"}
PROVISIONING = f"""
[tenant.acme]
domain = "pbx.test"

[tenant.acme.extension.101]
password = "{PASSWORDS['101']}"

[tenant.acme.extension.102]
password = "{PASSWORDS['102']}"
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Supervisor]:
    settings = stack_settings(tmp_path_factory, "metrics", block=BLOCK, rtp_min=39000,
                              provisioning=PROVISIONING, streams_lag_interval_s=1.0)
    with running_stack(settings) as sup:
        server = serve_supervisor_metrics(sup)
        assert server is not None
        try:
            yield sup
        finally:
            server.stop()


def endpoints(sup: Supervisor) -> dict[str, str]:
    s = sup.settings
    return {
        "supervisor": f"http://127.0.0.1:{s.supervisor_metrics_port}/metrics",
        "ingest": f"http://127.0.0.1:{s.ingest_metrics_port}/metrics",
        "streams": f"http://127.0.0.1:{s.streams_metrics_port}/metrics",
        "warehouse": f"http://127.0.0.1:{s.warehouse_metrics_port}/metrics",
        "kamailio": f"http://{s.sip_host}:{s.kamailio_http_port}/metrics",
        "rtpengine": f"http://{s.sip_host}:{s.rtpengine_http_port}/metrics",
    }


def test_every_endpoint_answers_and_counters_move_with_a_call(stack, tmp_path):
    urls = endpoints(stack)
    before = {name: scrape(url) for name, url in urls.items()}
    for name in ("ingest", "streams", "warehouse"):
        assert value(before["supervisor"], "tawag_component_up", component=name) == 1
    assert value(before["supervisor"], "tawag_component_restarts_total",
                 component="streams") == 0

    edge = sipp.Edge.from_settings(stack.settings, tmp_path)
    assert sipp.register(edge, AGENT, port=AGENT_PORT, password=PASSWORDS[AGENT]).ok
    uas = sipp.start_uas_answer(edge, port=AGENT_PORT, media_port=AGENT_MEDIA)
    result = sipp.call(edge, "101", AGENT, port=CALLER_PORT, media_port=CALLER_MEDIA,
                       talk_ms=1000, password=PASSWORDS["101"])
    uas.wait()
    assert result.ok, result.received()

    def moved(name: str, metric: str, **labels: str) -> float:
        return total(scrape(urls[name]), metric, **labels) - total(before[name], metric,
                                                                    **labels)

    # the call's events: offered, ringing, answered, ended at least, through each stage
    wait_for("ingest events", lambda: moved("ingest", "tawag_ingest_events_total",
                                            type="call.ended") >= 1, 60)
    assert moved("ingest", "tawag_ingest_events_total") >= 4
    wait_for("ingest acks", lambda: moved("ingest", "tawag_ingest_events_produced_total")
             >= 4, 30)
    wait_for("cdr agent", lambda: moved("streams", "tawag_streams_events_out_total",
                                        agent="cdr-assembly", output="cdrs") >= 1, 90)
    assert moved("streams", "tawag_streams_events_in_total", agent="cdr-assembly",
                 topic="tawag.call-events") >= 4
    wait_for("cdr rows", lambda: moved("warehouse", "tawag_warehouse_rows_loaded_total",
                                       table="cdrs") >= 1, 90)
    assert moved("warehouse", "tawag_warehouse_rows_loaded_total", table="call_events") >= 4
    assert moved("warehouse", "tawag_warehouse_load_batches_total") >= 2
    # Kamailio's own statistics (xhttp_prom): the INVITE and BYE transactions
    assert moved("kamailio", "kamailio_tmx_UAS_transactions") >= 2 or \
        moved("kamailio", "kamailio_core_rcv_requests") >= 3
    assert "rtpengine_sessions" in names(before["rtpengine"])
    # the worker caught up: every committed partition of the group has lag 0
    group = "tawag-streams"

    seen: list[dict] = []

    def caught_up() -> bool:
        lag = {tuple(sorted(lb)): v for (n, lb), v in scrape(urls["streams"]).items()
               if n == "tawag_streams_consumer_lag" and ("group", group) in lb}
        seen.append(lag)
        return bool(lag) and all(v == 0 for v in lag.values())

    try:
        wait_for("consumer lag 0", caught_up, 60)
    except AssertionError:
        raise AssertionError(f"lag never 0: {seen[-1]}") from None
    for name in ("ingest", "streams", "warehouse"):
        assert total(scrape(urls[name]), "tawag_" + name + "_dead_letters_total") == 0
