"""Demo traffic: a few extensions register and real sipp calls keep flowing through the edge.

It is driven by the provisioning file the stack applied (``settings.provisioning_file``,
``sip-edge/provisioning.example.toml`` by default): the extensions register and call with
their passwords (digest auth), and calls from outside come from the tenant's trunk
sources to the extensions' direct-dial numbers (DIDs), as a carrier would send them.

The mix is what a small sales office sees: most calls answered with varied talk times,
some busy, some nobody answers (the edge gives up after ``no_answer_timeout``), some
callers hang up while it rings, the odd wrong number; a share comes from outside
(national numbers, normalised to E.164 by ingest). Two callers work at once, so the
dashboard shows calls in progress as well as finished ones.

A share of the carrier's calls dial the support line, a DID whose group has a waiting
queue (``queue = {...}`` in the provisioning file). Its desk phones (:data:`DESK_PHONES`:
the group's member and the queue's overflow extension in the example file) answer every
call they get after ``edge.sipp.DESK_RING_MS`` of ringing. Support calls often come in
pairs (a burst: a second caller dials the line a moment after the first, from another
trunk source): while the desk takes the first, the second waits in the queue. It is
offered the desk when that call ends, overflows to the duty manager after
``max_wait_s``, or - an impatient caller - hangs up while waiting. So the Routing
page's waiting queue has every outcome to show.
"""

from __future__ import annotations

import logging
import random
import shutil
import signal
import tempfile
import threading
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from core.settings import Settings
from edge import sipp

__all__ = ["DemoCall", "DemoTenant", "plan_call", "plan_support_call", "run", "AGENTS",
           "DESK_PHONES", "QUEUE", "QUEUE_OUTCOMES"]

log = logging.getLogger("tawag.demo")

AGENTS = ("101", "102", "103", "104")
DESK_PHONES = ("106", "107")
"""The support queue's member and its overflow extension (example provisioning): the demo
keeps each answering, call after call, whoever the edge sends."""
QUEUE = "queue"
"""The callee of a planned call to the support line (the tenant's queue DID)."""
OUTSIDE_CALLERS = ("84951234567", "89161112233", "+74997654321", "88123334455")
UNKNOWN_EXTENSION = "199"
UNKNOWN_DID = "74950000199"
"""A number of the company's range that is not provisioned: the carrier gets 404."""
RE_REGISTER_S = 240
"""Registrations ask for 300 s; renew well before they lapse."""
DESK_SIPP_TIMEOUT_S = RE_REGISTER_S + 60
"""A desk phone's sipp waits idle until its registration is due (then it is restarted);
a call it took just before lasts well under the extra minute."""
WORKERS = 2
ANSWER_RING_MS = (1_000, 12_000)
"""How long an answered demo call rings: a real wait for ASA and the service level, below
the example provisioning's 15 s no-answer timeout so the answer always wins."""

QUEUE_PATIENCE_MS = (1_000, sipp.DESK_RING_MS)
"""How long an impatient support caller waits: less than a desk phone rings before it
answers (``edge.sipp.DESK_RING_MS``), so that caller always hangs up unanswered."""
IMPATIENT_SHARE = 0.3
"""The share of a burst's second callers who hang up while waiting."""
BURST_GAP_S = 1.0
"""How long after a burst's first support caller the second dials: the desk is ringing
or talking by then, so the second waits."""
SECOND_MEDIA_OFFSET = 4
"""A burst's second caller's media port, after the worker's own (sipp takes mp..mp+3)."""
QUEUE_TALK_MS = (2_000, 10_000)
"""A desk call's talk: long enough that the next support caller often waits, short
enough that a wait (``max_wait_s`` 10 s), a ring and the talk end within sipp's own
30 s timeout (``edge.sipp.SIPP_TIMEOUT_S``)."""

# (outcome, weight): the share of each kind of call in the demo. "queued": a carrier call
# to the support line that stays until answered (by the desk, at once or from the queue,
# or by the overflow); "queue_burst": such a call and, BURST_GAP_S later, a second one
# (its ``second``: "queued" too, or "queue_hangup", hanging up within QUEUE_PATIENCE_MS).
MIX = (("answered", 40), ("busy", 9), ("no_answer", 6), ("cancelled", 13), ("not_found", 5),
       ("queued", 12), ("queue_burst", 15))
QUEUE_OUTCOMES = ("queued", "queue_burst")


@dataclass(frozen=True)
class DemoCall:
    outcome: str
    caller: str
    callee: str
    talk_ms: int = 0
    ring_ms: int = 0
    second: DemoCall | None = None
    """A burst's second support caller, dialling BURST_GAP_S after this one."""


