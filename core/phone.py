"""The one phone-number normaliser of Tawag.

Extensions (short internal numbers) stay as they are; everything else becomes E.164
when ``phonenumbers`` can read it for the given country, so that ``84951234567``,
``+7 (495) 123-45-67`` and ``74951234567`` are one client. What cannot be read is kept
as its digits, never dropped: an analyst can still find it.
"""

from __future__ import annotations

import re
from functools import lru_cache

import phonenumbers

__all__ = ["normalise", "is_extension", "MAX_EXTENSION_DIGITS"]

MAX_EXTENSION_DIGITS = 6
"""Internal numbers (extensions, groups, feature codes) have at most this many digits."""

_SIP_URI = re.compile(r"^(?:sips?:|tel:)?([^@;>]+)")
_DIALLABLE = re.compile(r"[^\d+*#]")


def is_extension(number: str) -> bool:
    """True for short internal numbers such as ``101`` or ``*8``."""
    return bool(number) and len(number) <= MAX_EXTENSION_DIGITS and number.lstrip("*#").isdigit()


@lru_cache(maxsize=65536)
def normalise(raw: str | None, country: str = "RU") -> str | None:
    """E.164 for external numbers, the number itself for extensions, None for nothing.

    Cached: a pure function of its arguments, called for every party of every event by
    the folds, and parsing with ``phonenumbers`` was a tenth of their time."""
    if raw is None:
        return None
    match = _SIP_URI.match(raw.strip())
    user = match.group(1) if match else raw.strip()
    dialled = _DIALLABLE.sub("", user)
    if not dialled:
        return user or None
    if is_extension(dialled):
        return dialled
    if dialled.startswith("00"):
        dialled = "+" + dialled[2:]
    try:
        parsed = phonenumbers.parse(dialled, None if dialled.startswith("+") else country)
    except phonenumbers.NumberParseException:
        return dialled
    if not phonenumbers.is_possible_number(parsed):
        return dialled
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
