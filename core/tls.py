"""The process's one TLS context, for httpx's one-off requests.

``httpx.post(...)`` and ``httpx.get(...)`` build a new client per call, and with it a new
``ssl.SSLContext`` loaded with the CA bundle: 46 ms of CPU each on the development machine,
even for the ``http://`` URLs of Kamailio's JSON-RPC and the components' health checks.
The ingest's reconciler, which asks Kamailio for its dialogs all the time, spent 7% of its
samples there. Passing ``verify=default_context()`` builds it once.
"""

from __future__ import annotations

import ssl
from functools import cache

__all__ = ["default_context"]


@cache
def default_context() -> ssl.SSLContext:
    """What httpx uses by default (the system's CA certificates), made once."""
    return ssl.create_default_context()
