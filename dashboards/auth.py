"""Who may open the dashboards: the users file is owned by :mod:`warehouse.users`.

The dashboards' log-in and the warehouse's HTTP interface authenticate against the same
file; this module only re-exports what the dashboards use.
"""

from __future__ import annotations

from warehouse.users import (
    ADMIN,
    ROLES,
    TENANT_USER,
    AuthError,
    User,
    authenticate,
    hash_password,
    load_users,
    users_file,
    verify_password,
)

__all__ = ["ROLES", "ADMIN", "TENANT_USER", "User", "AuthError", "users_file",
           "hash_password", "verify_password", "load_users", "authenticate"]
