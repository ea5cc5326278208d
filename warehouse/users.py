"""Who may read the warehouse (dashboards and the HTTP interface), and which tenant.

The one owner of the users file: the dashboards' log-in and the warehouse's HTTP
interface both authenticate against it, and ``tawag user add/list/remove`` edits it.
Users are listed in a TOML file (``dashboard_users_file``, by default
``<data_dir>/dashboard-users.toml``), one table per user name::

    [users.alice]
    tenant = "acme"                 # the only tenant alice's pages and SQL box show
    role = "tenant-user"            # or "admin": every tenant (chosen in the sidebar)
    password = "scrypt$16384$8$1$<salt b64>$<hash b64>"

Hashes are scrypt (hashlib, n=2**14, r=8, p=1, 16-byte salt), compared in constant
time; ``python -m warehouse.users hash`` prints one for a password read from stdin.
Pure: no Streamlit here (the log-in form is in ``dashboards/streamlit_app.py``).

The project's own readers (dashboards in embedded mode, ``tawag sql``, ``tawag replay``)
use the **service credential**: user :data:`SERVICE_USER`, an administrator, whose
random password is generated once into ``<data_dir>/warehouse-service.key`` (mode 0600;
:func:`service_password`). It is not in the users file, so no one can edit it away.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import sys
import threading
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from core.settings import Settings

__all__ = ["ROLES", "ADMIN", "TENANT_USER", "SERVICE_USER", "User", "AuthError",
           "users_file", "hash_password", "verify_password", "load_users", "authenticate",
           "add_user", "remove_user", "service_password", "Authenticator"]

ADMIN = "admin"
TENANT_USER = "tenant-user"
ROLES = (TENANT_USER, ADMIN)

_SCRYPT = {"n": 2 ** 14, "r": 8, "p": 1}
_USERS_FILE_NAME = "dashboard-users.toml"
_SERVICE_KEY_NAME = "warehouse-service.key"
_USER_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")

SERVICE_USER = "tawag-service"
"""The project's own readers' user on the HTTP interface (an administrator)."""


class AuthError(ValueError):
    """The users file is missing or malformed (the message names the file and the entry)."""


@dataclass(frozen=True)
class User:
    """A logged-in person: ``User("alice", "acme", "tenant-user")``."""

    name: str
    tenant: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == ADMIN


def users_file(settings: Settings) -> Path:
    """``settings.dashboard_users_file`` if the settings have it, else the data folder's."""
    configured = getattr(settings, "dashboard_users_file", None)
    return Path(configured) if configured else settings.data_dir / _USERS_FILE_NAME


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def hash_password(password: str, salt: bytes | None = None) -> str:
    """``scrypt$n$r$p$salt$hash`` for ``password`` (a new random salt unless given)."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """Does ``password`` match the stored hash? False for any malformed hash."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt),
                                n=int(n), r=int(r), p=int(p), dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def load_users(path: Path) -> dict[str, tuple[User, str]]:
    """User name -> (user, password hash), or :class:`AuthError` saying what is wrong."""
    try:
        document = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise AuthError(f"no users file at {path}") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise AuthError(f"cannot read the users file {path}: {exc}") from None
    users = {}
    for name, entry in document.get("users", {}).items():
        role, tenant, hashed = entry.get("role"), entry.get("tenant"), entry.get("password")
        if role not in ROLES or not isinstance(hashed, str) \
                or (role == TENANT_USER and not tenant):
            raise AuthError(f"{path}: user {name!r} needs a role ({' or '.join(ROLES)}), "
                            "a password hash and, for a tenant-user, a tenant")
        users[name] = (User(name, str(tenant or ""), role), hashed)
    return users


def authenticate(path: Path, name: str, password: str) -> User | None:
    """The user if ``name`` exists and ``password`` matches its hash, else None."""
    entry = load_users(path).get(name)
    if entry is None:
        hash_password(password)  # same work either way: timing does not reveal names
        return None
    user, hashed = entry
    return user if verify_password(password, hashed) else None


