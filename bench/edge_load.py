"""Edge load: one sipp run at --rate calls/s through the full edge, events sent vs received.

    .venv/bin/python bench/edge_load.py [--rate 100] [--calls 1000] [--talk-ms 500]
    .venv/bin/python bench/edge_load.py --pipeline --inbound --rate 300 --calls 18000

Starts its own stack with the same supervisor as ``tawag up`` but only the edge part —
Kafka, rtpengine, Kamailio (digest auth and the PBX on, as in production; pike off, as
every sipp shares 127.0.0.1) and the ingest bridge — on ports 28523-28597 and RTP
35000-35999 in a temporary data folder, provisioned from a generated file with
``--agents`` extensions (200, 201, ...), each registered to one sipp UAS that answers
every call; the calls go to them in turn (a contact centre spreads its calls over its
agents; one extension taking hundreds of calls a second is not a load anyone has).
``--pipeline`` runs the production configuration instead: the whole pipeline (the Faust
worker and the warehouse too) with flood protection on (pike at its default; sipp's
calls authenticate, and authenticated sources are not banned for rate), and then also
reports how long after the call's end at the edge (``ended_at``, the edge's event time)
each call's closed CDR was readable in the warehouse (``loaded_at`` of its first closed
revision; chdb makes an insert readable at once): p50, p99 and max. Extension
One sipp UAC places ``--calls`` calls from 101 (407 challenge answered, SDP through
rtpengine, no RTP) at ``--rate`` calls/s, each hung up after ``--talk-ms``; with
``--inbound`` it is the carrier instead (a trunk source, no digest auth) calling each
agent's DID from a thousand client numbers — the flow a contact centre lives on.

It counts the call events Kamailio sent (an extra evapi client sees every event
``evapi_relay`` sends, as the bridge does) and the events that reached
``tawag.call-events`` in Kafka for the same calls, and prints both with sipp's own
success/failure counts and the edge processes' CPU time. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402

from core.settings import Settings, load  # noqa: E402
from edge import sipp  # noqa: E402
from tawag.supervisor import Supervisor, components  # noqa: E402

EDGE = ("kafka", "rtpengine", "kamailio", "ingest")
PIPELINE = (*EDGE, "streams", "warehouse")
PROJECT_DIRS = ("core", "edge", "ingest", "streams", "warehouse")
LATENCY_SQL = """
SELECT count() AS calls, quantileExact(0.5)(ms) AS p50, quantileExact(0.99)(ms) AS p99,
       max(ms) AS max
FROM (SELECT call_id, dateDiff('millisecond', anyIf(ended_at, closed),
                               minIf(loaded_at, closed)) AS ms
      FROM tawag.cdrs WHERE startsWith(call_id, {prefix:String})
      GROUP BY call_id HAVING countIf(closed) > 0)
"""
LATENCY_BY_MINUTE_SQL = """
SELECT formatDateTime(toStartOfMinute(ended), '%H:%i') AS minute, count() AS calls,
       quantileExact(0.5)(ms) AS p50, quantileExact(0.99)(ms) AS p99, max(ms) AS max
FROM (SELECT call_id, anyIf(ended_at, closed) AS ended,
             dateDiff('millisecond', ended, minIf(loaded_at, closed)) AS ms
      FROM tawag.cdrs WHERE startsWith(call_id, {prefix:String})
      GROUP BY call_id HAVING countIf(closed) > 0)
