"""Flood protection bans unknown sources only, in the production configuration (digest
auth, the PBX and pike on): the carrier's trunk and an address that authenticated are
served at any rate, while an unknown address sending the same burst is banned.

Before: pike exempted nobody, so a carrier trunk (one address) sending more than about
5 calls/s was banned for 300 s and every call it sent was dropped without an answer.
"""

from __future__ import annotations

import socket
from dataclasses import replace

import pytest
from edge_harness import EdgeStack
from test_pike import DENSITY, edge_settings, options, replies_within

from core.settings import Settings
from edge import control as edge
from edge import provision, sipp

pytestmark = pytest.mark.integration

EDGE_SWITCHES = (*edge.DEFAULT_SWITCHES, "WITH_AUTH", "WITH_PBX", "WITH_ANTIFLOOD")
BURST = 8 * DENSITY
TRUNK, AGENT_HOST, STRANGER = "127.0.0.3", "127.0.0.4", "127.0.0.5"
AGENT_PORT = 25075
PASSWORD = "acme-101-flood"


__all__ = ["edge_settings"]  # the edge of test_pike.py (pike_density = DENSITY)


def burst(source: str, settings: Settings) -> int:
    """Send BURST OPTIONS from ``source`` as fast as the socket takes them; the replies."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        port = sock.getsockname()[1]
        for n in range(BURST):
            sock.sendto(options(n, port).replace(b"127.0.0.2", source.encode()),
                        (settings.sip_host, settings.sip_port))
        return replies_within(sock, 1.0)


def banned(settings: Settings, source: str) -> bool:
    found = edge.kamailio_rpc(settings, "htable.dump", "ipban")
    return any(item.get("name") == source
               for slot in found or [] for item in slot.get("slot", []))


def test_trunk_and_authenticated_sources_are_never_banned_for_rate_strangers_are(
        edge_stack: EdgeStack, tmp_path) -> None:
    settings = edge_stack.settings
    path = tmp_path / "tawag.toml"
    path.write_text(f"""
[tenant.acme]
domain = "{settings.sip_domain}"
trunk = "127.0.0.1:25098"
trunk_sources = ["{TRUNK}"]

[tenant.acme.extension.101]
password = "{PASSWORD}"
""")
    provision.apply(settings, path, publish=False)
    agent = replace(sipp.Edge.from_settings(settings, tmp_path), local_ip=AGENT_HOST)
    assert sipp.register(agent, "101", port=AGENT_PORT, password=PASSWORD).ok

    assert burst(TRUNK, settings) == BURST
    assert burst(AGENT_HOST, settings) == BURST
    assert not banned(settings, TRUNK) and not banned(settings, AGENT_HOST)

    answered = burst(STRANGER, settings)
    assert 0 < answered <= 2 * DENSITY < BURST
    assert banned(settings, STRANGER)
    assert edge_stack.alive()