def _toml_entry(user: User, hashed: str) -> str:
    lines = [f"[users.{user.name}]"]
    if user.tenant:
        lines.append(f'tenant = "{user.tenant}"')
    lines += [f'role = "{user.role}"', f'password = "{hashed}"']
    return "\n".join(lines) + "\n"


def _write_users(path: Path, users: dict[str, tuple[User, str]]) -> None:
    """Rewrite the file atomically (mode 0600): a reader never sees half of it."""
    body = "# Warehouse and dashboard users; edit with `tawag user add/list/remove`.\n" \
        + "\n".join(_toml_entry(u, h) for u, h in users.values())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(body)
    os.replace(tmp, path)


def add_user(path: Path, name: str, *, tenant: str | None, admin: bool = False) -> str:
    """Add ``name`` (a tenant-user of ``tenant``, or an administrator); its new password.

    The password is random and returned once; only its scrypt hash is stored.
    """
    if not _USER_NAME.match(name) or name == SERVICE_USER:
        raise AuthError(f"not a usable user name: {name!r}")
    if not admin and not (tenant and _USER_NAME.match(tenant)):
        raise AuthError("a tenant-user needs --tenant NAME (letters, digits, _ . @ -)")
    users = load_users(path) if path.exists() else {}
    if name in users:
        raise AuthError(f"user {name!r} already exists in {path}")
    password = secrets.token_urlsafe(15)
    users[name] = (User(name, tenant or "", ADMIN if admin else TENANT_USER),
                   hash_password(password))
    _write_users(path, users)
    return password


def remove_user(path: Path, name: str) -> None:
    users = load_users(path)
    if users.pop(name, None) is None:
        raise AuthError(f"no user {name!r} in {path}")
    _write_users(path, users)


def service_password(data_dir: Path) -> str:
    """The service credential's password, generated once into the data folder (0600)."""
    path = Path(data_dir) / _SERVICE_KEY_NAME
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race: use its key
        return path.read_text().strip()
    password = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as out:
        out.write(password + "\n")
    return password


class Authenticator:
    """Checks HTTP credentials against the users file and the service credential.

    The file is re-read when it changes (``tawag user add`` takes effect at once). A
    successful scrypt check is remembered for ``cache_s`` seconds under a keyed hash of
    the credentials, so a dashboard's many requests cost one scrypt, not one each.
    """

    def __init__(self, path: Path, service_password: str | None = None,
                 cache_s: float = 300.0) -> None:
        self.path = path
        self._service = service_password
        self._cache_s = cache_s
        self._key = secrets.token_bytes(32)
        self._users: dict[str, tuple[User, str]] = {}
        self._stamp: tuple[int, int] | None = None
        self._ok: dict[bytes, tuple[float, User]] = {}
        self._lock = threading.Lock()

    def _current(self) -> dict[str, tuple[User, str]]:
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            return {}
        with self._lock:
            if stamp != self._stamp:
                self._users, self._stamp = load_users(self.path), stamp
                self._ok.clear()
            return self._users

    def authenticate(self, name: str, password: str) -> User | None:
        """The user, or None for a wrong name or password (same work either way)."""
        if self._service is not None and name == SERVICE_USER:
            ok = hmac.compare_digest(password.encode(), self._service.encode())
            return User(SERVICE_USER, "", ADMIN) if ok else None
        users = self._current()
        entry = users.get(name)
        if entry is None:
            hash_password(password)
            return None
        user, hashed = entry
        token = hmac.new(self._key, f"{name}\0{password}\0{hashed}".encode(),
                         hashlib.sha256).digest()
        now = time.monotonic()
        with self._lock:
            cached = self._ok.get(token)
        if cached is not None and now - cached[0] < self._cache_s:
            return cached[1]
        if not verify_password(password, hashed):
            return None
        with self._lock:
            self._ok[token] = (now, user)
        return user


def main(argv: list[str]) -> int:
    """``python -m warehouse.users hash``: print the hash of the password on stdin."""
    if argv[1:] != ["hash"]:
        print("usage: python -m warehouse.users hash  (password on stdin)", file=sys.stderr)
        return 2
    print(hash_password(sys.stdin.readline().rstrip("\n")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
