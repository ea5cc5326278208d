"""Named, parameterised warehouse queries, one module per subject (wazo's DAO layout).

Dashboards import these functions (or the :class:`Queries` facade) and hold no SQL of
their own. Every function takes a :class:`~warehouse.client.WarehouseClient` first, so
the same query runs in the owner (chdb), over the HTTP interface or on a server::

    q = Queries(connect(settings))
    q.cdr.calls_summary("acme", start, end)
    q.kpi.kpi_summary("acme", start, end, threshold_s=20)
"""

from __future__ import annotations

from functools import partial
from types import SimpleNamespace

from warehouse.client import WarehouseClient
from warehouse.queries import agent_stats, callbacks, cdr, kpi, tenants

__all__ = ["Queries", "agent_stats", "callbacks", "cdr", "kpi", "tenants"]


def _bind(module: object, client: WarehouseClient) -> SimpleNamespace:
    names = getattr(module, "__all__", ())
    return SimpleNamespace(**{name: partial(getattr(module, name), client) for name in names
                              if callable(getattr(module, name))})


class Queries:
    """All query modules bound to one client: ``Queries(client).cdr.latest_cdrs("acme")``."""

    def __init__(self, client: WarehouseClient) -> None:
        self.client = client
        self.cdr = _bind(cdr, client)
        self.kpi = _bind(kpi, client)
        self.agent_stats = _bind(agent_stats, client)
        self.callbacks = _bind(callbacks, client)
        self.tenants = _bind(tenants, client)
