"""Scrape a ``/metrics`` endpoint the way Prometheus does, for the component tests.

    values = scrape(url)                      # {(sample name, labels): value}
    value(values, "tawag_ingest_events_total", type="call.offered")
"""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    """Every sample of the endpoint, parsed by prometheus_client's own parser."""
    reply = httpx.get(url, timeout=5.0)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/plain")
    out: Samples = {}
    for family in text_string_to_metric_families(reply.text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when the series does not exist (yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum over every series of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, lb), v in samples.items() if n == name and want <= lb)


def names(samples: Samples) -> set[str]:
    return {n for n, _ in samples}


def free_port() -> int:
    """A TCP port nothing listens on right now (for a component that takes it from settings)."""
    import socket

    with socket.create_server(("127.0.0.1", 0)) as probe:
        return probe.getsockname()[1]
