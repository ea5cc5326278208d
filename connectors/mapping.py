"""What a Tawag call means to every CRM alike: pure rules and the text CRM users read.

Each CRM's own payloads are in its ``mapping.py`` (``amocrm/``, ``bitrix24/``, ``onec/``);
what all of them share lives here. Pure: no I/O, no clock.

    phone = client_phone(cdr.direction, cdr.caller, cdr.callee, "RU")   # or None
    is_missed(cdr)             # an inbound call nobody answered: somebody calls back
    callback_note("c-42")      # closes the missed call's task in the CRM
"""

from __future__ import annotations

from core.phone import is_extension, normalise
from core.records import Cdr, Disposition

__all__ = ["callback_note", "client_phone", "is_missed"]


def client_phone(direction: str | None, caller: str | None, callee: str | None,
                 country: str) -> str | None:
    """The outside party: the caller of an inbound call, the callee of an outbound one."""
    raw = caller if direction != "outbound" else callee
    phone = normalise(raw, country)
    return None if phone is None or is_extension(phone) else phone


def is_missed(cdr: Cdr) -> bool:
    """An inbound call nobody answered: the CRM gets a task to call the client back.

    Judged by ``answered_at``, not only the disposition: a call whose end was lost
    (``interrupted``, closed by the ingest reconciler) may well have been answered, and
    the client was then spoken to."""
    return (cdr.direction == "inbound" and cdr.disposition is not Disposition.ANSWERED
            and cdr.answered_at is None)


def callback_note(call_id: str) -> str:
    """What a missed call's task says when a later answered call closes it."""
    return f"Перезвонили: звонок {call_id}"