GROUP BY minute ORDER BY minute
"""
RULES_ZONE = "Europe/Moscow"
CALLER = "101"
FIRST_AGENT = 200
UAC_PORT, UAS_PORT = 28580, 28581
DRAIN_TIMEOUT_S = 60.0
CALL_EVENTS = ("call.start", "route.decided", "call.ringing", "call.answered", "call.end",
               "call.failed")


def password(user: str) -> str:
    return f"bench-pw-{user}"


def agents(n: int) -> list[str]:
    return [str(FIRST_AGENT + i) for i in range(n)]


def did(agent: str) -> str:
    return f"7495123{int(agent):04d}"


def provisioning(n_agents: int, rules: bool = False) -> str:
    """The caller, ``n_agents`` extensions with their passwords and, for the inbound
    form, a DID per extension and the trunk source the carrier's calls come from. With
    ``rules`` every DID has a schedule that is closed today and tomorrow (holidays) and
    open 09-18 on weekdays otherwise: the edge scans all its windows for every call and
    sends it to the schedule's closed target, the same agent (a route.decided each)."""
    today = datetime.now(ZoneInfo(RULES_ZONE)).date()
    out = ['[tenant.bench]\ndomain = "pbx.test"\n'
           f'trunk_sources = ["127.0.0.1:{UAC_PORT}"]\n'
           + (f'time_zone = "{RULES_ZONE}"\n' if rules else "")]
    for user in [CALLER, *agents(n_agents)]:
        out.append(f'[tenant.bench.extension.{user}]\npassword = "{password(user)}"\n'
                   + ("no_answer_timeout = 30\n" if user != CALLER else ""))
    for a in agents(n_agents):
        out.append(f'[tenant.bench.did."{did(a)}"]\nto = "ext:{a}"\n'
                   + (f'schedule = "s{a}"\n' if rules else ""))
        if rules:
            out.append(f'[tenant.bench.schedule.s{a}]\n'
                       'hours = { mon = "09:00-18:00", tue = "09:00-18:00", '
                       'wed = "09:00-18:00", thu = "09:00-18:00", fri = "09:00-18:00" }\n'
                       f'holidays = ["{today}", "{today + timedelta(days=1)}"]\n'
                       f'closed = "ext:{a}"\n')
    return "\n".join(out)


def client(n: int) -> str:
    """The n-th call's client number (a thousand different clients, Moscow mobiles)."""
    return f"+7916{1000000 + n % 1000:07d}"


class EvapiCounter:
    """A second evapi client: what Kamailio sent, per event name, for the bench's calls."""

    def __init__(self, host: str, port: int, prefix: str) -> None:
        self.sock = socket.create_connection((host, port), timeout=5)
        self.sock.settimeout(0.5)
        self.prefix = prefix
        self.counts: Counter[str] = Counter()
        self.decision_us: list[int] = []
        self.greeted = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        buffer = b""
        while not self.stop.is_set():
            try:
                chunk = self.sock.recv(1 << 16)
            except TimeoutError:
                continue
            if not chunk:
                return
            buffer += chunk
            while b":" in buffer:
                size, _, rest = buffer.partition(b":")
                if len(rest) < int(size) + 1:
                    break
                event = json.loads(rest[: int(size)])
                buffer = rest[int(size) + 1:]
                if event["event"] == "evapi.connected":
                    self.greeted.set()
                elif str(event.get("call_id", "")).startswith(self.prefix):
                    self.counts[event["event"]] += 1
                    if event["event"] == "route.decided":
                        self.decision_us.append(int(event["decision_us"]))

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close()


