"""Which Bitrix24 USER_ID (and CALL_ID) each of our calls was registered with, kept on disk.

Bitrix24 deduplicates ``telephony.externalcall.register`` only on the whole key
``PHONE_NUMBER, TYPE, USER_ID/USER_PHONE_INNER, LINE_NUMBER, EXTERNAL_CALL_ID`` (within
30 minutes, until ``finish``; crm-contracts.md §2.4 [B1, B21]). The screen-pop registers
a call for the first extension that rings; the call log later knows who answered. Had a
restart lost the first registration, the log would register again with the answering
user's USER_ID -- another key, so a second Bitrix24 call, and the first one left open.
So the USER_ID is journalled *before* the register request (a resend after a lost answer
repeats the same key and gets the same CALL_ID back) and the CALL_ID after it; ``finish``
forgets the call.

    regs = Registrations(state_dir / "bitrix24-registrations.jsonl")
    regs.record("call-1", user="1271")                 # before register
    regs.record("call-1", user="1271", b24_id="externalCall.…")
    regs.get("call-1")                                 # ("1271", "externalCall.…")
    regs.forget("call-1")                              # after finish

A JSON line per change, fsynced; rewritten without forgotten calls when opened. The
file is created by the first registration.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

__all__ = ["Registrations"]


class Registrations:
    """Thread-safe; in memory only without a path (tests, a client used ad hoc)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        self._calls: dict[str, tuple[str, str | None]] = {}
        if self.path is not None and self.path.exists():
            self._load()
            self._rewrite()

    def get(self, call_id: str) -> tuple[str, str | None] | None:
        """(USER_ID, CALL_ID or None) the call was registered with, or None."""
        with self._lock:
            return self._calls.get(call_id)

    def record(self, call_id: str, *, user: str, b24_id: str | None = None) -> None:
        with self._lock:
            self._calls[call_id] = (user, b24_id)
            self._append({"call": call_id, "user": user, "b24": b24_id})

    def forget(self, call_id: str) -> None:
        with self._lock:
            if self._calls.pop(call_id, None) is not None:
                self._append({"call": call_id, "forget": True})

    def _load(self) -> None:
        assert self.path is not None
        try:
            lines = self.path.read_text().splitlines()
        except FileNotFoundError:
            return
        for line in lines:
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a torn last line (killed mid-write)
            if row.get("forget"):
                self._calls.pop(row["call"], None)
            else:
                self._calls[row["call"]] = (str(row["user"]), row.get("b24"))

    def _rewrite(self) -> None:
        assert self.path is not None
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as out:
            for call_id, (user, b24_id) in self._calls.items():
                out.write(json.dumps({"call": call_id, "user": user, "b24": b24_id}) + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.path)

    def _append(self, row: dict[str, object]) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as out:
            out.write(json.dumps(row) + "\n")
            out.flush()
            os.fsync(out.fileno())
