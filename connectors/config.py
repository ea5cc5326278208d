"""Typed configuration of the connectors, built from a Settings-like object or arguments.

Only ``tawag/settings.py`` reads the environment. Until it grows the ``crm_*`` fields
proposed in the connectors report, :func:`from_settings` reads them with ``getattr`` and
falls back to the defaults below, so a plain :class:`tawag.settings.Settings` works:

    cfg = from_settings(settings, amocrm_base_url="https://acme.amocrm.ru")
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ConnectorConfig", "from_settings"]


@dataclass(frozen=True)
class ConnectorConfig:
    """Everything the CRM connectors and the sync worker need (secrets kept out of repr)."""

    data_dir: Path = Path("var")
    """Outbox journal, rejection log and token files live in ``data_dir / "connectors"``."""
    default_country: str = "RU"
    topic_call_events: str = "tawag.call-events"
    topic_cdrs: str = "tawag.cdrs"
    kafka_bootstrap: str = "127.0.0.1:19092"
    enabled: tuple[str, ...] = ()
    """Which CRMs to sync with: any of ``amocrm``, ``bitrix24``, ``onec``."""

    amocrm_base_url: str = ""
    amocrm_client_id: str = ""
    amocrm_client_secret: str = field(default="", repr=False)
    amocrm_redirect_uri: str = ""
    amocrm_users: Mapping[str, str] = field(default_factory=dict)
    """Extension -> amoCRM user id (who gets the screen-pop, who answered)."""
    amocrm_default_user: str = ""
    """amoCRM user that owns tasks for numbers nobody owns yet."""

    bitrix24_base_url: str = ""
    """``https://portal/rest/`` (OAuth app) or an inbound webhook ``.../rest/{uid}/{code}/``."""
    bitrix24_oauth_url: str = "https://oauth.bitrix.info/oauth/token/"
    bitrix24_client_id: str = ""
    bitrix24_client_secret: str = field(default="", repr=False)
    bitrix24_users: Mapping[str, str] = field(default_factory=dict)
    bitrix24_default_user: str = ""
    bitrix24_line_number: str = ""

    onec_base_url: str = ""
    """``http://host/publication/odata/standard.odata/``."""
    onec_user: str = ""
    onec_password: str = field(default="", repr=False)
    onec_users: Mapping[str, str] = field(default_factory=dict)
    """Extension -> ``Catalog_Пользователи`` Ref_Key (Ответственный_Key)."""
    onec_manager_field: str = "ОсновнойМенеджер_Key"
    """Counterparty attribute holding the responsible manager (varies by configuration)."""
    onec_timezone: str = "Europe/Moscow"
    """1C OData dates carry no zone: they are the base's local time."""

    recording_base_url: str = ""
    recording_secret: str = field(default="", repr=False)
    recording_ttl_s: int = 7 * 24 * 3600
    """amoCRM/Bitrix24 fetch the link when a user presses play, possibly days later."""
    call_source: str = "tawag"
    missed_task_deadline_s: int = 3600
    http_timeout_s: float = 10.0
    screen_pop_deadline_s: float = 2.0
    """A card shown later than this is useless; screen-pops are not queued durably."""

    @property
    def state_dir(self) -> Path:
        return self.data_dir / "connectors"


_FROM_SETTINGS = {"data_dir": "data_dir", "default_country": "default_country",
                  "topic_call_events": "topic_call_events", "topic_cdrs": "topic_cdrs",
                  "kafka_bootstrap": "kafka_bootstrap"}


def from_settings(settings: Any, **overrides: Any) -> ConnectorConfig:
    """Config from a Settings-like object (``crm_<field>`` attributes if present) + overrides."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(ConnectorConfig):
        source = _FROM_SETTINGS.get(f.name, "crm_" + f.name)
        if hasattr(settings, source):
            values[f.name] = getattr(settings, source)
    values.update(overrides)
    if isinstance(values.get("enabled"), str):
        values["enabled"] = tuple(n for n in values["enabled"].split(",") if n)
    return ConnectorConfig(**values)
