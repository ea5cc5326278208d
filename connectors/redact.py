"""Keep CRM secrets out of logs.

httpx logs every request URL at INFO; a Bitrix24 inbound-webhook URL carries its secret
code in the path and the Bitrix24 token server takes ``client_secret`` and
``refresh_token`` in the query string. :class:`RedactingFilter` rewrites such values
before a record is formatted; :func:`install` puts it on the loggers that see URLs.
"""

from __future__ import annotations

import logging
import re

__all__ = ["RedactingFilter", "install", "redact"]

_QUERY_SECRET = re.compile(
    r"(?i)\b(auth|access_token|refresh_token|client_secret|code|password|sig)=([^&\s\"']+)")
_WEBHOOK = re.compile(r"(/rest/\d+/)([^/\s]+)(/)")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")


def redact(text: str) -> str:
    text = _QUERY_SECRET.sub(lambda m: f"{m.group(1)}=***", text)
    text = _WEBHOOK.sub(lambda m: f"{m.group(1)}***{m.group(3)}", text)
    return _BEARER.sub(lambda m: f"{m.group(1)} ***", text)


class RedactingFilter(logging.Filter):
    """Formats the message once, redacted, and drops the arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        return True


def install(names: tuple[str, ...] = ("httpx", "httpcore", "tawag.connectors")) -> None:
    """Idempotently attach the filter to the loggers that may see URLs or headers."""
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactingFilter) for f in logger.filters):
            logger.addFilter(RedactingFilter())
