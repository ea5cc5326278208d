"""Callback agents: CDR revisions in, callback items out (the rules live in folds.callbacks).

1. ``callback-router`` reads ``tawag.cdrs`` (keyed by call id) and re-sends each revision
   of a call with a client (inbound or outbound) keyed ``tenant:client`` to the internal
   repartition topic (``group_by`` by client; internal calls are left out).
2. ``callbacks`` folds each revision into the client's row of the callbacks table and sends
   the items it opened, changed or retracted to ``tawag.callbacks``, keyed ``tenant:client``.

Redelivery: the row reaches the changelog before the items are sent, so a worker killed in
between gets the revision again (offset not committed) with the row already folded. A
repeated revision therefore sends the client's current items again
(:func:`streams.folds.callbacks.resent_items`) instead of nothing, which would lose them.
The router is stateless: a redelivered revision is simply re-keyed and sent again, and
the CDR agent re-sends a revision on a repeated event, so a crash anywhere upstream also
ends in a repeat here.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import faust
from faust.types import AgentT, CollectionT, StreamT

from streams.agent_records import CallbackItem, record_to_json
from streams.folds.callbacks import (
    DEFAULT_CONFIG,
    CallbackConfig,
    CallbackState,
    apply,
    client_key,
    item_changes,
    resent_items,
)
from streams.records import Cdr, cdr_from_json
from streams.tables import Tables
from streams.topics import Topics

__all__ = ["ROUTER_NAME", "AGENT_NAME", "register", "route", "fold_into"]

ROUTER_NAME = "callback-router"
AGENT_NAME = "callbacks"

log = logging.getLogger(__name__)


def register(app: faust.App, topics: Topics, tables: Tables,
             config: CallbackConfig = DEFAULT_CONFIG) -> dict[str, AgentT]:
    """Declare the router and the per-client fold on ``app``; each yields what it sent."""

    @app.agent(topics.cdrs, name=ROUTER_NAME)
    async def route_to_clients(stream: StreamT) -> AsyncIterator[Any]:
        """Re-key every CDR revision that has a client by ``tenant:client``."""
        async for event in stream.events():
            key = route(event.value, config)
            if key is not None:
                await topics.callback_cdrs.send(key=key.encode(), value=event.value)
            yield key

    @app.agent(topics.callback_cdrs, name=AGENT_NAME)
    async def fold_callbacks(stream: StreamT) -> AsyncIterator[Any]:
        """Fold revisions into the client's calls; publish changed callback items."""
        async for event in stream.events():
            key = event.key.decode() if isinstance(event.key, bytes) else str(event.key)
            try:
                changed = fold_into(tables.callbacks, key, cdr_from_json(event.value), config)
            except Exception:  # a fold bug or a bad revision must not stall the partition
                log.exception("callback fold failed for %s", key)
                yield None
                continue
            for item in changed:
                await topics.callbacks.send(key=key.encode(), value=record_to_json(item))
            yield changed

    return {"callback_router": route_to_clients, "callbacks": fold_callbacks}


def route(value: Any, config: CallbackConfig = DEFAULT_CONFIG) -> str | None:
    """The ``tenant:client`` key of a raw CDR message, or None (no client, or unreadable)."""
    try:
        return client_key(cdr_from_json(value), config.country)
    except (ValueError, KeyError, TypeError, AttributeError):
        log.warning("callback router: not a CDR: %r", value[:200] if value else value)
        return None


def fold_into(callbacks: CollectionT, key: str, cdr: Cdr,
              config: CallbackConfig = DEFAULT_CONFIG) -> list[CallbackItem]:
    """Fold a CDR revision into the client's row; the items to send: those it changed, or,
    for a repeated revision, the client's current items again (module docstring)."""
    tenant, _, client = key.partition(":")
    row = callbacks.get(key)
    old = CallbackState.from_dict(row) if row is not None else CallbackState(tenant, client)
    new = apply(old, cdr, config)
    if new is old:
        return resent_items(old, cdr, config)
    callbacks[key] = new.to_dict()
    return item_changes(old, new)