@dataclass(frozen=True)
class DemoTenant:
    """What the demo needs from the provisioning file: passwords, DIDs, trunk sources."""

    passwords: dict[str, str] = field(default_factory=dict)
    direct_dids: dict[str, str] = field(default_factory=dict)
    """extension -> a DID that rings only it."""
    trunk_ports: tuple[int, ...] = ()
    """Loopback ports the tenant accepts DID calls from (one per demo worker)."""
    queue_did: str | None = None
    """A DID routed to a group with a waiting queue (the support line), if any."""

    @property
    def has_queue(self) -> bool:
        """Whether carrier calls can reach a queue: a queue DID and a trunk to call from."""
        return bool(self.queue_did and self.trunk_ports)

    def trunk_port(self, worker: int, *, second: bool = False) -> int | None:
        """The trunk source a worker's carrier call comes from; ``second``: the one of a
        burst's second caller, None without a port of its own (fewer than two per worker)."""
        if not self.trunk_ports or (second and len(self.trunk_ports) < 2 * WORKERS):
            return None
        return self.trunk_ports[(worker + (WORKERS if second else 0)) % len(self.trunk_ports)]

    @classmethod
    def from_file(cls, path: Path, domain: str) -> DemoTenant:
        """The tenant of ``domain`` in a provisioning file (empty when there is none)."""
        try:
            doc = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError):
            return cls()
        for spec in (doc.get("tenant") or {}).values():
            if spec.get("domain") != domain:
                continue
            passwords = {u: e["password"] for u, e in (spec.get("extension") or {}).items()}
            dids = {d["to"].partition(":")[2]: number
                    for number, d in (spec.get("did") or {}).items()
                    if str(d.get("to", "")).startswith("ext:")}
            ports = tuple(int(src.rsplit(":", 1)[1]) for src in spec.get("trunk_sources", [])
                          if src.startswith("127.0.0.1:"))
            return cls(passwords, dids, ports, _queue_did(spec))
        return cls()


def _queue_did(spec: dict) -> str | None:
    """The first DID of a tenant's spec whose target is a group with a ``queue``."""
    queued = {f"group:{name}" for name, g in (spec.get("group") or {}).items()
              if isinstance(g, dict) and g.get("queue")}
    return next((number for number, d in (spec.get("did") or {}).items()
                 if d.get("to") in queued), None)


def plan_call(rng: random.Random, free_agents: list[str], *, queue: bool = True) -> DemoCall:
    """Pick the next call of the mix; the callee is one of the agents not on a call, or
    the support line (:data:`QUEUE`, from outside). ``queue`` False (no queue DID
    provisioned): the mix without the support line's calls."""
    mix = [m for m in MIX if queue or m[0] not in QUEUE_OUTCOMES]
    outcome = rng.choices([m[0] for m in mix], weights=[m[1] for m in mix])[0]
    if outcome in QUEUE_OUTCOMES:
        return plan_support_call(rng, burst=outcome == "queue_burst")
    callee = rng.choice(free_agents)
    inside = [a for a in AGENTS if a != callee]
    caller = rng.choice(OUTSIDE_CALLERS) if rng.random() < 0.5 else rng.choice(inside)
    if outcome == "not_found":
        return DemoCall(outcome, caller, UNKNOWN_EXTENSION)
    if outcome == "answered":
        return DemoCall(outcome, caller, callee, talk_ms=rng.randrange(2_000, 20_000, 250),
                        ring_ms=rng.randrange(*ANSWER_RING_MS, 250))
    if outcome == "cancelled":
        return DemoCall(outcome, caller, callee, ring_ms=rng.randrange(1_000, 6_000, 250))
    return DemoCall(outcome, caller, callee)


def plan_support_call(rng: random.Random, *, burst: bool) -> DemoCall:
    """A carrier call to the support line that stays until answered; with ``burst`` a
    second caller follows (patient, or hanging up within QUEUE_PATIENCE_MS)."""
    first = DemoCall("queued", rng.choice(OUTSIDE_CALLERS), QUEUE,
                     talk_ms=rng.randrange(*QUEUE_TALK_MS, 250))
    if not burst:
        return first
    caller = rng.choice([c for c in OUTSIDE_CALLERS if c != first.caller])
    second = DemoCall("queue_hangup", caller, QUEUE,
                      ring_ms=rng.randrange(*QUEUE_PATIENCE_MS, 250)) \
        if rng.random() < IMPATIENT_SHARE else \
        DemoCall("queued", caller, QUEUE, talk_ms=rng.randrange(*QUEUE_TALK_MS, 250))
    return replace(first, outcome="queue_burst", second=second)


