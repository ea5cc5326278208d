"""A sync worker process for the SIGKILL test: loads its Settings from the ``TAWAG_*``
environment the test hands it, wires clients with the same ``build_targets`` the
``tawag connectors`` command uses, and delivers the outbox in ``connectors_dir`` until
it is killed."""

from __future__ import annotations

import threading

from connectors.outbox import Outbox
from connectors.sync import Backoff, SyncWorker
from connectors.wiring import build_targets
from core.settings import load


def main() -> None:
    settings = load()
    worker = SyncWorker(build_targets(settings),
                        Outbox(settings.connectors_dir / "outbox.jsonl"), settings=settings,
                        backoff=Backoff(initial_s=0.02, max_s=0.2, auth_s=0.2,
                                        max_retry_after_s=0.2))
    worker.start()
    print("started", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
