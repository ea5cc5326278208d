"""Per-tenant API keys: issued once, stored hashed, scoped, revocable.

A key is ``tawag_<key id>_<secret>``; the file ``<data_dir>/api/keys.json`` keeps, per key
id, its tenant, scopes, name, creation and revocation times and the SHA-256 of the whole
key — never the key. SHA-256 and not scrypt (as for passwords, warehouse/users.py): a key
is 256 random bits, so there is nothing to brute-force and the API can check one on every
request at no cost. ``tawag apikey add/list/revoke`` edits the file; the running API
reloads it when it changes, so a revoked key stops working at its next request.

    token = add_key(path, "acme", ("read",), name="crm")   # shown once
    KeyStore(path).authenticate(token)  -> ApiKey(key_id, tenant="acme", scopes=("read",))
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.settings import Settings

__all__ = ["SCOPES", "READ", "CALLS_WRITE", "WEBHOOKS_WRITE", "ApiKey", "KeyError_",
           "keys_file", "add_key", "list_keys", "revoke_key", "KeyStore"]

READ = "read"
"""Calls, agents, callbacks, webhook subscriptions and their delivery logs."""
CALLS_WRITE = "calls:write"
"""Click-to-call: ``POST /calls`` (ring one of the tenant's extensions, then a client)."""
WEBHOOKS_WRITE = "webhooks:write"
"""Create and delete webhook subscriptions."""
SCOPES = (READ, CALLS_WRITE, WEBHOOKS_WRITE)

_TOKEN = re.compile(r"^tawag_([0-9a-f]{12})_[A-Za-z0-9_-]{20,}$")
_TENANT = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class KeyError_(ValueError):  # noqa: N801 - KeyError is a builtin
    """A bad request to the key file (unknown key, bad tenant or scope)."""


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    tenant: str
    scopes: tuple[str, ...]
    name: str
    created_at: float
    revoked_at: float | None = None


def keys_file(settings: Settings) -> Path:
    return settings.data_dir / "api" / "keys.json"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _read(path: Path) -> dict[str, dict[str, Any]]:
    if not path.exists():
        return {}
    return json.loads(path.read_text())["keys"]


def _write(path: Path, keys: dict[str, dict[str, Any]]) -> None:
    """Atomically (temp file + rename), mode 0600: the hashes are not secrets, but the
    tenant map is nobody else's business."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({"keys": keys}, out, indent=1, sort_keys=True)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def _key(key_id: str, row: dict[str, Any]) -> ApiKey:
    return ApiKey(key_id, row["tenant"], tuple(row["scopes"]), row["name"],
                  row["created_at"], row.get("revoked_at"))


def add_key(path: Path, tenant: str, scopes: tuple[str, ...], *, name: str = "") -> str:
    """Issue a key of ``tenant`` with ``scopes``; returns the key (the only time it exists)."""
    if not _TENANT.match(tenant):
        raise KeyError_(f"not a tenant name: {tenant!r}")
    unknown = set(scopes) - set(SCOPES)
    if unknown or not scopes:
        raise KeyError_(f"scopes must be some of {', '.join(SCOPES)}; got {', '.join(scopes)}")
    keys = _read(path)
    key_id = secrets.token_hex(6)
    token = f"tawag_{key_id}_{secrets.token_urlsafe(32)}"
    keys[key_id] = {"tenant": tenant, "scopes": sorted(set(scopes)), "name": name,
                    "created_at": time.time(), "revoked_at": None, "sha256": _digest(token)}
    _write(path, keys)
    return token


def list_keys(path: Path) -> list[ApiKey]:
    return sorted((_key(k, row) for k, row in _read(path).items()),
                  key=lambda k: (k.tenant, k.created_at))


def revoke_key(path: Path, key_id: str) -> ApiKey:
    keys = _read(path)
    if key_id not in keys:
        raise KeyError_(f"no API key {key_id!r}")
    keys[key_id]["revoked_at"] = keys[key_id].get("revoked_at") or time.time()
    _write(path, keys)
    return _key(key_id, keys[key_id])


class KeyStore:
    """The key file as the API reads it: reloaded when its mtime or size changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._rows: dict[str, dict[str, Any]] = {}

    def _current(self) -> dict[str, dict[str, Any]]:
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = (0, 0)
        with self._lock:
            if stamp != self._stamp:
                self._rows, self._stamp = _read(self.path), stamp
            return self._rows

    def authenticate(self, token: str) -> ApiKey | None:
        """The live key ``token`` is, or None (malformed, unknown, wrong secret, revoked)."""
        match = _TOKEN.match(token or "")
        if not match:
            return None
        row = self._current().get(match.group(1))
        if row is None or not hmac.compare_digest(row["sha256"], _digest(token)):
            return None
        key = _key(match.group(1), row)
        return None if key.revoked_at else key
