"""The CRMs one worker syncs with: each client, and who our extensions are there.

    target = Target(amo_client, users={"101": "8001"}, default_user="8000")
    target.user_for("101")            # "8001"
    extension_for(target, "8001")     # "101"
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from connectors.base import CrmClient

__all__ = ["Target", "extension_for"]


@dataclass(frozen=True)
class Target:
    """One CRM to sync with: its client and who our extensions are there."""

    client: CrmClient
    users: Mapping[str, str] = field(default_factory=dict)
    default_user: str | None = None

    @property
    def name(self) -> str:
        return self.client.name

    def user_for(self, extension: str | None) -> str | None:
        return self.users.get(extension) if extension else None


def extension_for(target: Target, user: str | None) -> str | None:
    """Our extension of a CRM user (the inverse of ``Target.users``)."""
    if user is None:
        return None
    return next((ext for ext, uid in target.users.items() if str(uid) == str(user)), None)
