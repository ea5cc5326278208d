"""A sync worker process for the SIGKILL test: wires clients from a ConnectorConfig given
as JSON (the same ``build_targets`` the ``tawag connectors`` command will use) and
delivers the outbox in ``state_dir`` until it is killed."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

from connectors.config import ConnectorConfig
from connectors.outbox import Outbox
from connectors.sync import Backoff, SyncWorker, build_targets


def main() -> None:
    values = json.loads(sys.argv[1])
    values["data_dir"] = Path(values["data_dir"])
    values["enabled"] = tuple(values["enabled"])
    cfg = ConnectorConfig(**values)
    worker = SyncWorker(build_targets(cfg), Outbox(cfg.state_dir / "outbox.jsonl"), config=cfg,
                        backoff=Backoff(initial_s=0.02, max_s=0.2, auth_s=0.2))
    worker.start()
    print("started", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
