"""amoCRM / Kommo API v4 connector (contract: reference/crm-contracts.md §1)."""

from connectors.amocrm.auth import AmoOAuth
from connectors.amocrm.client import AmoCrmClient, build_client

__all__ = ["AmoCrmClient", "AmoOAuth", "build_client"]
