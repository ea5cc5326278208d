"""Per-tenant CRM connections: the ``[tenant.<name>.crm]`` tables of the provisioning file.

Each tenant connects its own amoCRM, Bitrix24 or 1C: its portal, credentials, user map,
and the public base its CRM fetches recordings from. The keys of
``[tenant.<name>.crm.<crm>]`` are the ``crm_<crm>_*`` fields of
:class:`core.settings.Settings` without the prefix, so one list of options (with one
docstring each) serves both the environment and the file::

    [tenant.globex.crm]
    recordings_base_url = "https://rec.globex.example/recordings"   # optional

    [tenant.globex.crm.bitrix24]
    base_url = "https://globex.bitrix24.ru/rest/"
    client_id = "local.65f0a1b2c3d4e5.12345678"
    client_secret = "..."
    users = { "201" = "1270" }           # extension = Bitrix24 USER_ID
    default_user = "1"

A tenant without a ``crm`` table has no CRM connection, except the default tenant
(``Settings.tenant``), which keeps the ``TAWAG_CRM_*`` configuration of a single-tenant
install; a ``crm`` table of the default tenant replaces that configuration.

:func:`crm_problems` validates one tenant's table (``tawag provision --check`` reports
them as file:line, :mod:`edge.provision`); :func:`tenant_crms` reads every tenant's table
and :func:`tenant_domains` the SIP domain of every tenant (who a call belongs to), both
cached per version of the file.
"""

from __future__ import annotations

import copy
import tomllib
from dataclasses import MISSING, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = ["CRMS", "SHARED_KEYS", "REQUIRED", "crm_keys", "crm_problems", "tenant_crms",
           "tenant_domains", "tenant_tables"]

CRMS = ("amocrm", "bitrix24", "onec")
SHARED_KEYS = {"recordings_base_url": str, "call_source": str}
"""Keys of ``[tenant.<name>.crm]`` itself: the Settings fields ``recordings_base_url``
and ``crm_call_source``, for this tenant's connection."""
REQUIRED = {"amocrm": ("base_url", "client_id", "client_secret", "redirect_uri"),
            "bitrix24": ("base_url",),
            "onec": ("base_url", "user", "password")}
"""What a connection cannot work without (Bitrix24 without ``client_id`` is an inbound
webhook: lookups only, see connectors/README.md)."""


def crm_keys(crm: str) -> dict[str, type]:
    """Key -> type of ``[tenant.<name>.crm.<crm>]``: the ``crm_<crm>_*`` Settings fields."""
    from core.settings import Settings

    prefix = f"crm_{crm}_"
    out: dict[str, type] = {}
    for f in fields(Settings):
        if f.name.startswith(prefix):
            default = f.default_factory() if f.default_factory is not MISSING else f.default
            out[f.name.removeprefix(prefix)] = type(default)
    return out


def crm_problems(table: Any) -> list[tuple[tuple[str, ...], str]]:
    """What is wrong with one tenant's ``crm`` table: (key path under it, message)."""
    if not isinstance(table, dict):
        return [((), "crm must be a table ([tenant.<name>.crm])")]
    problems: list[tuple[tuple[str, ...], str]] = []
    known = set(SHARED_KEYS) | set(CRMS)
    for key in sorted(set(table) - known):
        problems.append(((key,), f"crm: unknown key {key!r} (known: "
                                  f"{', '.join(sorted(known))})"))
    for key, typ in SHARED_KEYS.items():
        if key in table and not isinstance(table[key], typ):
            problems.append(((key,), f"crm.{key}: a string, got {table[key]!r}"))
    base = table.get("recordings_base_url")
    if isinstance(base, str) and not base.startswith(("http://", "https://")):
        problems.append((("recordings_base_url",), "crm.recordings_base_url: an http(s) URL"))
    for crm in CRMS:
        if crm in table:
            problems += [((crm, *where), message)
                         for where, message in _connection_problems(crm, table[crm])]
    return problems


def _connection_problems(crm: str, spec: Any) -> list[tuple[tuple[str, ...], str]]:
    if not isinstance(spec, dict):
        return [((), f"crm.{crm} must be a table")]
    keys = crm_keys(crm)
    problems = [((key,), f"crm.{crm}: unknown key {key!r} (known: {', '.join(sorted(keys))})")
                for key in sorted(set(spec) - set(keys))]
    for key in REQUIRED[crm]:
        if not spec.get(key):
            problems.append(((), f"crm.{crm}: {key} is required"))
    for key, value in spec.items():
        typ = keys.get(key)
        if typ is dict:
            if not isinstance(value, dict) or not all(
                    isinstance(v, (str, int)) and not isinstance(v, bool) for v in value.values()):
                problems.append(((key,), f"crm.{crm}.{key}: a table of extension = CRM user"))
        elif typ is not None and not isinstance(value, typ):
            problems.append(((key,), f"crm.{crm}.{key}: a {typ.__name__}, got {value!r}"))
    url = spec.get("base_url")
    if isinstance(url, str) and url and not url.startswith(("http://", "https://")):
        problems.append((("base_url",), f"crm.{crm}.base_url: an http(s) URL, got {url!r}"))
    return problems


def tenant_tables(path: Path) -> dict[str, dict[str, Any]]:
    """Every ``[tenant.<name>]`` table of a provisioning file (a copy; {} if unreadable)."""
    try:
        stat = Path(path).stat()
    except OSError:
        return {}
    return copy.deepcopy(_read(str(path), stat.st_mtime_ns))


@lru_cache(maxsize=16)
def _read(path: str, _mtime_ns: int) -> dict[str, dict[str, Any]]:
    # cached per file version: the file is read again only when it changes
    try:
        doc = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return {}
    tenants = doc.get("tenant")
    if not isinstance(tenants, dict):
        return {}
    return {name: spec for name, spec in tenants.items() if isinstance(spec, dict)}


def tenant_crms(path: Path) -> dict[str, dict[str, Any]]:
    """Tenant -> its valid ``crm`` table; a tenant whose table has problems is left out
    (``tawag provision --check`` names them)."""
    return {name: spec["crm"] for name, spec in tenant_tables(path).items()
            if "crm" in spec and not crm_problems(spec["crm"])}


def tenant_domains(path: Path) -> dict[str, str]:
    """SIP domain -> tenant, as provisioned (the edge names the domain in every event)."""
    try:
        stat = Path(path).stat()
    except OSError:
        return {}
    return dict(_domains(str(path), stat.st_mtime_ns))


@lru_cache(maxsize=16)
def _domains(path: str, mtime_ns: int) -> tuple[tuple[str, str], ...]:
    # every event asks (ingest): no copy of the file's tables per call
    return tuple((spec["domain"], name) for name, spec in _read(path, mtime_ns).items()
                 if isinstance(spec.get("domain"), str))
