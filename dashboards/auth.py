"""Who may open the dashboards, and which tenant's data they see.

Users are listed in a TOML file (``dashboard_users_file``, by default
``<data_dir>/dashboard-users.toml``), one table per user name::

    [users.alice]
    tenant = "acme"                 # the only tenant alice's pages and SQL box show
    role = "tenant-user"            # or "admin": every tenant (chosen in the sidebar)
    password = "scrypt$16384$8$1$<salt b64>$<hash b64>"

Hashes are scrypt (hashlib, n=2**14, r=8, p=1, 16-byte salt), compared in constant
time; ``python -m dashboards.auth hash`` prints one for a password read from stdin.
Pure: no Streamlit here (the log-in form is in ``streamlit_app.py``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from core.settings import Settings

__all__ = ["ROLES", "ADMIN", "TENANT_USER", "User", "AuthError", "users_file",
           "hash_password", "verify_password", "load_users", "authenticate"]

ADMIN = "admin"
TENANT_USER = "tenant-user"
ROLES = (TENANT_USER, ADMIN)

_SCRYPT = {"n": 2 ** 14, "r": 8, "p": 1}
_USERS_FILE_NAME = "dashboard-users.toml"


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


def main(argv: list[str]) -> int:
    """``python -m dashboards.auth hash``: print the hash of the password on stdin."""
    if argv[1:] != ["hash"]:
        print("usage: python -m dashboards.auth hash  (password on stdin)", file=sys.stderr)
        return 2
    print(hash_password(sys.stdin.readline().rstrip("\n")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
