"""Durable outbox of CRM deliveries, keyed by (CRM, kind, call id): an fsynced JSON-lines journal.

Why a journal file and not sqlite or a compacted Kafka topic: connectors may not hold
SQL (tests/test_layout.py; SQL lives in warehouse/), and a compacted topic would make
every delivery step a produce+consume round trip through the broker and tie the unit and
fault tests to a running Kafka. One append-only file under ``data_dir/connectors`` gives
the three properties the sync needs:

- *nothing lost*: an entry is fsynced before the Kafka offset of its CDR is committed;
- *never twice*: the key is unique, so a redelivered CDR revision enqueues nothing, and
  every completed vendor request is journalled as ``progress`` before the next one, so
  a restart resumes after the last finished step;
- *in order*: entries of one CRM are delivered by id; a failing head blocks the ones
  behind it (the CRM sees calls in the order they closed).

A torn last line (killed mid-write) is ignored on replay; :meth:`Outbox.compact`
rewrites the journal atomically without delivered payloads. Permanent rejections stay
in the journal with the CRM's error body; :func:`list_rejections` shows them.

    box = Outbox(path)
    box.enqueue("amocrm", "log", call_id, {"cdr": ...})   # False if already known
    entry = box.head("amocrm")
    box.progress(entry).set("call_logged", True)
    box.mark_done(entry)
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Entry", "Outbox", "list_rejections"]

PENDING, DONE, REJECTED = "pending", "done", "rejected"


@dataclass
class Entry:
    id: int
    crm: str
    kind: str
    call_id: str
    data: dict[str, Any]
    state: str = PENDING
    progress: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    body: Any = None
    rejected_at: float | None = None
    code: str | None = None
    """The CRM's documented error code of a parked (permanently rejected) entry."""

    @property
    def key(self) -> str:
        return f"{self.crm}|{self.kind}|{self.call_id}"


class _JournalProgress:
    """:class:`connectors.base.Progress` that journals each step before returning."""

    def __init__(self, box: Outbox, entry: Entry) -> None:
        self._box, self._entry = box, entry

    def get(self, key: str) -> Any:
        return self._entry.progress.get(key)

    def set(self, key: str, value: Any) -> None:
        self._box._write({"op": "progress", "id": self._entry.id, "key": key, "value": value})
        self._entry.progress[key] = value