@dataclass(frozen=True)
class Ports:
    """Local ports of the demo's sipp processes, kept clear of the edge's own."""

    agent_sip: dict[str, int]
    agent_media: dict[str, int]
    caller_sip: tuple[int, ...]
    caller_media: tuple[int, ...]

    @classmethod
    def for_settings(cls, settings: Settings) -> Ports:
        base = settings.sip_port + 20
        phones = (*AGENTS, *DESK_PHONES)
        return cls(
            agent_sip={a: base + i for i, a in enumerate(phones)},
            agent_media={a: 16000 + 10 * i for i, a in enumerate(phones)},
            caller_sip=tuple(base + 10 + w for w in range(WORKERS)),
            caller_media=tuple(16100 + 10 * w for w in range(WORKERS)),
        )


def place(edge: sipp.Edge, call: DemoCall, ports: Ports, worker: int,
          tenant: DemoTenant | None = None) -> sipp.SippResult:
    """Run one planned call with the callee side it needs; what the caller's sipp saw.

    An extension calls with its password; an outside caller comes from the worker's trunk
    source port and dials the callee's DID (without either, it calls as before).
    """
    tenant = tenant or DemoTenant()
    sip_port, media = ports.caller_sip[worker], ports.caller_media[worker]
    if call.callee == QUEUE:
        return _call_queue(edge, call, tenant, worker, media)
    callee, password = call.callee, tenant.passwords.get(call.caller)
    if call.caller not in AGENTS and tenant.trunk_ports:
        sip_port = tenant.trunk_ports[worker % len(tenant.trunk_ports)]
        callee = tenant.direct_dids.get(call.callee, UNKNOWN_DID)
    if call.outcome == "not_found":
        return sipp.call_expect_failure(edge, call.caller, callee, 404, port=sip_port,
                                        media_port=media, password=password)
    agent_port = ports.agent_sip[call.callee]
    if call.outcome == "answered":
        uas = sipp.start_uas_answer(edge, port=agent_port, ring_ms=call.ring_ms or None,
                                    media_port=ports.agent_media[call.callee])
        result = sipp.call(edge, call.caller, callee, port=sip_port, media_port=media,
                           talk_ms=call.talk_ms, password=password)
    elif call.outcome == "busy":
        uas = sipp.start_uas_busy(edge, port=agent_port)
        result = sipp.call_expect_failure(edge, call.caller, callee, 486, port=sip_port,
                                          media_port=media, password=password)
    elif call.outcome == "cancelled":
        uas = sipp.start_uas_ring(edge, port=agent_port)
        result = sipp.call_and_cancel(edge, call.caller, callee, ring_ms=call.ring_ms,
                                      port=sip_port, media_port=media, password=password)
    else:
        uas = sipp.start_uas_ring(edge, port=agent_port)
        result = sipp.call_expect_failure(edge, call.caller, callee, 408, port=sip_port,
                                          media_port=media, password=password)
    uas.stop()
    return result


def _call_queue(edge: sipp.Edge, call: DemoCall, tenant: DemoTenant, worker: int,
                media: int) -> sipp.SippResult:
    """A carrier call to the support line (and a burst's second one, BURST_GAP_S later,
    when the tenant has a trunk source for it); the desk phones (:meth:`Demo.desk`)
    answer. The first caller's result; the second's is logged."""
    if not tenant.has_queue:
        raise ValueError("no queue DID or trunk source provisioned for the support line")
    port, second_port = tenant.trunk_port(worker), tenant.trunk_port(worker, second=True)
    if call.second is None or second_port is None:
        return _support_call(edge, call, tenant.queue_did, port, media)
    with ThreadPoolExecutor(max_workers=1) as pool:
        first = pool.submit(_support_call, edge, call, tenant.queue_did, port, media)
        time.sleep(BURST_GAP_S)
        second = _support_call(edge, call.second, tenant.queue_did, second_port,
                               media + SECOND_MEDIA_OFFSET)
        log.info("%s -> queue (burst's second): %s, final %s, %s", call.second.caller,
                 call.second.outcome, second.final_code, "ok" if second.ok else "NOT OK")
        return first.result()


def _support_call(edge: sipp.Edge, call: DemoCall, did: str, port: int,
                  media: int) -> sipp.SippResult:
    if call.outcome == "queue_hangup":
        return sipp.call_and_cancel(edge, call.caller, did, ring_ms=call.ring_ms, port=port,
                                    media_port=media)
    return sipp.call(edge, call.caller, did, port=port, media_port=media, talk_ms=call.talk_ms)


