"""Webhook delivery latency: an event's time at the source -> a local receiver's receipt.

    .venv/bin/python bench/webhook_latency.py [--events 1000] [--rate 20]
    .venv/bin/python bench/webhook_latency.py --edge [--calls 200] [--rate 5]

Starts its own single-node Kafka (KRaft) on 127.0.0.1:28294/28295 and the API process
(``python -m api``: uvicorn + the webhook worker, its own consumer group) on 28296, both in
a temporary data folder; issues an API key, creates a Tawag-native subscription through
``POST /api/v1/webhooks`` pointing at a receiver in this process (127.0.0.1:28297), then
produces ``--events`` ``call.offered`` events to ``tawag.call-events`` at ``--rate`` per
second (acks=all, keyed by call id, as the ingest bridge does), each stamped with its
event time ``ts`` just before it is produced.

The receiver verifies every delivery's ``Tawag-Signature`` and notes its arrival time;
latency = arrival - the event's ``ts`` (same clock: one machine). So the figure covers
Kafka -> the webhook worker's consumer -> the fsynced outbox -> the signed HTTP POST; the
edge -> ingest bridge -> Kafka hop before it is not in it (``bench/edge_load.py`` measures
the pipeline from the edge). Prints p50/p90/p99/max, and the deliveries received,
missing, duplicated or badly signed. A benchmark, not a test.

``--edge`` measures from the edge instead: the supervisor of ``tawag up`` starts Kafka,
rtpengine, Kamailio, the ingest bridge and the API (ports 28723-28799, RTP 44000-44499;
run it under ``flock /tmp/tawag-stack.lock``), sipp registers extension 102 (a UAS that
answers) and places ``--calls`` calls from 101 at ``--rate`` per second, each hung up
after ``--talk-ms``. Every call event (``*``) is delivered; its ``ts`` is Kamailio's own
stamp of the SIP moment, so latency = receipt - ts covers evapi -> ingest bridge (and its
fsynced spool) -> Kafka -> the webhook worker -> the signed POST, per event type.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402

from api.keys import add_key, keys_file  # noqa: E402
from api.signing import verify  # noqa: E402
from core.events import Direction, Event, EventType, to_json  # noqa: E402
from core.settings import REPO_ROOT, load, to_environ  # noqa: E402
from edge import sipp  # noqa: E402
from tawag import kafka  # noqa: E402
from tawag.supervisor import Supervisor, components  # noqa: E402

KAFKA_PORT, CONTROLLER_PORT, API_PORT, RECEIVER_PORT = 28294, 28295, 28296, 28297
EDGE_PORTS = {"sip_port": 28760, "kamailio_http_port": 28771, "evapi_port": 28748,
              "rtpengine_ng_port": 28723, "rtpengine_cli_port": 28724,
              "rtpengine_http_port": 28725, "rtp_port_min": 44000, "rtp_port_max": 44499,
              "kafka_bootstrap": "127.0.0.1:28792", "kafka_controller_port": 28793,
              "warehouse_http_port": 28783, "supervisor_metrics_port": 28794,
              "ingest_metrics_port": 28795, "api_port": 28798}
EDGE_STACK = ("kafka", "rtpengine", "kamailio", "ingest", "api")
EDGE_RECEIVER_PORT, UAC_PORT, UAS_PORT = 28799, 28780, 28781
CALLER, CALLEE = "101", "102"
POLL_S = 0.1  # waiting loops' interval


class Receipts:
    """What the receiver got: event id -> arrival times, and the signature failures."""

    def __init__(self) -> None:
        self.arrivals: dict[str, list[tuple[float, float]]] = {}
        self.bad_signatures = 0
        self.types: dict[str, str] = {}
        self.secret = ""
        self.lock = threading.Lock()

    def serve(self, port: int = RECEIVER_PORT) -> ThreadingHTTPServer:
        receipts = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                arrived = time.time()
                ok = verify(receipts.secret, self.headers.get("Tawag-Timestamp", ""), body,
                            self.headers.get("Tawag-Signature", ""), now=arrived)
                event = json.loads(body)
                sent = datetime.fromisoformat(event["ts"]).timestamp()
                with receipts.lock:
                    if not ok:
                        receipts.bad_signatures += 1
                    receipts.arrivals.setdefault(event["event_id"], []).append((sent, arrived))
                receipts.types[event["event_id"]] = event["type"]
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server


def wait(what: str, condition, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(POLL_S)


def api_ready(url: str) -> bool:
    try:
        return httpx.get(url + "/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def produce(bootstrap: str, topic: str, n: int, rate: float) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    start = time.monotonic()
    for i in range(n):
        time.sleep(max(0.0, start + i / rate - time.monotonic()))
        ev = Event(f"bench-{i}", EventType.CALL_OFFERED, tenant="acme", source="bench",
                   ts=datetime.now(UTC), call_id=f"call-{i}", leg_id=f"call-{i}",
                   direction=Direction.INBOUND, caller="+74951234567", callee="101")
        producer.send(topic, key=ev.call_id.encode(), value=to_json(ev))
    producer.flush()
    producer.close()


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def report(receipts: Receipts, n: int) -> None:
    firsts = [(arrived - sent) * 1000 for times in receipts.arrivals.values()
              for sent, arrived in times[:1]]
    repeats = sum(len(t) - 1 for t in receipts.arrivals.values())
    print(f"delivered {len(receipts.arrivals)} of {n} events, missing "
          f"{n - len(receipts.arrivals)}, duplicated {repeats}, "
          f"bad signatures {receipts.bad_signatures}")
    if len(firsts) >= 2:
        print(f"latency ms (event ts -> receiver): p50 {percentile(firsts, 50):.1f}  "
              f"p90 {percentile(firsts, 90):.1f}  p99 {percentile(firsts, 99):.1f}  "
              f"max {max(firsts):.1f}  min {min(firsts):.1f}")


def report_by_type(receipts: Receipts) -> None:
    """Latency per event type (the first delivery of each event)."""
    by_type: dict[str, list[float]] = {}
    for event_id, times in receipts.arrivals.items():
        sent, arrived = times[0]
        by_type.setdefault(receipts.types[event_id], []).append((arrived - sent) * 1000)
    for kind, ms in sorted(by_type.items()):
        line = f"  {kind:<16} {len(ms):>5} events"
        if len(ms) >= 2:
            line += (f"  p50 {percentile(ms, 50):7.1f}  p99 {percentile(ms, 99):7.1f}  "
                     f"max {max(ms):7.1f} ms")
        print(line)


def edge_provisioning() -> str:
    return "\n".join(['[tenant.acme]\ndomain = "pbx.test"\n'] + [
        f'[tenant.acme.extension.{u}]\npassword = "bench-{u}"\n' for u in (CALLER, CALLEE)])


def settle(receipts: Receipts, quiet_s: float, timeout_s: float) -> None:
    """Until no delivery arrived for ``quiet_s`` (the calls' last events are in)."""
    deadline = time.monotonic() + timeout_s
    seen, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        with receipts.lock:
            count = len(receipts.arrivals)
        if count != seen:
            seen, since = count, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return
        time.sleep(POLL_S)


def from_edge(args: argparse.Namespace) -> None:
    """``--edge``: sipp calls through the real edge, event at Kamailio -> receiver."""
    with tempfile.TemporaryDirectory(prefix="tawag-webhook-edge-bench-") as tmp:
        work = Path(tmp)
        (work / "prov.toml").write_text(edge_provisioning())
        settings = load(environ={}, data_dir=work / "data", pike_density=0,
                        provisioning_file=work / "prov.toml", **EDGE_PORTS)
        sup = Supervisor(settings, stack=[c for c in components(settings)
                                          if c.name in EDGE_STACK], out=sys.stderr)
        receipts = Receipts()
        receiver = receipts.serve(EDGE_RECEIVER_PORT)
        uas = None
        try:
            sup.start(demo=False)
            key = add_key(keys_file(settings), "acme", ("read", "webhooks:write"))
            created = httpx.post(f"http://127.0.0.1:{settings.api_port}/api/v1/webhooks",
                                 headers={"Authorization": f"Bearer {key}"}, timeout=10,
                                 json={"url": f"http://127.0.0.1:{EDGE_RECEIVER_PORT}/hook"})
            created.raise_for_status()
            receipts.secret = created.json()["secret"]
            edge = sipp.Edge.from_settings(settings, work / "sipp")
            assert sipp.register(edge, CALLEE, port=UAS_PORT, password="bench-102").ok
            uas = subprocess.Popen(
                ["sipp", "-sf", str(sipp.SCENARIO_DIR / "uas_answer.xml"), "-i", "127.0.0.1",
                 "-p", str(UAS_PORT), "-nostdin"], cwd=work, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
            assert sipp._wait_udp_bound("127.0.0.1", UAS_PORT, uas), "the UAS did not start"
            (work / "plan.csv").write_text(f"SEQUENTIAL\n{CALLEE};\n")
            print(f"sipp: {args.calls} calls {CALLER} -> {CALLEE} at {args.rate}/s, "
                  f"{args.talk_ms} ms each ...", flush=True)
            uac = subprocess.run(
                ["sipp", f"127.0.0.1:{settings.sip_port}",
                 "-sf", str(sipp.SCENARIO_DIR / "uac_call_auth_signalling.xml"),
                 "-key", "caller", CALLER, "-au", CALLER, "-ap", "bench-101",
                 "-key", "domain", settings.sip_domain, "-inf", str(work / "plan.csv"),
                 "-i", "127.0.0.1", "-p", str(UAC_PORT), "-d", str(args.talk_ms),
                 "-r", str(args.rate), "-m", str(args.calls), "-nostdin",
                 "-timeout", "600s", "-recv_timeout", "20000"],
                cwd=work, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT, check=False)
            print(f"sipp exit {uac.returncode} (0: every call succeeded)")
            settle(receipts, quiet_s=5.0, timeout_s=120.0)
            firsts = [(t[0][1] - t[0][0]) * 1000 for t in receipts.arrivals.values()]
            repeats = sum(len(t) - 1 for t in receipts.arrivals.values())
            print(f"delivered {len(firsts)} events of {args.calls} calls, duplicated "
                  f"{repeats}, bad signatures {receipts.bad_signatures}")
            if len(firsts) >= 2:
                print(f"latency ms (event ts at Kamailio -> receiver): p50 "
                      f"{percentile(firsts, 50):.1f}  p99 {percentile(firsts, 99):.1f}  "
                      f"max {max(firsts):.1f}")
            report_by_type(receipts)
        finally:
            receiver.shutdown()
            if uas is not None:
                uas.terminate()
                uas.wait(5)
            sup.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=20.0,
                        help="events per second (--edge: calls per second)")
    parser.add_argument("--edge", action="store_true",
                        help="sipp calls through the real edge instead of produced events")
    parser.add_argument("--calls", type=int, default=200, help="--edge: calls to place")
    parser.add_argument("--talk-ms", type=int, default=1000, help="--edge: each call's talk")
    args = parser.parse_args()
    if args.edge:
        from_edge(args)
        return

    with tempfile.TemporaryDirectory(prefix="tawag-webhook-bench-") as tmp:
        settings = load(environ={}, data_dir=Path(tmp),
                        kafka_bootstrap=f"127.0.0.1:{KAFKA_PORT}",
                        kafka_controller_port=CONTROLLER_PORT, api_port=API_PORT,
                        warehouse_http_port=RECEIVER_PORT + 1)  # no warehouse: not needed
        kafka.prepare_storage(settings)
        kafka_log = open(Path(tmp) / "kafka.log", "wb")  # noqa: SIM115
        broker = subprocess.Popen(kafka.kafka_command(settings), stdout=kafka_log,
                                  stderr=kafka_log)
        api = None
        receipts = Receipts()
        receiver = receipts.serve()
        try:
            wait("kafka", lambda: kafka.kafka_ready(settings), 90)
            kafka.ensure_topics(settings)
            key = add_key(keys_file(settings), "acme", ("read", "webhooks:write"))
            env = {**os.environ, **to_environ(settings), "PYTHONPATH": str(REPO_ROOT)}
            api_log = open(Path(tmp) / "api.log", "wb")  # noqa: SIM115
            api = subprocess.Popen([sys.executable, "-m", "api"], env=env, stdout=api_log,
                                   stderr=subprocess.STDOUT)
            url = f"http://127.0.0.1:{API_PORT}"
            wait("the API", lambda: api_ready(url), 60)
            created = httpx.post(url + "/api/v1/webhooks", timeout=10,
                                 headers={"Authorization": f"Bearer {key}"},
                                 json={"url": f"http://127.0.0.1:{RECEIVER_PORT}/hook",
                                       "events": ["call.offered"]})
            created.raise_for_status()
            receipts.secret = created.json()["secret"]
            print(f"producing {args.events} events at {args.rate}/s ...", flush=True)
            produce(settings.kafka_bootstrap, settings.topic_call_events, args.events,
                    args.rate)
            try:
                wait("every delivery", lambda: len(receipts.arrivals) >= args.events, 120)
            except SystemExit as exc:
                print(exc)
            time.sleep(1)  # late duplicates, if any, would arrive now
            report(receipts, args.events)
        finally:
            receiver.shutdown()
            for proc in (api, broker):
                if proc is not None:
                    proc.terminate()
                    try:
                        proc.wait(30)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
            kafka_log.close()


if __name__ == "__main__":
    main()
