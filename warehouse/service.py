"""The warehouse process: owns the embedded store, loads it from Kafka, serves reads.

chdb allows one process per data path, so in embedded mode this process is the only
one that opens ``settings.chdb_path``. It:

1. opens the store (:class:`~warehouse.client.ChdbClient`), runs the migrations and
   applies the retention TTLs of the settings (:mod:`warehouse.retention`);
2. serves the ClickHouse HTTP interface on ``settings.warehouse_host:warehouse_http_port``
   from a pool of ``mode=ro`` sessions (:mod:`warehouse.readers`), authenticated against
   the users file and the service credential (:mod:`warehouse.users`), every statement
   checked and scoped by :mod:`warehouse.guard`;
3. runs the Kafka loader (:func:`~warehouse.loader.run_loader`) in a thread;
4. logs ``warehouse ready`` and waits for SIGTERM/SIGINT (or ``stop_event``).

In server mode there is no store to own: the loader writes through clickhouse-driver
and readers use the ClickHouse server directly, so no HTTP interface is started; the
migrations and the retention TTLs are applied to the server the same way.

Started by ``tawag warehouse`` or ``python -m warehouse``.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from core.metrics import serve as serve_metrics
from core.settings import Settings
from warehouse import guard, schema
from warehouse.client import ChdbClient, DriverClient, WarehouseClient
from warehouse.http_server import make_server, serve_in_thread
from warehouse.loader import run_loader
from warehouse.migrate import migrate
from warehouse.readers import ReaderPool
from warehouse.retention import apply_retention
from warehouse.tenants import sync_tenants
from warehouse.users import Authenticator, service_password, users_file

__all__ = ["READ_LIMITS", "run", "main"]

log = logging.getLogger(__name__)

READ_LIMITS = guard.DEFAULT_LIMITS
"""Per-statement limits of the HTTP readers, set by the server in each statement (see
:mod:`warehouse.guard`): no ad-hoc query may run away with the process that also loads
the store (max_result_rows throws past one million rows)."""


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Set ``stop`` on SIGTERM/SIGINT while inside (only possible in the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    for sig in previous:
        signal.signal(sig, lambda signum, frame: stop.set())
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _start_loader(settings: Settings, client: WarehouseClient,
                  stop: threading.Event) -> threading.Thread:
    thread = threading.Thread(target=run_loader, args=(settings, client, stop),
                              name="warehouse-loader", daemon=True)
    thread.start()
    return thread


def _prepare(settings: Settings, client: WarehouseClient) -> list[str]:
    """Bring the schema, the retention TTLs and the tenants' provisioning facts (time
    zone, trunk: ``warehouse.tenants``) up to date, before anything loads or reads.

    Both steps are idempotent (applied migrations and TTLs already in place are
    skipped), so every start runs them: a changed ``*_retention_days`` takes effect at
    the next start. Returns the names of the migrations applied.
    """
    applied = migrate(client)
    apply_retention(client, settings)
    sync_tenants(client, settings)  # time zones and trunks from provisioning
    return applied


def _open_store(settings: Settings) -> tuple[ChdbClient, ReaderPool]:
    """The owner's read/write session (prepared) and the HTTP readers' read-only pool."""
    writer = ChdbClient(settings.chdb_path)
    applied = _prepare(settings, writer)
    log.info("warehouse store %s: %d migration(s) applied", settings.chdb_path, len(applied))
    reader = ReaderPool(settings.chdb_path, database=schema.DATABASE)
    return writer, reader


def _run_embedded(settings: Settings, stop: threading.Event, load: bool,
                  ready: threading.Event | None) -> None:
    writer, reader = _open_store(settings)
    authenticator = Authenticator(users_file(settings), service_password(settings.data_dir))
    server = make_server(settings.warehouse_host, settings.warehouse_http_port, reader,
                         authenticator)
    http_thread = serve_in_thread(server)
    loader_thread = _start_loader(settings, writer, stop) if load else None
    log.info("warehouse ready: %s (store %s, loader %s)", server.url, settings.chdb_path,
             "on" if load else "off")
    if ready is not None:
        ready.set()
    try:
        stop.wait()
    finally:
        server.shutdown()
        server.server_close()
        http_thread.join(timeout=10)
        if loader_thread is not None:
            # a batch in flight finishes; a loader stuck in kafka-python's connect is
            # a daemon thread that touches no store, so it is left behind
            loader_thread.join(timeout=15)
        reader.close()
        writer.close()
        log.info("warehouse stopped")


def _run_server_mode(settings: Settings, stop: threading.Event, load: bool,
                     ready: threading.Event | None) -> None:
    client = DriverClient(settings)
    _prepare(settings, client)
    log.info("warehouse ready: ClickHouse server %s:%s (loader %s)",
             settings.clickhouse_host, settings.clickhouse_port, "on" if load else "off")
    if ready is not None:
        ready.set()
    try:
        if load:
            run_loader(settings, client, stop)
        stop.wait()
    finally:
        client.close()


def run(settings: Settings, stop_event: threading.Event | None = None, *,
        load: bool = True, ready: threading.Event | None = None) -> None:
    """Run the warehouse until SIGTERM/SIGINT or ``stop_event`` is set.

    ``load=False`` serves reads without consuming Kafka; ``ready`` is set once the HTTP
    interface answers (for tests and supervisors that run this in-process).
    """
    stop = stop_event or threading.Event()
    metrics_server = serve_metrics(settings.metrics_host, settings.warehouse_metrics_port,
                                   "warehouse")
    try:
        with _stop_on_signals(stop):
            if settings.warehouse_mode == "server":
                _run_server_mode(settings, stop, load, ready)
            else:
                _run_embedded(settings, stop, load, ready)
    finally:
        if metrics_server is not None:
            metrics_server.stop()


def main() -> None:
    """``python -m warehouse``: settings from the environment, logs to stderr."""
    from core.settings import load

    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run(load())
