"""Prometheus metrics, the part every process shares: serve a registry, export callbacks.

Each component declares its own counters with ``prometheus_client`` (in its
``<package>/metrics.py``) and calls :func:`serve` once with its port from settings::

    from core.metrics import serve
    server = serve(settings.metrics_host, settings.ingest_metrics_port, "ingest")
    ...
    server.stop()

Values that already live somewhere (a queue's depth, the supervisor's records, the
spool's counters) are not copied into gauges: :class:`CallbackCollector` asks for them
at scrape time, so a scrape always shows the current state.

This module sits on the ground floor (``core/``) next to :mod:`core.settings`: it imports
nothing of the project, so every package may import it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["MetricsServer", "serve", "CallbackCollector", "Sample", "register_callback"]

log = logging.getLogger("core.metrics")

Sample = tuple[Sequence[str], float]
"""Label values (in the order of the family's label names) and the value."""


@dataclass
class MetricsServer:
    """A running ``/metrics`` endpoint (prometheus_client's own WSGI server thread)."""

    host: str
    port: int
    _server: Any
    _thread: threading.Thread

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve(host: str, port: int, component: str,
          registry: CollectorRegistry = REGISTRY) -> MetricsServer | None:
    """Serve ``registry`` on ``host:port`` (0 picks a free port, see ``.port``).

    A port that cannot be bound is logged and the component runs on without metrics:
    losing calls or rows because the metrics port is taken would be the worse failure,
    and the scraper's ``up == 0`` for the target says it. (``tawag up`` checks the
    port before it starts anything.)
    """
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        log.error("%s: cannot serve metrics on %s:%s (%s); running without them",
                  component, host, port, exc)
        return None
    bound = MetricsServer(host, server.server_address[1], server, thread)
    log.info("%s: metrics on %s", component, bound.url)
    return bound


@dataclass(frozen=True)
class _Family:
    name: str
    documentation: str
    kind: str  # "gauge" | "counter"
    labels: tuple[str, ...]


class CallbackCollector(Collector):
    """Families whose samples a function returns at scrape time.

    ``samples()`` returns ``{family name: [(label values, value), ...]}``; families it
    leaves out are exported without samples. A failing callback is logged and its
    families are left empty for that scrape (the endpoint keeps answering).
    """

    def __init__(self, families: Iterable[tuple[str, str, str, Sequence[str]]],
                 samples: Callable[[], Mapping[str, Iterable[Sample]]]) -> None:
        self._families = [_Family(n, d, k, tuple(lb)) for n, d, k, lb in families]
        for fam in self._families:
            if fam.kind not in ("gauge", "counter"):
                raise ValueError(f"{fam.name}: kind must be gauge or counter, not {fam.kind}")
        self._samples = samples

    def describe(self) -> list[Any]:
        return [self._family(f) for f in self._families]

    def collect(self) -> list[Any]:
        try:
            values = self._samples()
        except Exception:
            log.exception("metrics callback failed")
            values = {}
        out = []
        for fam in self._families:
            metric = self._family(fam)
            for labels, value in values.get(fam.name, ()):
                metric.add_metric([str(v) for v in labels], float(value))
            out.append(metric)
        return out

    @staticmethod
    def _family(fam: _Family) -> Any:
        name = fam.name.removesuffix("_total") if fam.kind == "counter" else fam.name
        cls = CounterMetricFamily if fam.kind == "counter" else GaugeMetricFamily
        return cls(name, fam.documentation, labels=fam.labels)


def register_callback(families: Iterable[tuple[str, str, str, Sequence[str]]],
                      samples: Callable[[], Mapping[str, Iterable[Sample]]],
                      registry: CollectorRegistry = REGISTRY) -> CallbackCollector:
    """Register a :class:`CallbackCollector`; unregister with ``registry.unregister``."""
    collector = CallbackCollector(families, samples)
    registry.register(collector)
    return collector
