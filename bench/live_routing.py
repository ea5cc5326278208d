"""Live routing: how fast a change reaches the edge, and what live rules cost per INVITE.

    .venv/bin/python bench/live_routing.py [--samples 30] [--calls 20]

Starts its own stack with the ``tawag up`` supervisor - Kafka, rtpengine, Kamailio,
ingest, the Faust worker and the edge's live-routing applier (``edge.live``) - on the
port block 30000 (RTP 46500-46999) in a temporary data folder, and measures:

* **propagation, agent available**: extension 103 unregisters, then registers again with
  sipp; from the moment sipp sent the REGISTER that got its 200 (sipp's own trace) to the
  moment ``avail:<d>:103`` is in Kamailio's htable "live" (polled over JSON-RPC every
  2 ms): edge -> evapi -> ingest -> Kafka -> agent fold -> tawag.agent-states -> routing
  fold -> tawag.routing -> applier -> htable;
* **propagation, manager changed**: a CRM lookup naming another manager is sent to
  ``tawag.crm-contacts`` with the connectors' publisher; from the send to ``mgr:<d>:<n>``
  holding the new extension;
* **decision time per INVITE** (``decision_us`` of route.decided, the edge's own clock from
  route[PBX] to the decision): a white-listed caller (a static rule, htable "pbx" only), a
  known client whose manager is available (``responsible_manager``: htable "live" read
  and checked), and a ``longest_idle``, a ``least_calls`` and a ``round_robin`` group pick
  over three members.

p50/p99/max of each. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import io
import itertools
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kafka import KafkaConsumer, KafkaProducer, TopicPartition  # noqa: E402

from connectors.base import Contact  # noqa: E402
from connectors.contacts import ContactPublisher  # noqa: E402
from core.events import EventType, from_json  # noqa: E402
from core.settings import load  # noqa: E402
from edge import sipp  # noqa: E402
from edge.control import KamailioRpcError, kamailio_rpc  # noqa: E402
from tawag.supervisor import Supervisor, components  # noqa: E402

BLOCK, RTP_MIN = 30000, 46500
DOMAIN, TENANT = "pbx.test", "acme"
CARRIER_PORT = BLOCK + 110
AGENTS = ("101", "102", "103")
PORTS = {a: BLOCK + int(a) for a in AGENTS}
DID_WHITE, DID_MANAGER, DID_IDLE = "74951230701", "74951230702", "74951230703"
DID_LEAST, DID_RR = "74951230704", "74951230705"
VIP, CLIENT = "+79035550777", "+79035550888"
STACK = ("kafka", "rtpengine", "kamailio", "ingest", "streams", "live")
MEDIA = itertools.cycle(range(RTP_MIN + 600, RTP_MIN + 1400, 4))

PROVISIONING = f"""
[tenant.{TENANT}]
domain = "{DOMAIN}"
trunk_sources = ["127.0.0.1:{CARRIER_PORT}"]
{"".join(f'''
[tenant.{TENANT}.extension.{a}]
password = "bench-{a}"
''' + (f'whitelist = ["{VIP}"]' + chr(10) if a == "101" else "") for a in AGENTS)}
[tenant.{TENANT}.group.idle]
strategy = "longest_idle"
members = ["101", "102", "103"]

[tenant.{TENANT}.group.least]
strategy = "least_calls"
members = ["101", "102", "103"]

[tenant.{TENANT}.group.rr]
strategy = "round_robin"
members = ["101", "102", "103"]

[tenant.{TENANT}.did."{DID_LEAST}"]
to = "group:least"

[tenant.{TENANT}.did."{DID_RR}"]
to = "group:rr"

[tenant.{TENANT}.did."{DID_WHITE}"]
to = "group:idle"

[tenant.{TENANT}.did."{DID_MANAGER}"]
to = "group:idle"

[tenant.{TENANT}.did."{DID_IDLE}"]
to = "group:idle"
"""


def live(settings: Any, key: str) -> Any:
    try:
        return kamailio_rpc(settings, "htable.get", "live", key)["item"]["value"]
    except KamailioRpcError:
        return None


def until(condition: Callable[[], Any], timeout_s: float = 30.0) -> float:
    """Poll every 2 ms; the time (epoch s) the condition first held."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.002)
    return time.time()


def summary(name: str, values_ms: list[float]) -> None:
    values = sorted(values_ms)
    p99 = values[min(len(values) - 1, round(0.99 * (len(values) - 1)))]
    print(f"{name:42s} n={len(values):3d}  p50 {statistics.median(values):8.1f}  "
          f"p99 {p99:8.1f}  max {values[-1]:8.1f}")


def agent_propagation(settings: Any, edge: sipp.Edge, samples: int) -> list[float]:
    out = []
    for _ in range(samples):
        sipp.unregister(edge, "103", port=PORTS["103"], password="bench-103")
        until(lambda: live(settings, f"avail:{DOMAIN}:103") is None)
        result = sipp.register(edge, "103", port=PORTS["103"], password="bench-103")
        sent = [m.at for m in result.messages
                if m.direction == "sent" and m.first_line.startswith("REGISTER")][-1]
        seen = until(lambda: live(settings, f"avail:{DOMAIN}:103") is not None)
        out.append((seen - sent) * 1000)
    return out


