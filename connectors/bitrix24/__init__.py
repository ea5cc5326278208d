"""Bitrix24 REST telephony connector (contract: reference/crm-contracts.md §2)."""

from connectors.bitrix24.auth import Bitrix24OAuth
from connectors.bitrix24.client import Bitrix24Client, build_client

__all__ = ["Bitrix24Client", "Bitrix24OAuth", "build_client"]