def kafka_counts(bootstrap: str, topic: str, prefix: str) -> Counter[str]:
    """Event types on the topic for the bench's calls, read until idle for 5 s (all of
    them: the topic may hold more than the bench's evapi client counted)."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             consumer_timeout_ms=5000)
    counts: Counter[str] = Counter()
    try:
        for message in consumer:
            if message.key and message.key.decode().startswith(prefix):
                counts[json.loads(message.value)["type"]] += 1
    finally:
        consumer.close()
    return counts


def cpu_seconds(pid: int) -> float:
    """User+system CPU of a process and its reaped children (kamailio's workers)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(f) for f in fields[11:15])
    total = ticks
    for child in Path("/proc").glob("[0-9]*"):
        try:
            stat = (child / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(stat[1]) == pid:
            total += sum(int(f) for f in stat[11:13])
    return total / os.sysconf("SC_CLK_TCK")


def sipp_stats(stat_file: Path) -> dict[str, str]:
    rows = list(csv.reader(stat_file.read_text().splitlines(), delimiter=";"))
    return dict(zip(rows[0], rows[-1], strict=False))


def start_profiles(sup: Supervisor, work: Path, args: argparse.Namespace
                   ) -> dict[str, tuple[subprocess.Popen[bytes], Path]]:
    """py-spy on the Python parts for the run's expected length plus the drain."""
    seconds = int(args.calls / args.rate) + 20
    out: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
    for running in sup.running:
        if running.name in ("ingest", "streams", "warehouse"):
            path = work / f"profile-{running.name}.txt"
            spy = Path(sys.executable).with_name("py-spy")
            proc = subprocess.Popen([str(spy), "record", "-p", str(running.pid), "-d",
                                     str(seconds), "-r", "50", "-f", "raw", "-o", str(path),
                                     "--nonblocking"], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            out[running.name] = (proc, path)
    return out


def print_profile(name: str, path: Path, top: int = 15) -> None:
    """Where one process's time went, from py-spy's raw stacks: the project's functions
    by inclusive share, then every function by self share (the leaf of a sample)."""
    inclusive: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines() if path.exists() else []:
        stack, _, count = line.rpartition(" ")
        frames = [f.rsplit(":", 1)[0] + ")" for f in stack.split(";") if " (" in f]
        if not frames:
            continue
        total += int(count)
        leaf[frames[-1]] += int(count)
        for frame in set(frames):
            if frame.split(" (")[1].split("/")[0] in PROJECT_DIRS:
                inclusive[frame] += int(count)
    print(f"\nprofile of {name}: {total} busy samples (50/s); the project's functions by "
          f"share (inclusive)")
    for frame, n in inclusive.most_common(top):
        print(f"  {100 * n / max(total, 1):5.1f}%  {frame}")
    print("  ... and by self time (any code):")
    for frame, n in leaf.most_common(top // 2):
        print(f"  {100 * n / max(total, 1):5.1f}%  {frame}")


def print_latency(settings, calls: int, wait_s: float) -> None:
    """Call end at the edge -> closed CDR readable, once every call's CDR is closed (or
    after ``wait_s``: the figures are then over the calls closed so far)."""
    from warehouse.client import service_client

    client = service_client(settings)
    t0 = time.monotonic()
    deadline = t0 + wait_s
    try:
        while True:
            (row,) = client.query(LATENCY_SQL, {"prefix": "bench-"})
            if row["calls"] >= calls or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        minutes = client.query(LATENCY_BY_MINUTE_SQL, {"prefix": "bench-"})
    finally:
        client.close()
    print(f"\ncall end -> closed CDR readable ({row['calls']} of {calls} calls closed, "
          f"{time.monotonic() - t0:.0f} s after the run): p50 {row['p50']} ms, "
          f"p99 {row['p99']} ms, max {row['max']} ms")
    if len(minutes) > 1:  # a long run: does the pipeline keep up, or does a backlog grow?
        print(f"{'minute of the call end (UTC)':<30}{'calls':>7}{'p50 ms':>9}{'p99 ms':>9}"
              f"{'max ms':>9}")
        for m in minutes:
            print(f"{m['minute']:<30}{m['calls']:>7}{m['p50']:>9}{m['p99']:>9}"
                  f"{m['max']:>9}")


def steering_receiver(settings: Settings) -> None:
    """A Zadarma receiver on 28599 that lets every call through (``{}``), subscribed for
    the bench tenant through the running API."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "api"))
    from api_helpers import Receiver

    from api.keys import add_key, keys_file

    receiver = Receiver(28599)
    receiver.answer = b"{}"
    receiver.up()
    key = add_key(keys_file(settings), "bench", ("webhooks:write",))
    resp = httpx.post(f"http://127.0.0.1:{settings.api_port}/api/v1/webhooks", timeout=10,
                      headers={"Authorization": f"Bearer {key}"},
                      json={"url": receiver.url, "format": "zadarma",
                            "secret": "bench-steering-secret"})
    assert resp.status_code == 201, resp.text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=int, default=100, help="calls per second")
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--talk-ms", type=int, default=500)
    parser.add_argument("--inbound", action="store_true",
                        help="the carrier's calls from a trunk source to a DID per agent "
                             "(clients' numbers, no digest auth) instead of extension 101's")
    parser.add_argument("--agents", type=int, default=50,
                        help="extensions the calls are spread over, in turn")
    parser.add_argument("--drain-s", type=float, default=300.0,
                        help="--pipeline: how long to wait for the last CDRs after the run")
    parser.add_argument("--profile", action="store_true",
                        help="sample the ingest, Faust and warehouse processes with py-spy "
                             "while the calls run, and print where their time went")
    parser.add_argument("--rules", action="store_true",
                        help="with --inbound: every DID scheduled and closed (holidays), so "
                             "each call is a routing decision; reports decision_us p50/p99")
    parser.add_argument("--steer", action="store_true",
                        help="with --inbound --rules: the API runs too and the tenant has a "
                             "Zadarma steering receiver (answering {}), so each decision "
                             "includes the edge's request to the API (api.steering)")
    parser.add_argument("--pipeline", action="store_true",
                        help="production configuration: the whole pipeline, pike on; "
                             "also report call end -> closed CDR readable")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="tawag-edge-load-"))
    prov = work / "bench.toml"
    prov.write_text(provisioning(args.agents, rules=args.rules))
    flood = {} if args.pipeline else {"pike_density": 0}
    settings = load(environ={}, data_dir=work / "data", provisioning_file=prov, **flood,
                    sip_port=28560, kamailio_http_port=28571, evapi_port=28548,
                    rtpengine_ng_port=28523, rtpengine_cli_port=28524,
                    rtp_port_min=35000, rtp_port_max=35999,
                    kafka_bootstrap="127.0.0.1:28592", kafka_controller_port=28593,
                    warehouse_http_port=28583, supervisor_metrics_port=28594,
                    ingest_metrics_port=28595, streams_metrics_port=28596,
                    warehouse_metrics_port=28597, rtpengine_http_port=28525,
                    api_port=28598, steering=args.steer)
    wanted = (*(PIPELINE if args.pipeline else EDGE), *(("api",) if args.steer else ()))
    stack = [c for c in components(settings) if c.name in wanted]
    sup = Supervisor(settings, stack=stack, out=io.StringIO())
    print(f"starting {', '.join(wanted)} in {work} ...", flush=True)
    sup.start(demo=False)
    uas = None
    counter = None
    keep = True
    try:
        if args.steer:
            steering_receiver(settings)
        edge = sipp.Edge.from_settings(settings, work / "sipp")
        # registered for the whole run: a binding that expires mid-run turns every later
        # call to that agent into a 480 (a 10-minute run outlived the default 300 s)
        run_s = args.calls // args.rate
        expires = run_s + int(args.drain_s) + 600
        for agent in agents(args.agents):
            assert sipp.register(edge, agent, port=UAS_PORT, password=password(agent),
                                 expires=expires).ok
        plan = work / "callees.csv"
        callees = agents(args.agents)
        plan.write_text("SEQUENTIAL\n" + "".join(
            f"{did(callees[n % args.agents])};{client(n)};\n" if args.inbound
            else f"{callees[n % args.agents]};\n" for n in range(args.calls)))
        who = (["-sf", str(sipp.SCENARIO_DIR / "uac_carrier_signalling.xml")] if args.inbound
               else ["-sf", str(sipp.SCENARIO_DIR / "uac_call_auth_signalling.xml"),
                     "-key", "caller", CALLER, "-au", CALLER, "-ap", password(CALLER)])
        counter = EvapiCounter(settings.sip_host, settings.evapi_port, "bench-")
        assert counter.greeted.wait(5), "no evapi greeting"
        uas = subprocess.Popen(
            ["sipp", "-sf", str(sipp.SCENARIO_DIR / "uas_answer.xml"), "-i", "127.0.0.1",
             "-p", str(UAS_PORT), "-nostdin", "-trace_err",
             "-error_file", str(work / "uas-errors.log")],
            cwd=work, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT)
        assert sipp._wait_udp_bound("127.0.0.1", UAS_PORT, uas), "the sipp UAS did not start"
        kam = next(r for r in sup.running if r.name == "kamailio").pid
        rtp = next(r for r in sup.running if r.name == "rtpengine").pid
        cpu0 = cpu_seconds(kam), cpu_seconds(rtp)
        every0 = {r.name: cpu_seconds(r.pid) for r in sup.running}
        stat_file = work / "uac-stats.csv"
        print(f"sipp: {args.calls} calls at {args.rate} cps to {args.agents} agents, "
              f"{args.talk_ms} ms each ...",
              flush=True)
        profilers = start_profiles(sup, work, args) if args.profile else {}
        t0 = time.monotonic()
        uac = subprocess.run(
            ["sipp", f"127.0.0.1:{settings.sip_port}", *who,
             "-i", "127.0.0.1", "-p", str(UAC_PORT), "-inf", str(plan),
             "-key", "domain", settings.sip_domain,
             "-d", str(args.talk_ms), "-r", str(args.rate), "-m", str(args.calls),
             # Kamailio's UDP workers can pass a 180 on after the 200 under load: a late
             # provisional reply must not abort a call (a phone ignores it, RFC 6026)
             "-default_behaviors", "all,-abortunexp",
             # a call that hears nothing for 20 s fails, so an overloaded edge ends the run
             "-recv_timeout", "20000",
             "-l", str(args.rate * 5), "-cid_str", "bench-%u-%p@%s", "-nostdin",
             # the whole run and 5 minutes more (a 10-minute run must not be cut at 300 s)
             "-timeout", f"{run_s + 300}s",
             "-trace_stat", "-stf", str(stat_file), "-fd", "1",
             "-trace_err", "-error_file", str(work / "uac-errors.log")],
            cwd=work, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT, check=False)
        elapsed = time.monotonic() - t0
        cpu1 = cpu_seconds(kam), cpu_seconds(rtp)
        stats = sipp_stats(stat_file)
        ok, failed = int(stats["SuccessfulCall(C)"]), int(stats["FailedCall(C)"])
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while time.monotonic() < deadline:  # Kamailio's last call.end events
            before = sum(counter.counts.values())
            time.sleep(3.0)
            if sum(counter.counts.values()) == before:
                break
        sent = Counter(counter.counts)
        received = kafka_counts(settings.kafka_bootstrap, settings.topic_call_events, "bench-")
        print(f"\nsipp exit {uac.returncode}: {ok} successful, {failed} failed calls in "
              f"{elapsed:.1f} s ({(ok + failed) / elapsed:.1f} cps measured, asked "
              f"{args.rate})")
        print(f"CPU during the run: kamailio {cpu1[0] - cpu0[0]:.2f} s, "
              f"rtpengine {cpu1[1] - cpu0[1]:.2f} s")
        print(f"\n{'event':<16}{'sent by Kamailio':>18}{'in Kafka':>10}")
        kafka_name = {"call.start": "call.offered", "call.end": "call.ended"}
        received["call.failed"] += received.pop("call.cancelled", 0)
        for name in CALL_EVENTS:
            print(f"{name:<16}{sent[name]:>18}{received[kafka_name.get(name, name)]:>10}")
        total_sent, total_received = sum(sent.values()), sum(received.values())
        print(f"{'total':<16}{total_sent:>18}{total_received:>10}")
        lost = total_sent - total_received
        print(f"\nevents sent {total_sent}, received {total_received}, lost {lost}")
        if counter.decision_us:
            us = sorted(counter.decision_us)
            print(f"routing decisions: {len(us)}, edge decision time p50 "
                  f"{us[len(us) // 2]} us, p99 {us[min(len(us) - 1, len(us) * 99 // 100)]} "
                  f"us, max {us[-1]} us")
        for name, (proc, out) in profilers.items():
            proc.wait()
            print_profile(name, out)
        if args.pipeline:
            print_latency(settings, ok + failed, args.drain_s)
            spent = {r.name: cpu_seconds(r.pid) - every0[r.name] for r in sup.running
                     if r.name in every0}
            print(f"CPU from the first call until the CDRs were readable ("
                  f"{time.monotonic() - t0:.0f} s): " + ", ".join(
                      f"{name} {s:.1f} s" for name, s in sorted(spent.items())))
        # a call without one of its events from Kamailio (seen: 2,399 call.start for 2,400
        # calls, and 2,999 call.ringing for 3,000 answered calls) or an event lost on the
        # way: keep the logs to find out why
        short = {name: ok + failed - sent[name] for name in ("call.start", "call.end")}
        if not failed:
            short |= {name: ok - sent[name] for name in ("call.ringing", "call.answered")}
        short = {name: n for name, n in short.items() if n}
        keep = failed > 0 or args.profile or lost != 0 or bool(short)
        for name, n in short.items():
            print(f"{n} calls without {name} from Kamailio: see its log in {work}")
        if failed:
            print(f"sipp's reasons for the failed calls: {work / 'uac-errors.log'}")
        if keep:
            print(f"kept {work} (logs, sipp files, profiles)")
        return 0
    finally:
        if counter is not None:
            counter.close()
        if uas is not None:
            uas.terminate()
            uas.wait(5)
        sup.stop()
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
