"""Flood protection (WITH_ANTIFLOOD, pike) on a live edge of its own.

One source (127.0.0.2) floods the edge with OPTIONS far above ``pike_density`` requests
per 2 s: the edge answers the first ones, then drops the source silently and bans it
(htable ipban, 300 s). Meanwhile an extension on another source (127.0.0.1) registers
with sipp and is served, with its registration event.
"""

from __future__ import annotations

import socket

import pytest
from edge_harness import (
    CLI_PORT,
    EVAPI_PORT,
    HTTP_PORT,
    NG_PORT,
    RTP_PORT_MAX,
    RTP_PORT_MIN,
    RTPENGINE_HTTP_PORT,
    SIP_PORT,
    EdgeStack,
    EvapiListener,
)

from core.settings import Settings, load
from edge import control as edge
from edge import sipp

pytestmark = pytest.mark.integration

EDGE_SWITCHES = (*edge.DEFAULT_SWITCHES, "WITH_ANTIFLOOD")
DENSITY = 10
FLOOD = 60
FLOODER = "127.0.0.2"
REPLY_WAIT_S = 1.0


@pytest.fixture(scope="module")
def edge_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return load(environ={}, data_dir=tmp_path_factory.mktemp("pike-data"), sip_port=SIP_PORT,
                kamailio_http_port=HTTP_PORT, evapi_port=EVAPI_PORT, rtpengine_ng_port=NG_PORT,
                rtpengine_cli_port=CLI_PORT, rtpengine_http_port=RTPENGINE_HTTP_PORT,
                rtp_port_min=RTP_PORT_MIN,
                rtp_port_max=RTP_PORT_MAX, pike_density=DENSITY)


def options(n: int, port: int) -> bytes:
    return (f"OPTIONS sip:127.0.0.1:{SIP_PORT} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {FLOODER}:{port};branch=z9hG4bK-flood-{n}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:flood@{FLOODER}>;tag=f{n}\r\n"
            "To: <sip:127.0.0.1>\r\n"
            f"Call-ID: flood-{n}@{FLOODER}\r\n"
            f"CSeq: {n} OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n").encode()


def replies_within(sock: socket.socket, seconds: float) -> int:
    """Count the replies that arrive until ``seconds`` pass without one."""
    count = 0
    sock.settimeout(seconds)
    while True:
        try:
            sock.recv(65535)
        except TimeoutError:
            return count
        count += 1


def test_a_flooding_source_is_banned_and_others_are_still_served(
    edge_stack: EdgeStack, evapi: EvapiListener, tmp_path
) -> None:
    settings = edge_stack.settings
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((FLOODER, 0))
        port = sock.getsockname()[1]
        for n in range(FLOOD):
            sock.sendto(options(n, port), (settings.sip_host, SIP_PORT))
        answered = replies_within(sock, REPLY_WAIT_S)

        assert 0 < answered <= 2 * DENSITY < FLOOD
        banned = edge.kamailio_rpc(settings, "htable.get", "ipban", FLOODER)
        assert banned["item"]["value"] == 1
        # still banned: a single polite request from it gets no answer either
        sock.sendto(options(FLOOD, port), (settings.sip_host, SIP_PORT))
        assert replies_within(sock, REPLY_WAIT_S) == 0

    sip = sipp.Edge.from_settings(settings, tmp_path)
    result = sipp.register(sip, "101", port=25070)
    assert result.ok, result.received()
    event = evapi.wait_for(lambda e: e.get("call_id") == result.call_id)
    assert (event["event"], event["user"]) == ("register", "101")
    assert "pike: flood from 127.0.0.2" in edge_stack.kamailio_log()
    assert edge_stack.alive()
