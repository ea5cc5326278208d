"""What an operator needs the first time the stack starts: a dashboard log-in.

The dashboards refuse anyone not in the users file. On a fresh data folder there is no
such file, so ``tawag up`` creates one with an administrator of the local tenant and a
random password, prints that password once, and stores only its scrypt hash.
"""

from __future__ import annotations

import secrets

from core.settings import Settings
from dashboards.auth import ADMIN, hash_password

__all__ = ["ensure_dashboard_admin", "ADMIN_NAME"]

ADMIN_NAME = "admin"


def ensure_dashboard_admin(settings: Settings) -> str | None:
    """Create the users file with one administrator if it is missing; the new password."""
    path = settings.dashboard_users_file
    if path.exists():
        return None
    password = secrets.token_urlsafe(12)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "# Dashboard users: one table per user; see dashboards/auth.py.\n"
        f"[users.{ADMIN_NAME}]\n"
        f'tenant = "{settings.tenant}"\n'
        f'role = "{ADMIN}"\n'
        f'password = "{hash_password(password)}"\n'
    )
    path.chmod(0o600)
    return password
