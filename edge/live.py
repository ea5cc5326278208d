"""The edge's live routing table: ``tawag.routing`` facts -> Kamailio htable "live".

The stream processors derive the facts (:mod:`streams.agents.routing`); this applier only
writes them where Kamailio decides at call time, over JSON-RPC, without waiting on anyone::

    avail:<d>:<ext>   <epoch s>   the agent is available from then on (idle since);
                                  absent: offline, ringing, on a call or in wrap-up
    mgr:<d>:<digits>  <ext>       the client's responsible manager (caller as the white
                                  and black lists hold it: E.164 digits, no "+")
    calls:<d>:<ext>   <count>     calls the agent answered today (tenant's zone) ...
    callsto:<d>:<ext> <epoch s>   ... until then (the day's end; later: 0 calls)
    beat              <epoch s>   the stream worker's last heartbeat

Kamailio uses ``avail``/``mgr``/``calls`` only while ``beat`` is at most ``ROUTING_STALE_S``
(``settings.routing_stale_s``) old: when the worker or this applier stops, the edge
routes on provisioning alone (static group order, the DID's own target). A Kamailio that
lost the table (restarted) is noticed on the next heartbeat (no ``beat``) and refilled from
the facts held here, which were read from the compacted topic's start.

    run(settings, stop=threading.Event())     # `tawag live`, a component of `tawag up`
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from core.agent_records import AgentStatus
from core.routing import FactKind, RoutingFact, fact_from_json, fact_key
from core.settings import Settings
from core.tenant_crm import tenant_domains
from edge.control import EdgeError, KamailioRpcError, kamailio_rpc
from edge.provision import RpcCall, caller_key

__all__ = ["LIVE_TABLE", "BEAT_KEY", "entry", "entries", "htable_calls", "idle_since_s",
           "Applier", "run"]

LIVE_TABLE = "live"
BEAT_KEY = "beat"

log = logging.getLogger(__name__)

Rpc = Callable[..., Any]


def idle_since_s(since: datetime) -> int:
    """An availability start in the edge's whole seconds, rounded up: an agent whose
    wrap-up ends at 10.2 s is not offered a call at 10 s."""
    ts = since.timestamp()
    return int(ts) if ts == int(ts) else int(ts) + 1


def entry(fact: RoutingFact, domain: str) -> tuple[str, str | int | None]:
    """The htable key of a fact and its value (None: the key must not exist)."""
    if fact.kind is FactKind.AGENT:
        available = fact.value == AgentStatus.AVAILABLE.value and fact.since is not None
        return (f"avail:{domain}:{fact.subject}",
                idle_since_s(fact.since) if available and fact.since else None)
    if fact.kind is FactKind.MANAGER:
        return f"mgr:{domain}:{caller_key(fact.subject)}", fact.value or None
    if fact.kind is FactKind.CALLS:
        return f"calls:{domain}:{fact.subject}", int(fact.value or 0)
    raise ValueError(f"not an htable fact: {fact.kind}")


def entries(fact: RoutingFact, domain: str) -> list[tuple[str, str | int | None]]:
    """Every htable key of a fact with its value: :func:`entry`, and for a calls fact
    the end of the day its count is for (``callsto``, written after the count)."""
    out = [entry(fact, domain)]
    if fact.kind is FactKind.CALLS:
        until = int(fact.until.timestamp()) if fact.until is not None else None
        out.append((f"callsto:{domain}:{fact.subject}", until))
    return out


def htable_calls(fact: RoutingFact, domain: str) -> list[RpcCall]:
    """The JSON-RPC calls that make htable "live" hold the fact."""
    calls = []
    for key, value in entries(fact, domain):
        if value is None:
            calls.append(RpcCall("htable.delete", (LIVE_TABLE, key)))
        else:
            method = "htable.seti" if isinstance(value, int) else "htable.sets"
            calls.append(RpcCall(method, (LIVE_TABLE, key, value)))
    return calls


class Applier:
    """Facts in, htable writes out; remembers the facts to refill a restarted Kamailio."""

    def __init__(self, rpc: Rpc, domains: Callable[[], dict[str, str]], *,
                 stale_s: float, clock: Callable[[], float] = time.time) -> None:
        self.rpc = rpc
        self.domains = domains
        self.stale_s = stale_s
        self.clock = clock
        self.facts: dict[str, RoutingFact] = {}
        self.applied = 0

    def apply(self, fact: RoutingFact) -> None:
        """Write one fact (a heartbeat refreshes ``beat``, refilling the table if it was
        lost); a tenant without a provisioned domain is kept for later, not written."""
        if fact.kind is FactKind.HEARTBEAT:
            self._beat(fact)
            return
        self.facts[fact_key(fact)] = fact
        domain = self.domains().get(fact.tenant)
        if domain is not None:
            self._send(htable_calls(fact, domain))

    def _beat(self, fact: RoutingFact) -> None:
        if fact.since is None or self.clock() - fact.since.timestamp() > self.stale_s:
            return  # an old heartbeat (read from the topic's start) proves nothing
        if self._get(BEAT_KEY) is None:
            self.refill()
        self._send([RpcCall("htable.seti", (LIVE_TABLE, BEAT_KEY, int(fact.since.timestamp())))])

    def refill(self) -> None:
        """Every known fact again (a new Kamailio knows none)."""
        domains = self.domains()
        calls = [c for f in self.facts.values() if f.tenant in domains
                 for c in htable_calls(f, domains[f.tenant])]
        self._send(calls)
        log.info("live routing: wrote %d facts into a fresh htable", len(calls))

    def _get(self, key: str) -> Any:
        try:
            return self.rpc("htable.get", LIVE_TABLE, key)
        except KamailioRpcError:
            return None  # "key not found"

    def _send(self, calls: Iterable[RpcCall]) -> None:
        for call in calls:
            try:
                self.rpc(call.method, *call.params)
            except KamailioRpcError as exc:
                if call.method != "htable.delete":  # deleting what is not there is fine
                    raise
                log.debug("live routing: %s", exc)
            self.applied += 1


def domains_of(settings: Settings) -> dict[str, str]:
    """Tenant -> SIP domain, as provisioned (the file is re-read when it changes)."""
    out = {tenant: domain for domain, tenant in tenant_domains(settings.provisioning_file).items()}
    return out or {settings.tenant: settings.sip_domain}


def run(settings: Settings, *, stop: threading.Event) -> None:
    """Apply ``tawag.routing`` from its start, then as facts come, until ``stop``."""
    from kafka import KafkaConsumer, TopicPartition

    applier = Applier(lambda method, *params: kamailio_rpc(settings, method, *params),
                      lambda: domains_of(settings), stale_s=settings.routing_stale_s)
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None,
                             enable_auto_commit=False, client_id="tawag-live",
                             fetch_max_wait_ms=50)
    partition = TopicPartition(settings.topic_routing, 0)
    consumer.assign([partition])
    consumer.seek_to_beginning(partition)
    ready_file(settings).parent.mkdir(parents=True, exist_ok=True)
    ready_file(settings).touch()
    try:
        while not stop.is_set():
            for batch in consumer.poll(timeout_ms=200).values():
                for message in batch:
                    _apply_one(applier, message.value)
    finally:
        ready_file(settings).unlink(missing_ok=True)
        consumer.close()


def _apply_one(applier: Applier, raw: bytes | None) -> None:
    """One message; a bad one or an unreachable edge is logged, never fatal (the next
    heartbeat finds the table empty and refills it)."""
    if raw is None:
        return
    try:
        applier.apply(fact_from_json(raw))
    except ValueError as exc:
        log.warning("live routing: skipped a fact it cannot read: %s", exc)
    except EdgeError as exc:
        log.warning("live routing: edge unreachable: %s", exc)


def ready_file(settings: Settings) -> Path:
    """Exists while the applier runs (the supervisor's readiness check)."""
    return settings.run_dir / "live.ready"