class Outbox:
    """Thread-safe; one writer process per journal file."""

    def __init__(self, path: Path, *, fsync: bool = True) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fsync = fsync
        self._lock = threading.RLock()
        self._entries: dict[int, Entry] = {}
        self._keys: dict[str, int] = {}
        self._pending: dict[str, list[int]] = {}
        """Pending ids per CRM in delivery order, so ``head`` does not scan delivered ones."""
        self._marks: dict[str, Any] = {}
        self._next_id = 1
        self._replay()
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open

    # --- journal ---------------------------------------------------------------------
    def _replay(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, encoding="utf-8") as journal:
            for line in journal:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    break  # torn tail of a killed write: everything after it is unwritten
                self._apply(record)

    def _apply(self, rec: dict[str, Any]) -> None:
        op = rec["op"]
        if op == "add":
            entry = Entry(rec["id"], rec["crm"], rec["kind"], rec["call_id"], rec["data"],
                          state=rec.get("state", PENDING), progress=rec.get("progress", {}),
                          error=rec.get("error"), body=rec.get("body"),
                          rejected_at=rec.get("rejected_at"), code=rec.get("code"))
            self._entries[entry.id] = entry
            self._keys[entry.key] = entry.id
            if entry.state == PENDING:
                self._pending.setdefault(entry.crm, []).append(entry.id)
            self._next_id = max(self._next_id, entry.id + 1)
        elif op == "revise":
            self._entries[rec["id"]].data = rec["data"]
        elif op == "progress":
            self._entries[rec["id"]].progress[rec["key"]] = rec["value"]
        elif op == "done":
            self._settle(rec["id"]).state = DONE
        elif op == "rejected":
            entry = self._settle(rec["id"])
            entry.state, entry.error, entry.body = REJECTED, rec["error"], rec.get("body")
            entry.rejected_at, entry.code = rec.get("at"), rec.get("code")
        elif op == "mark":
            if rec["value"] is None:
                self._marks.pop(rec["name"], None)
            else:
                self._marks[rec["name"]] = rec["value"]

    def _settle(self, entry_id: int) -> Entry:
        entry = self._entries[entry_id]
        queue = self._pending.get(entry.crm, [])
        if entry_id in queue:
            queue.remove(entry_id)  # almost always the head: O(1) in practice
        return entry

    def _write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str)
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()
            if self._fsync:
                os.fsync(self._file.fileno())
            self._apply(record)

    # --- entries ---------------------------------------------------------------------
    def enqueue(self, crm: str, kind: str, call_id: str, data: dict[str, Any]) -> bool:
        """Add a delivery unless its key is already known (pending, done or rejected)."""
        with self._lock:
            if f"{crm}|{kind}|{call_id}" in self._keys:
                return False
            self._write({"op": "add", "id": self._next_id, "crm": crm, "kind": kind,
                         "call_id": call_id, "data": data})
            return True

    def revise(self, crm: str, kind: str, call_id: str, data: dict[str, Any]) -> bool:
        """Replace the payload of a pending delivery no request has been made for yet
        (a later CDR revision that brings the recording); False otherwise."""
        with self._lock:
            entry_id = self._keys.get(f"{crm}|{kind}|{call_id}")
            entry = self._entries.get(entry_id) if entry_id is not None else None
            if entry is None or entry.state != PENDING or entry.progress:
                return False
            self._write({"op": "revise", "id": entry.id, "data": data})
            return True

    def head(self, crm: str) -> Entry | None:
        """The oldest pending delivery for a CRM (deliveries go out in this order)."""
        with self._lock:
            queue = self._pending.get(crm)
            return self._entries[queue[0]] if queue else None

    def pending(self, crm: str | None = None) -> list[Entry]:
        with self._lock:
            crms = [crm] if crm is not None else list(self._pending)
            ids = sorted(i for name in crms for i in self._pending.get(name, []))
            return [self._entries[i] for i in ids]

    def entries(self) -> list[Entry]:
        with self._lock:
            return list(self._entries.values())

    def progress(self, entry: Entry) -> _JournalProgress:
        return _JournalProgress(self, entry)

    def mark_done(self, entry: Entry) -> None:
        self._write({"op": "done", "id": entry.id})

    def mark_rejected(self, entry: Entry, error: str, body: Any = None,
                      code: str | None = None) -> None:
        """Park an entry the CRM refused for good: kept with the reason, skipped."""
        self._write({"op": "rejected", "id": entry.id, "error": error, "body": body,
                     "at": time.time(), "code": code})

    def rejections(self) -> list[Entry]:
        with self._lock:
            return [e for e in self._entries.values() if e.state == REJECTED]

    # --- small durable facts (open missed-call tasks per phone) ------------------------
    def set_mark(self, name: str, value: Any) -> None:
        self._write({"op": "mark", "name": name, "value": value})

    def mark(self, name: str) -> Any:
        with self._lock:
            return self._marks.get(name)

    def marks(self, prefix: str) -> dict[str, Any]:
        """Every mark whose name starts with ``prefix`` (pending click-to-calls)."""
        with self._lock:
            return {n: v for n, v in self._marks.items() if n.startswith(prefix)}

    # --- maintenance -----------------------------------------------------------------
    def compact(self) -> None:
        """Rewrite the journal as one line per entry; delivered payloads are dropped."""
        with self._lock:
            tmp = self.path.with_suffix(".tmp")
            with open(tmp, "w", encoding="utf-8") as out:
                for e in self._entries.values():
                    keep = e.state != DONE
                    out.write(json.dumps({
                        "op": "add", "id": e.id, "crm": e.crm, "kind": e.kind,
                        "call_id": e.call_id, "data": e.data if keep else {}, "state": e.state,
                        "progress": e.progress if keep else {}, "error": e.error,
                        "body": e.body, "rejected_at": e.rejected_at, "code": e.code,
                    }, ensure_ascii=False, default=str) + "\n")
                for name, value in self._marks.items():
                    out.write(json.dumps({"op": "mark", "name": name, "value": value},
                                         ensure_ascii=False) + "\n")
                out.flush()
                os.fsync(out.fileno())
            self._file.close()
            os.replace(tmp, self.path)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115

    def close(self) -> None:
        with self._lock:
            self._file.close()


def list_rejections(path: Path) -> list[dict[str, Any]]:
    """For an operator: every permanently rejected delivery with the CRM's error body."""
    box = Outbox(path, fsync=False)
    try:
        return [{"crm": e.crm, "kind": e.kind, "call_id": e.call_id, "error": e.error,
                 "code": e.code, "body": e.body, "rejected_at": e.rejected_at}
                for e in box.rejections()]
    finally:
        box.close()
