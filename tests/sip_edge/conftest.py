"""Fixtures: a real SIP edge (rtpengine + Kamailio) on the test ports, and an evapi client.

Processes run in the foreground and are stopped by PID in the fixture finalizers.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
from edge_harness import (
    CLI_PORT,
    EVAPI_PORT,
    HTTP_PORT,
    NG_PORT,
    NO_ANSWER_TIMEOUT_S,
    RTP_PORT_MAX,
    RTP_PORT_MIN,
    SIP_PORT,
    START_TIMEOUT_S,
    EdgeStack,
    EvapiListener,
    connect_evapi,
    start_process,
    stop_processes,
)

from tawag import edge
from tawag.settings import Settings, load


@pytest.fixture(scope="module")
def edge_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return load(
        environ={},
        data_dir=tmp_path_factory.mktemp("edge-data"),
        sip_port=SIP_PORT,
        kamailio_http_port=HTTP_PORT,
        evapi_port=EVAPI_PORT,
        rtpengine_ng_port=NG_PORT,
        rtpengine_cli_port=CLI_PORT,
        rtp_port_min=RTP_PORT_MIN,
        rtp_port_max=RTP_PORT_MAX,
        no_answer_timeout=NO_ANSWER_TIMEOUT_S,
    )


@pytest.fixture(scope="module")
def edge_stack(edge_settings: Settings) -> Iterator[EdgeStack]:
    """rtpengine, then (once it answers ng ping) Kamailio, then JSON-RPC ready."""
    settings = edge_settings
    edge.prepare_dirs(settings)
    started: list[subprocess.Popen[bytes]] = []
    try:
        rtpengine = start_process(
            edge.rtpengine_command(settings), settings.log_dir / "rtpengine.log"
        )
        started.append(rtpengine)
        assert edge.wait_until(lambda: edge.rtpengine_ready(settings), timeout=START_TIMEOUT_S)
        kamailio = start_process(edge.kamailio_command(settings), settings.log_dir / "kamailio.log")
        started.append(kamailio)
        assert edge.wait_until(lambda: edge.kamailio_ready(settings), timeout=START_TIMEOUT_S)
        yield EdgeStack(settings, rtpengine, kamailio)
    finally:
        stop_processes(started)


@pytest.fixture(scope="module")
def evapi(edge_stack: EdgeStack) -> Iterator[EvapiListener]:
    """An evapi client that has received its greeting, so no later event can be lost."""
    settings = edge_stack.settings
    listener = connect_evapi(settings.sip_host, settings.evapi_port)
    try:
        listener.wait_for(lambda e: e["event"] == "evapi.connected")
        yield listener
    finally:
        listener.close()