def manager_propagation(settings: Any, samples: int) -> list[float]:
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=0)
    publish = ContactPublisher(producer, tenant=TENANT, topic=settings.crm_topic_contacts)
    out = []
    try:
        for i in range(samples):
            manager = AGENTS[i % 2]
            t0 = time.time()
            publish("amocrm", CLIENT, Contact("amocrm", "9", "Client", "u"), manager)
            producer.flush()
            seen = until(lambda m=manager: live(settings, f"mgr:{DOMAIN}:{CLIENT[1:]}") == m)
            out.append((seen - t0) * 1000)
    finally:
        producer.close()
    return out


def decision_times(settings: Any, edge: sipp.Edge, caller: str, did: str, calls: int,
                   rule: str) -> list[float]:
    """Place ``calls`` calls (every agent answers) and read their decision_us back.

    The agents register again first, as phones do before their registration expires
    (``sipp.REGISTER_EXPIRES_S``): a whole run outlasts it."""
    for agent in AGENTS:
        assert sipp.register(edge, agent, port=PORTS[agent], password=f"bench-{agent}").ok
    ids = []
    for _ in range(calls):
        try:
            until(lambda: all((s := live(settings, f"avail:{DOMAIN}:{a}")) and s <= time.time()
                              for a in AGENTS))
        except TimeoutError:
            seen = {a: live(settings, f"avail:{DOMAIN}:{a}") for a in AGENTS}
            raise TimeoutError(f"{rule}: not every agent available after {len(ids)} calls "
                               f"(avail at the edge: {seen}, now {time.time():.0f})") from None
        phones = [sipp.start_uas_answer(edge, port=PORTS[a], media_port=next(MEDIA))
                  for a in AGENTS]
        try:
            result = sipp.call(edge, caller, did, port=CARRIER_PORT, media_port=next(MEDIA),
                               talk_ms=50)
            if not result.ok:
                print(f"{rule}: call {len(ids) + 1} failed: {result.final_code}",
                      file=sys.stderr)
            ids.append(result.call_id)
        finally:
            for phone in phones:
                phone.stop()
    return [us / 1000 for us in route_decisions(settings, set(ids), rule)]


def route_decisions(settings: Any, call_ids: set[str], rule: str) -> list[int]:
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None,
                             enable_auto_commit=False)
    topic = settings.topic_call_events
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    found: dict[str, int] = {}
    deadline = time.monotonic() + 30
    try:
        while len(found) < len(call_ids) and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                for m in batch:
                    event = from_json(m.value)
                    if (event.type is EventType.ROUTE_DECIDED and event.call_id in call_ids
                            and event.extra.get("rule") == rule):
                        found.setdefault(event.call_id, int(event.extra["decision_us"]))
    finally:
        consumer.close()
    return list(found.values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--decisions-only", action="store_true",
                        help="skip the propagation figures")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tawag-live-bench-"))
    prov = work / "tawag.toml"
    prov.write_text(PROVISIONING)
    settings = load(
        environ={}, provisioning_file=prov, pike_density=0, data_dir=work / "data",
        sip_port=BLOCK + 60, kamailio_http_port=BLOCK + 71, evapi_port=BLOCK + 448,
        rtpengine_ng_port=BLOCK + 223, rtpengine_cli_port=BLOCK + 224,
        rtpengine_http_port=BLOCK + 225, rtp_port_min=RTP_MIN, rtp_port_max=RTP_MIN + 499,
        kafka_bootstrap=f"127.0.0.1:{BLOCK + 92}", kafka_controller_port=BLOCK + 93,
        supervisor_metrics_port=BLOCK + 900, ingest_metrics_port=BLOCK + 901,
        streams_metrics_port=BLOCK + 902)
    stack = [c for c in components(settings) if c.name in STACK]
    sup = Supervisor(settings, stack=stack, out=io.StringIO())
    try:
        sup.start(demo=False)
        edge = sipp.Edge.from_settings(settings, work / "sipp")
        for agent in AGENTS:
            assert sipp.register(edge, agent, port=PORTS[agent], password=f"bench-{agent}").ok
        until(lambda: all(live(settings, f"avail:{DOMAIN}:{a}") for a in AGENTS), 60)
        if args.decisions_only:
            manager_propagation(settings, 1)  # the client's manager, for its decisions
        else:
            summary("propagation: agent available (ms)",
                    agent_propagation(settings, edge, args.samples))
            summary("propagation: manager changed (ms)",
                    manager_propagation(settings, args.samples))
        summary("decision: whitelist, static (ms)",
                decision_times(settings, edge, VIP, DID_WHITE, args.calls, "whitelist"))
        summary("decision: responsible_manager, live (ms)",
                decision_times(settings, edge, CLIENT, DID_MANAGER, args.calls,
                               "responsible_manager"))
        summary("decision: longest_idle pick, live (ms)",
                decision_times(settings, edge, "+79035550999", DID_IDLE, args.calls,
                               "longest_idle"))
        summary("decision: least_calls pick, live (ms)",
                decision_times(settings, edge, "+79035550998", DID_LEAST, args.calls,
                               "least_calls"))
        summary("decision: round_robin pick, live (ms)",
                decision_times(settings, edge, "+79035550997", DID_RR, args.calls,
                               "round_robin"))
    finally:
        sup.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