class Demo:
    def __init__(self, settings: Settings, seed: int | None = None) -> None:
        self.edge_dir = Path(tempfile.mkdtemp(prefix="tawag-demo-"))
        self.edge = sipp.Edge.from_settings(settings, self.edge_dir)
        # one trace folder per worker: a worker clears its own traces after each call
        self.worker_edges = [sipp.Edge.from_settings(settings, self.edge_dir / f"w{i}")
                             for i in range(WORKERS)]
        self.ports = Ports.for_settings(settings)
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.busy: set[str] = set()
        self.placed = 0
        self.registered_at: dict[str, float] = {}
        self.tenant = DemoTenant.from_file(settings.provisioning_file, settings.sip_domain)
        self.settings = settings

    def ensure_registered(self, agent: str, edge: sipp.Edge | None = None) -> None:
        """(Re-)register before the binding lapses; the agent's port is free right now."""
        if self._registration_due(agent):
            sipp.register(edge or self.edge, agent, port=self.ports.agent_sip[agent],
                          password=self.tenant.passwords.get(agent))
            self.registered_at[agent] = time.monotonic()

    def _claim(self) -> DemoCall:
        with self.lock:
            free = [a for a in AGENTS if a not in self.busy]
            planned = plan_call(self.rng, free, queue=self.tenant.has_queue)
            if planned.callee in AGENTS:
                self.busy.add(planned.callee)
            self.placed += 1
            return planned

    def worker(self, index: int, stop: threading.Event, limit: int) -> None:
        while not stop.is_set() and (not limit or self.placed < limit):
            planned = self._claim()
            try:
                if planned.callee in AGENTS:
                    self.ensure_registered(planned.callee, self.worker_edges[index])
                result = place(self.worker_edges[index], planned, self.ports, index,
                               self.tenant)
                log.info("%s -> %s: %s, final %s, %s", planned.caller, planned.callee,
                         planned.outcome, result.final_code, "ok" if result.ok else "NOT OK")
            except Exception:  # a failed sipp run must not end the demo
                log.exception("demo call %s failed", planned)
            finally:
                with self.lock:
                    self.busy.discard(planned.callee)
            for trace in self.worker_edges[index].work_dir.glob("*"):
                trace.unlink(missing_ok=True)
            stop.wait(self.rng.uniform(0.5, 3.0))

    def desk(self, phone: str, stop: threading.Event) -> None:
        """Keep a desk phone answering one call after another until ``stop``; it
        re-registers between calls, or while idle when the binding is due (an idle
        sipp ends at its timeout, DESK_SIPP_TIMEOUT_S, and is started again)."""
        edge = sipp.Edge.from_settings(self.settings, self.edge_dir / f"desk-{phone}")
        while not stop.is_set():
            try:
                self.ensure_registered(phone, edge)
                uas = sipp.start_uas_desk(edge, port=self.ports.agent_sip[phone],
                                          media_port=self.ports.agent_media[phone],
                                          timeout_s=DESK_SIPP_TIMEOUT_S)
                while uas.running and not stop.is_set() and not (
                        _idle(uas) and self._registration_due(phone)):
                    stop.wait(0.5)
                result = uas.stop()
                if result.received():
                    log.info("desk %s: %s", phone, "ok" if result.ok else "NOT OK")
            except Exception:  # a failed sipp run must not end the demo
                log.exception("desk %s failed", phone)
                stop.wait(5.0)
            for trace in edge.work_dir.glob("*"):
                trace.unlink(missing_ok=True)

    def _registration_due(self, agent: str) -> bool:
        return time.monotonic() - self.registered_at.get(agent, -RE_REGISTER_S) >= RE_REGISTER_S


def _idle(uas: sipp.Uas) -> bool:
    """No call has reached this desk UAS yet (sipp traces each message as it goes)."""
    return not uas.trace.exists() or uas.trace.stat().st_size == 0


def run(settings: Settings, calls: int = 0, seed: int | None = None) -> None:
    """Register the agents and place calls until SIGTERM (or ``calls`` calls)."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    demo = Demo(settings, seed)
    try:
        for agent in AGENTS:
            demo.ensure_registered(agent)
        threads = [threading.Thread(target=demo.worker, args=(i, stop, calls), daemon=True)
                   for i in range(WORKERS)]
        desks = [threading.Thread(target=demo.desk, args=(p, stop), daemon=True)
                 for p in DESK_PHONES if demo.tenant.has_queue and p in demo.tenant.passwords]
        for t in (*threads, *desks):
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(0.5)
        stop.set()  # the callers are done (``calls`` placed): the desks too
        for t in desks:
            t.join()
    finally:
        shutil.rmtree(demo.edge_dir, ignore_errors=True)
