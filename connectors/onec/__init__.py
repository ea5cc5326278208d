"""1C:Enterprise connector over the standard OData interface (contract: crm-contracts.md §3)."""

from connectors.onec.auth import OneCBasicAuth
from connectors.onec.client import OneCClient, build_client

__all__ = ["OneCBasicAuth", "OneCClient", "build_client"]
