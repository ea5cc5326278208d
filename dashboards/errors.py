"""The pages' one error surface: what a manager sees when the warehouse cannot answer.

Every page runs its figures inside :func:`warehouse_errors`::

    with warehouse_errors():
        page(day)

A :class:`~warehouse.client.WarehouseError` raised inside becomes one ``st.error`` box,
worded the same on every page (where the warehouse was expected, or what it said), a
log line for the operator, and the end of the page (``st.stop()``): no traceback, and no
half-drawn figures under the message. The next rerun (or a fragment's refresh) tries
again, since :mod:`dashboards.data` never caches an error.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import streamlit as st

from dashboards import data

__all__ = ["warehouse_errors", "unavailable_message", "query_error_message"]

log = logging.getLogger(__name__)


def unavailable_message() -> str:
    """The text shown when the warehouse cannot be reached."""
    return (f"warehouse not reachable at {data.warehouse_address()} — is the stack "
            "running? `tawag status`")


def query_error_message(exc: data.WarehouseError) -> str:
    """The text shown when the warehouse answered with an error."""
    return f"the warehouse could not answer: {exc}"


@contextmanager
def warehouse_errors(*, stop: bool = True) -> Iterator[None]:
    """Show a warehouse error raised in the block as the pages' one error box, log it,
    and stop the page (``stop=False``: carry on after the block, for a part of a page
    that the rest does not need)."""
    try:
        yield
    except data.UnavailableError as exc:
        log.warning("dashboards: warehouse not reachable at %s: %s",
                    data.warehouse_address(), exc)
        st.error(unavailable_message())
    except data.WarehouseError as exc:
        log.warning("dashboards: warehouse query failed: %s", exc)
        st.error(query_error_message(exc))
    else:
        return
    if stop:
        st.stop()
