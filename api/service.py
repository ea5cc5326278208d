"""The API process (``tawag api``): the REST API on uvicorn and the webhook worker.

    from api.service import run
    run(core.settings.load(), stop=stop)
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import uvicorn

from api.app import create_app
from api.keys import KeyStore, keys_file
from core.settings import Settings
from warehouse.client import connect

__all__ = ["run", "build_app"]

log = logging.getLogger("tawag.api")


def build_app(settings: Settings) -> Any:
    """The app as the process serves it (also what ``python -m api openapi`` documents)."""
    return create_app(settings, client=connect(settings),
                      keys=KeyStore(keys_file(settings)))


def run(settings: Settings, *, stop: threading.Event | None = None) -> None:
    """Serve ``/api/v1`` on ``api_host:api_port`` until ``stop`` is set (or SIGTERM/SIGINT
    in the main thread, which uvicorn handles itself)."""
    app = build_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host=settings.api_host, port=settings.api_port,
                                           log_level="warning", access_log=False))
    if stop is not None:
        threading.Thread(target=lambda: (stop.wait(), setattr(server, "should_exit", True)),
                         name="api-stop", daemon=True).start()
    log.info("api on http://%s:%d/api/v1", settings.api_host, settings.api_port)
    server.run()
