"""Typed configuration of the connectors, built from :class:`tawag.settings.Settings`.

Every value is *defined* once, in ``tawag/settings.py`` (the ``crm_*`` and
``recordings_*`` fields, each with its docstring and its ``TAWAG_<NAME>`` variable);
the defaults below are read from a default ``Settings`` instead of being repeated.
:func:`from_settings` maps field ``x`` to ``settings.crm_x`` unless :data:`_FROM_SETTINGS`
names another source:

    cfg = from_settings(settings, amocrm_base_url="https://acme.amocrm.ru")
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tawag.settings import Settings

__all__ = ["ConnectorConfig", "from_settings", "settings_source", "with_link_defaults"]

_D = Settings()


def _map(name: str) -> Any:
    return field(default_factory=lambda: dict(getattr(_D, name)))


@dataclass(frozen=True)
class ConnectorConfig:
    """Everything the CRM connectors and the sync worker need (secrets kept out of repr)."""

    data_dir: Path = _D.data_dir
    """Outbox journal, rejection log and token files live in ``data_dir / "connectors"``."""
    tenant: str = _D.tenant
    default_country: str = _D.default_country
    topic_call_events: str = _D.topic_call_events
    topic_cdrs: str = _D.topic_cdrs
    topic_contacts: str = _D.crm_topic_contacts
    kafka_bootstrap: str = _D.kafka_bootstrap
    enabled: tuple[str, ...] = _D.crm_enabled

    amocrm_base_url: str = _D.crm_amocrm_base_url
    amocrm_client_id: str = _D.crm_amocrm_client_id
    amocrm_client_secret: str = field(default=_D.crm_amocrm_client_secret, repr=False)
    amocrm_redirect_uri: str = _D.crm_amocrm_redirect_uri
    amocrm_users: Mapping[str, str] = _map("crm_amocrm_users")
    amocrm_default_user: str = _D.crm_amocrm_default_user

    bitrix24_base_url: str = _D.crm_bitrix24_base_url
    bitrix24_oauth_url: str = _D.crm_bitrix24_oauth_url
    bitrix24_client_id: str = _D.crm_bitrix24_client_id
    bitrix24_client_secret: str = field(default=_D.crm_bitrix24_client_secret, repr=False)
    bitrix24_users: Mapping[str, str] = _map("crm_bitrix24_users")
    bitrix24_default_user: str = _D.crm_bitrix24_default_user
    bitrix24_line_number: str = _D.crm_bitrix24_line_number
    bitrix24_application_token: str = field(default=_D.crm_bitrix24_application_token,
                                            repr=False)

    onec_base_url: str = _D.crm_onec_base_url
    onec_user: str = _D.crm_onec_user
    onec_password: str = field(default=_D.crm_onec_password, repr=False)
    onec_users: Mapping[str, str] = _map("crm_onec_users")
    onec_manager_field: str = _D.crm_onec_manager_field
    onec_timezone: str = _D.crm_onec_timezone

    recordings_wav_dir: Path = _D.recordings_wav_dir
    """Where the edge writes WAVs; links name a file relative to it."""
    http_host: str = _D.recordings_http_host
    http_port: int = _D.recordings_http_port
    """The worker's HTTP server: recording downloads and Bitrix24 events."""
    recording_base_url: str = _D.recordings_base_url
    """Empty: ``http://<http_host>:<http_port>/recordings`` (see :func:`with_link_defaults`)."""
    recording_secret: str = field(default=_D.recordings_link_secret, repr=False)
    recording_ttl_s: int = _D.recordings_link_ttl_s
    call_source: str = _D.crm_call_source
    missed_task_deadline_s: int = _D.crm_missed_task_deadline_s
    http_timeout_s: float = _D.crm_http_timeout_s
    recording_wait_s: float = _D.crm_recording_wait_s
    screen_pop_deadline_s: float = _D.crm_screen_pop_deadline_s

    @property
    def state_dir(self) -> Path:
        return self.data_dir / "connectors"


_FROM_SETTINGS = {"data_dir": "data_dir", "tenant": "tenant",
                  "default_country": "default_country",
                  "topic_call_events": "topic_call_events", "topic_cdrs": "topic_cdrs",
                  "topic_contacts": "crm_topic_contacts", "kafka_bootstrap": "kafka_bootstrap",
                  "recordings_wav_dir": "recordings_wav_dir",
                  "http_host": "recordings_http_host", "http_port": "recordings_http_port",
                  "recording_base_url": "recordings_base_url",
                  "recording_secret": "recordings_link_secret",
                  "recording_ttl_s": "recordings_link_ttl_s"}


def settings_source(name: str) -> str:
    """The Settings attribute a ConnectorConfig field comes from."""
    return _FROM_SETTINGS.get(name, "crm_" + name)


def from_settings(settings: Any, **overrides: Any) -> ConnectorConfig:
    """Config from a Settings-like object (``crm_<field>`` attributes if present) + overrides."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(ConnectorConfig):
        source = settings_source(f.name)
        if hasattr(settings, source):
            values[f.name] = getattr(settings, source)
    values.update(overrides)
    if isinstance(values.get("enabled"), str):
        values["enabled"] = tuple(n for n in values["enabled"].split(",") if n)
    return ConnectorConfig(**values)


def with_link_defaults(cfg: ConnectorConfig) -> ConnectorConfig:
    """Fill an empty recording base URL and signing key (generated once, kept 0600)."""
    import os
    import secrets

    base = cfg.recording_base_url or f"http://{cfg.http_host}:{cfg.http_port}/recordings"
    secret = cfg.recording_secret
    if not secret:
        path = cfg.state_dir / "recording-link.key"
        try:
            secret = path.read_text().strip()
        except FileNotFoundError:
            secret = ""
        if not secret:
            path.parent.mkdir(parents=True, exist_ok=True)
            secret = secrets.token_urlsafe(32)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secret + "\n")
    return dataclasses.replace(cfg, recording_base_url=base, recording_secret=secret)
