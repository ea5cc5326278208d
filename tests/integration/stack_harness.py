"""A whole Tawag stack for one integration-test module, on a port block of its own.

Each module gets a block of ports (``block`` + 60 SIP, +71 JSON-RPC, +448 evapi, +223/+224
rtpengine (+225 its HTTP/metrics), +92/+93 Kafka, +123 warehouse, +501 dashboard, +503 API,
+900..+904 metrics of the supervisor, ingest, streams, warehouse, connectors) and an RTP range,
so modules never meet each other or a `make run` on the default ports. Listening ports stay
below 32768: the kernel hands out 32768-60999 to outgoing connections, and a port one of
them holds cannot be bound (a test broker on 47090 once failed that way). The stack is the one
``tawag up`` starts (:class:`tawag.supervisor.Supervisor`), provisioned from a TOML text.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from core.settings import REPO_ROOT, Settings, load
from edge import sipp
from edge.control import KamailioRpcError, kamailio_rpc
from tawag.supervisor import Supervisor

RTP_PORTS = 500
"""RTP ports given to rtpengine; the module's sipp media ports sit above them."""


def stack_settings(tmp_path_factory: pytest.TempPathFactory, name: str, *, block: int,
                   rtp_min: int, provisioning: str, **overrides: Any) -> Settings:
    """Settings of a test stack: its own data folder, ports and provisioning file."""
    provisioning_file = tmp_path_factory.mktemp(f"{name}-prov") / "tawag.toml"
    provisioning_file.write_text(provisioning)
    return load(
        environ={},
        provisioning_file=provisioning_file,
        pike_density=0,  # every sipp of a test shares 127.0.0.1
        data_dir=tmp_path_factory.mktemp(f"{name}-data"),
        sip_port=block + 60, kamailio_http_port=block + 71, evapi_port=block + 448,
        rtpengine_ng_port=block + 223, rtpengine_cli_port=block + 224,
        rtp_port_min=rtp_min, rtp_port_max=rtp_min + RTP_PORTS - 1,
        kafka_bootstrap=f"127.0.0.1:{block + 92}", kafka_controller_port=block + 93,
        warehouse_http_port=block + 123, dashboard_port=block + 501, api_port=block + 503,
        rtpengine_http_port=block + 225, supervisor_metrics_port=block + 900,
        ingest_metrics_port=block + 901, streams_metrics_port=block + 902,
        warehouse_metrics_port=block + 903, connectors_metrics_port=block + 904,
        **overrides,
    )


@contextmanager
def running_stack(settings: Settings, *, demo: bool = False) -> Iterator[Supervisor]:
    """The stack started (demo traffic only if asked) for the duration, stopped by PID
    afterwards."""
    sup = Supervisor(settings, out=io.StringIO())
    try:
        sup.start(demo=demo)
        yield sup
    finally:
        sup.stop()


def wait_for(what: str, condition: Callable[[], Any], timeout: float) -> Any:
    """Poll ``condition`` until it returns something truthy (returned), or fail naming
    ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)  # polling interval, not a wait for an event
    return value


EXAMPLE_PROVISIONING = REPO_ROOT / "sip-edge" / "provisioning.example.toml"
EXAMPLE_PORTS = (5094, 5095, 5096, 5097, 5098)
"""The example file's carrier and trunk-source ports (the demo's sipp callers)."""


def example_provisioning(block: int) -> str:
    """The example provisioning file with its carrier and trunk-source ports moved into a
    test stack's port block, for stacks that run the demo."""
    text = EXAMPLE_PROVISIONING.read_text()
    for port in EXAMPLE_PORTS:
        assert f"127.0.0.1:{port}" in text, port
        text = text.replace(f"127.0.0.1:{port}", f"127.0.0.1:{block + port - 5000}")
    return text


def htable_value(settings: Settings, table: str, key: str) -> Any:
    """The value of Kamailio's htable ``table`` at ``key`` (None when absent)."""
    try:
        reply = kamailio_rpc(settings, "htable.get", table, key)
    except KamailioRpcError:
        return None
    return reply["item"]["value"]


def register_available(settings: Settings, edge: sipp.Edge, domain: str,
                       agents: dict[str, tuple[int, str]], timeout: float) -> None:
    """Register each agent (``{agent: (contact port, password)}``) with sipp and wait
    until the streams' live state has reached the edge: ``avail`` in htable "live"."""
    for agent, (port, password) in agents.items():
        result = sipp.register(edge, agent, port=port, password=password)
        assert result.ok, result.received()
    for agent in agents:
        wait_for(f"{agent} available at the edge",
                 lambda a=agent: htable_value(settings, "live", f"avail:{domain}:{a}"),
                 timeout)
