"""Zadarma's PBX notification contract (crm-contracts.md §4), in both directions.

The one place that knows Zadarma's wire shape: the NOTIFY_* names, the fields each
``Signature`` signs and how (base64 of the *hex* HMAC-SHA1, as PHP ``hash_hmac`` gives
it), the ``disposition`` words, the ``call_start`` format (local ``Y-m-d H:i:s``, no zone)
and numbers without ``+``. :mod:`api.zadarma` writes notifications with it (Tawag ->
Zadarma format), :mod:`ingest.zadarma` reads them (a Zadarma account as a source).

A tenant that stays on Zadarma names its account's API secret in the provisioning file
(the same file as its zone, domain and CRM connection)::

    [tenant.acme.zadarma]
    secret = "..."          # the account's API secret: verifies each Signature

:func:`zadarma_problems` validates that table (``tawag provision --check``), and
:func:`tenant_secrets` reads every tenant's secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from core.phone import is_extension, normalise
from core.records import Disposition
from core.tenant_crm import tenant_tables

__all__ = ["NOTIFY_TYPES", "SIGNED_FIELDS", "DISPOSITIONS", "CALL_START_FORMAT",
           "signature", "signed_string", "verify", "to_local", "from_local", "to_number",
           "from_number", "zadarma_problems", "tenant_secrets"]

NOTIFY_TYPES = ("NOTIFY_START", "NOTIFY_INTERNAL", "NOTIFY_ANSWER", "NOTIFY_END",
                "NOTIFY_OUT_START", "NOTIFY_OUT_END", "NOTIFY_RECORD")

SIGNED_FIELDS = {"NOTIFY_START": ("caller_id", "called_did", "call_start"),
                 "NOTIFY_INTERNAL": ("caller_id", "called_did", "call_start"),
                 "NOTIFY_ANSWER": ("caller_id", "destination", "call_start"),
                 "NOTIFY_END": ("caller_id", "called_did", "call_start"),
                 "NOTIFY_OUT_START": ("internal", "destination", "call_start"),
                 "NOTIFY_OUT_END": ("internal", "destination", "call_start"),
                 "NOTIFY_RECORD": ("pbx_call_id", "call_id_with_rec")}
"""Event -> the fields its ``Signature`` signs, concatenated (lib/Webhook/*.php)."""

DISPOSITIONS = {Disposition.ANSWERED: "answered", Disposition.BUSY: "busy",
                Disposition.CANCELLED: "cancel", Disposition.NO_ANSWER: "no answer",
                Disposition.FAILED: "failed"}
"""Tawag's disposition -> Zadarma's word (Zadarma's other words are all failures)."""

CALL_START_FORMAT = "%Y-%m-%d %H:%M:%S"
"""``call_start``: the account's local wall time, whole seconds, no zone."""


def signature(signed: str, secret: str) -> str:
    """Zadarma's ``Signature``: base64 of the *hex* HMAC-SHA1 (PHP ``hash_hmac``)."""
    hexdigest = hmac.new(secret.encode(), signed.encode(), hashlib.sha1).hexdigest()
    return base64.b64encode(hexdigest.encode()).decode()


def signed_string(form: dict[str, str]) -> str:
    """What the ``Signature`` of a notification signs (KeyError for an unknown event)."""
    return "".join(form.get(name, "") for name in SIGNED_FIELDS[form["event"]])


def verify(form: dict[str, str], header: str | None, secret: str) -> bool:
    """Whether ``header`` is the notification's signature under ``secret`` (constant time)."""
    if not header or not secret or form.get("event") not in SIGNED_FIELDS:
        return False
    return hmac.compare_digest(signature(signed_string(form), secret).encode(),
                               header.strip().encode())


def to_local(ts: datetime, zone: str) -> str:
    """An instant as ``call_start`` in ``zone``."""
    return ts.astimezone(ZoneInfo(zone)).strftime(CALL_START_FORMAT)


def from_local(text: str, zone: str) -> datetime:
    """``call_start`` (the account's wall time) as a UTC instant; ValueError if it is not
    ``Y-m-d H:i:s``. A wall time repeated when DST ends is read as its first pass."""
    wall = datetime.strptime(text.strip(), CALL_START_FORMAT)
    return wall.replace(tzinfo=ZoneInfo(zone)).astimezone(UTC)


def to_number(value: str | None) -> str:
    """A Tawag number (E.164 or extension) as Zadarma writes it: no ``+``."""
    return (value or "").lstrip("+")


def from_number(value: str | None, country: str) -> str | None:
    """A Zadarma number as Tawag's: an extension stays, anything longer is international
    without ``+`` (``79161234567``), so it is read as E.164 whatever the tenant's country."""
    digits = (value or "").strip()
    if not digits:
        return None
    if is_extension(digits) or digits.startswith("+"):
        return normalise(digits, country)
    return normalise("+" + digits, country)


def zadarma_problems(table: Any) -> list[tuple[tuple[str, ...], str]]:
    """What is wrong with one tenant's ``zadarma`` table: (key path under it, message)."""
    if not isinstance(table, dict):
        return [((), "zadarma must be a table ([tenant.<name>.zadarma])")]
    problems = [((key,), f"zadarma: unknown key {key!r} (known: secret)")
                for key in sorted(set(table) - {"secret"})]
    if not isinstance(table.get("secret"), str) or not table["secret"]:
        problems.append((("secret",), "zadarma.secret: the account's API secret is required"))
    return problems


def tenant_secrets(path: Path) -> dict[str, str]:
    """Tenant -> its Zadarma API secret, for tenants with a valid ``zadarma`` table."""
    return {name: spec["zadarma"]["secret"] for name, spec in tenant_tables(path).items()
            if "zadarma" in spec and not zadarma_problems(spec["zadarma"])}
