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
    RTPENGINE_HTTP_PORT,
    SIP_PORT,
    START_TIMEOUT_S,
    EdgeStack,
    EvapiListener,
    connect_evapi,
    start_kamailio,
    start_process,
    stop_processes,
)

from core.settings import Settings, load
from edge import control as edge


@pytest.fixture(scope="module")
def edge_settings(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Settings:
    """The test ports; a test module may set ``EDGE_SETTINGS`` (Settings field -> value)
    to run its stack with other values, e.g. a short maximum call duration."""
    return load(
        environ={},
        data_dir=tmp_path_factory.mktemp("edge-data"),
        sip_port=SIP_PORT,
        kamailio_http_port=HTTP_PORT,
        evapi_port=EVAPI_PORT,
        rtpengine_ng_port=NG_PORT,
        rtpengine_cli_port=CLI_PORT, rtpengine_http_port=RTPENGINE_HTTP_PORT,
        rtp_port_min=RTP_PORT_MIN,
        rtp_port_max=RTP_PORT_MAX,
        no_answer_timeout=NO_ANSWER_TIMEOUT_S,
        **getattr(request.module, "EDGE_SETTINGS", {}),
    )


@pytest.fixture(scope="module")
def edge_stack(edge_settings: Settings, request: pytest.FixtureRequest) -> Iterator[EdgeStack]:
    """rtpengine, then (once it answers ng ping) Kamailio, then JSON-RPC ready.

    A test module may set ``EDGE_SWITCHES`` (kamailio.cfg WITH_* names) to run the
    edge with other features than the platform default.
    """
    settings = edge_settings
    switches = getattr(request.module, "EDGE_SWITCHES", edge.DEFAULT_SWITCHES)
    edge.prepare_dirs(settings)
    started: list[subprocess.Popen[bytes]] = []
    try:
        rtpengine = start_process(
            edge.rtpengine_command(settings), settings.log_dir / "rtpengine.log"
        )
        started.append(rtpengine)
        assert edge.wait_until(lambda: edge.rtpengine_ready(settings), timeout=START_TIMEOUT_S)
        kamailio = start_kamailio(settings, switches)
        started.append(kamailio)
        stack = EdgeStack(settings, rtpengine, kamailio, tuple(switches))
        yield stack
        started[-1] = stack.kamailio  # a test may have restarted it
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
