"""Callback stages: CDR revisions in, callback items out (the rules live in folds.callbacks).

Two steps (run by :mod:`streams.runner`, declared in :mod:`streams.topology`):

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

from typing import TYPE_CHECKING, Any

from faust.types import CollectionT

from core.agent_records import CallbackItem, record_to_json
from core.records import Cdr, cdr_from_json
from streams.folds.callbacks import (
    DEFAULT_CONFIG,
    CallbackConfig,
    CallbackState,
    apply,
    client_key,
    item_changes,
    resent_items,
)

if TYPE_CHECKING:
    from streams.topology import Output

__all__ = ["ROUTER_NAME", "AGENT_NAME", "route_step", "step", "route", "fold_into"]

ROUTER_NAME = "callback-router"
AGENT_NAME = "callbacks"



def route_step(table: None, key: Any, value: Any,
               config: CallbackConfig = DEFAULT_CONFIG) -> list[Output]:
    """callback-router: a revision of a call with a client, keyed ``tenant:client``."""
    client = route(value, config)
    return [] if client is None else [("callback_cdrs", client.encode(), value)]


def step(callbacks: CollectionT, key: Any, value: Any,
         config: CallbackConfig = DEFAULT_CONFIG) -> list[Output]:
    """callbacks: fold the revision into the client's row; changed items to ``callbacks``."""
    key = key.decode() if isinstance(key, bytes) else str(key)
    raw = key.encode()
    return [("callbacks", raw, record_to_json(item))
            for item in fold_into(callbacks, key, _cdr(value), config)]


def route(value: Any, config: CallbackConfig = DEFAULT_CONFIG) -> str | None:
    """The ``tenant:client`` key of a raw CDR message, or None for a call without a client
    (internal). Raises on a message that is not a CDR (the runner dead-letters it)."""
    return client_key(_cdr(value), config.country)


def _cdr(value: Any) -> Cdr:
    """The CDR of a raw message. The router and the fold read the same message: a CDR
    (frozen, a pure function of the bytes) is remembered by its bytes for a few messages."""
    cdr = _CDRS.get(value) if isinstance(value, bytes | str) else None
    if cdr is None:
        cdr = cdr_from_json(value)
        if len(_CDRS) >= _CDRS_MAX:
            _CDRS.clear()
        _CDRS[value] = cdr
    return cdr


_CDRS: dict[bytes | str, Cdr] = {}
_CDRS_MAX = 1024


def fold_into(callbacks: CollectionT, key: str, cdr: Cdr,
              config: CallbackConfig = DEFAULT_CONFIG) -> list[CallbackItem]:
    """Fold a CDR revision into the client's row; the items to send: those it changed, or,
    for a repeated revision, the client's current items again (module docstring)."""
    tenant, _, client = key.partition(":")
    row = callbacks.get(key)
    old = _decoded(key, row) if row is not None else CallbackState(tenant, client)
    new = apply(old, cdr, config)
    if new is old:
        return resent_items(old, cdr, config)
    row = new.to_dict()
    callbacks[key] = row
    _DECODED.pop(key, None)
    if len(_DECODED) >= _DECODED_MAX:
        del _DECODED[next(iter(_DECODED))]
    _DECODED[key] = (row, new)
    return item_changes(old, new, config)


_DECODED: dict[str, tuple[dict[str, Any], CallbackState]] = {}
"""``tenant:client`` -> (the row object this process last wrote, its state), as the agents
table's (``streams.agents.agent_stats``): reused only while the table holds *that very
object*, so a row recovered from the changelog is decoded afresh. Bounded, oldest first."""
_DECODED_MAX = 20_000


def _decoded(key: str, row: dict[str, Any]) -> CallbackState:
    cached = _DECODED.get(key)
    if cached is not None and cached[0] is row:
        return cached[1]
    return CallbackState.from_dict(row)
