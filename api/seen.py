"""Ids already handled, kept across restarts: an fsynced append-only journal of ``<unix
seconds> <id>`` lines.

Why a file and not the Kafka topic or the warehouse: the receiver must answer a retried
notification at once, before anything downstream has seen the first one, and a restart
must not forget it (Zadarma retries a notification it got no 200 for, possibly after
our restart). One line per id, fsynced before the 200, gives that; ids older than
``keep_s`` are dropped when the journal is opened (rewritten atomically), so it holds
about a week of notifications. A torn last line (killed mid-write) is ignored.

    seen = SeenJournal(path)
    if key not in seen:
        ...produce...
        seen.add(key)
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["SeenJournal", "KEEP_S"]

KEEP_S = 7 * 24 * 3600
"""How long an id is remembered: far beyond any retry of a notification."""


class SeenJournal:
    """A durable set of ids (strings without spaces); thread-safe."""

    def __init__(self, path: Path, *, keep_s: float = KEEP_S,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.clock = clock
        self._lock = threading.Lock()
        self._seen = self._load(self.clock() - keep_s)
        self._file = self.path.open("a", encoding="utf-8")

    def _load(self, since: float) -> dict[str, float]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        seen: dict[str, float] = {}
        if self.path.exists():
            for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
                at, _, key = line.partition(" ")
                try:
                    when = float(at)
                except ValueError:
                    continue  # a torn line
                if key and when >= since:
                    seen[key] = when
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(f"{at:.0f} {key}\n" for key, at in seen.items()))
        os.replace(tmp, self.path)
        return seen

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._seen

    def __len__(self) -> int:
        return len(self._seen)

    def add(self, key: str) -> None:
        """Remember ``key``; on disk (fsynced) when this returns."""
        if not key or " " in key or "\n" in key:
            raise ValueError(f"not a journal id: {key!r}")
        with self._lock:
            at = self.clock()
            self._file.write(f"{at:.0f} {key}\n")
            self._file.flush()
            os.fsync(self._file.fileno())
            self._seen[key] = at

    def close(self) -> None:
        with self._lock:
            self._file.close()
