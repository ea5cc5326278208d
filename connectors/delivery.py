"""Delivery steps: what one outbox entry does in its CRM, looked up by the entry's kind.

The worker (:mod:`connectors.sync`) hands each CRM's head entry to :func:`deliver`,
which runs the step :data:`STEPS` names for ``entry.kind``:

- ``log`` (a closed call with an outside party): find the contact and publish it for
  routing, create a lead for an unknown inbound number, log the call with its
  recording link (on the CRM's own call for a click-to-call), open a task for a missed
  inbound call;
- ``close_task``: a later answered call with that number closes the missed call's task;
- ``click_to_call_unplaced``: finish a CRM-started call nobody placed in time.

Steps record each vendor request in the entry's journalled progress, so an entry
retried after a crash or an outage resumes where it stopped. Retryable errors
(RateLimited, Unavailable, AuthExpired) reach the worker, which backs off and retries
the same head; a Rejected entry is journalled with the CRM's error body and skipped.

    steps = DeliverySteps(outbox, links, recording_link=lambda cdr, stored: None)
    deliver(steps, target, outbox.head(target.name))
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from connectors import metrics
from connectors.base import LINKED_CALL_ID, Contact, Rejected, TaskRef
from connectors.click_to_call import ClickToCallLinks
from connectors.mapping import callback_note, client_phone, is_missed
from connectors.outbox import Entry, Outbox
from connectors.targets import Target, extension_for
from core.records import Cdr, Disposition, cdr_from_json, cdr_to_json

__all__ = ["CLOSE_TASK", "LOG", "STEPS", "UNPLACED", "DeliverySteps", "Step", "close_task",
           "deliver", "deliveries_for", "enqueue_follow_up", "finish_unplaced", "log_call"]

log = logging.getLogger("tawag.connectors")

LOG, CLOSE_TASK, UNPLACED = "log", "close_task", "click_to_call_unplaced"
"""Entry kinds, as journalled in the outbox (renaming one orphans queued entries)."""


@dataclass(frozen=True)
class DeliverySteps:
    """What the steps share: the journal, the click-to-call links and two hooks."""

    outbox: Outbox
    links: ClickToCallLinks
    recording_link: Callable[[Cdr, bool], str | None]
    """A signed link to the call's recording, or None (no recording, links off); the
    flag says whether the CRM stores it (long-lived) or fetches it once (short)."""
    on_contact: Callable[[str, str, Contact | None, str | None], None] | None = None
    """``(crm, phone, contact, extension)`` after each fresh lookup (tawag.crm-contacts)."""


Step = Callable[[DeliverySteps, Target, Entry], None]


# --- enqueueing ------------------------------------------------------------------------
def deliveries_for(cdr: Cdr, country: str) -> list[tuple[str, dict[str, Any]]]:
    """(kind, data) to enqueue for a CDR: calls with an outside party, once closed."""
    if not cdr.closed or cdr.direction not in ("inbound", "outbound"):
        return []
    phone = client_phone(cdr.direction, cdr.caller, cdr.callee, country)
    if phone is None:
        return []
    return [(LOG, {"cdr": cdr_to_json(cdr).decode(), "phone": phone})]


def _missed_mark(crm: str, phone: str) -> str:
    return f"missed|{crm}|{phone}"


def _task_mark(crm: str, phone: str) -> str:
    return f"task|{crm}|{phone}"


def enqueue_follow_up(outbox: Outbox, target: Target, cdr: Cdr, phone: str) -> int:
    """Remember a missed inbound number; a later answered call with it closes the task.

    Returns the entries added (0 or 1)."""
    if not target.client.capabilities.tasks:
        return 0
    mark = _missed_mark(target.name, phone)
    if is_missed(cdr):
        outbox.set_mark(mark, cdr.call_id)
        return 0
    if cdr.disposition is Disposition.ANSWERED and outbox.mark(mark):
        missed_call = outbox.mark(mark)
        outbox.set_mark(mark, None)
        return int(outbox.enqueue(target.name, CLOSE_TASK, cdr.call_id,
                                  {"phone": phone, "missed_call_id": missed_call}))
    return 0


# --- the steps -------------------------------------------------------------------------
def log_call(steps: DeliverySteps, target: Target, entry: Entry) -> None:
    """A closed call: contact (or a new lead), the call record, a missed call's task."""
    client, progress = target.client, steps.outbox.progress(entry)
    cdr, phone = cdr_from_json(entry.data["cdr"]), entry.data["phone"]
    link = steps.recording_link(cdr, client.capabilities.stores_links)
    contact = _contact(progress.get("contact"))
    if progress.get("contact") is None:
        contact = client.find_contact(phone)
        progress.set("contact", asdict(contact) if contact else {})
        _publish_contact(steps, target, phone, contact)
    if contact is None and cdr.direction == "inbound" and client.capabilities.unknown_lead:
        if not progress.get("lead"):
            lead = client.create_lead_for_unknown(
                cdr, phone=phone, user=target.user_for(cdr.agent), recording_url=link)
            progress.set("lead", asdict(lead) if lead else {})
        contact = _contact(progress.get("lead"))
    responsible = (contact.responsible_user_id if contact else None) or target.default_user
    user = target.user_for(cdr.agent) if cdr.agent else responsible
    started = steps.links.linked(cdr.call_id)
    if started is not None and started.crm == target.name:
        # a click-to-call: logged on the CRM's call, in the name of who clicked
        if progress.get(LINKED_CALL_ID) is None:
            progress.set(LINKED_CALL_ID, started.crm_call_id)
        user = started.crm_user or user
    if not client.capabilities.call_log:
        return  # e.g. a Bitrix24 inbound webhook: the lookup above is all it allows
    client.log_call(cdr, phone=phone, user=user, contact=contact, recording_url=link,
                    progress=progress)
    if is_missed(cdr) and client.capabilities.tasks:
        task = client.create_missed_call_task(cdr, phone=phone, contact=contact,
                                              responsible=responsible, progress=progress)
        if task is not None:
            steps.outbox.set_mark(_task_mark(target.name, phone), task.id)


def close_task(steps: DeliverySteps, target: Target, entry: Entry) -> None:
    """The number was called back: close the task its missed call opened."""
    phone = entry.data["phone"]
    task_id = steps.outbox.mark(_task_mark(target.name, phone))
    if task_id is None:
        return  # the missed call's task was never created (rejected or no owner)
    target.client.close_task(TaskRef(crm=target.name, id=task_id, phone=phone),
                             note=callback_note(entry.call_id))
    steps.outbox.set_mark(_task_mark(target.name, phone), None)


def finish_unplaced(steps: DeliverySteps, target: Target, entry: Entry) -> None:
    """A click-to-call nobody placed: the CRM shows it in progress until it is finished."""
    target.client.finish_unplaced(entry.call_id, user=entry.data["user"],
                                  progress=steps.outbox.progress(entry))


STEPS: dict[str, Step] = {LOG: log_call, CLOSE_TASK: close_task, UNPLACED: finish_unplaced}
"""Entry kind -> the step that delivers it."""


def deliver(steps: DeliverySteps, target: Target, entry: Entry) -> None:
    """One delivery; Rejected is journalled and skipped, retryable errors propagate."""
    step = STEPS.get(entry.kind)
    try:
        if step is not None:
            step(steps, target, entry)
        else:  # journalled by another version of Tawag: nothing here can deliver it
            log.error("%s: no delivery step for %s of call %s; skipped", target.name,
                      entry.kind, entry.call_id)
    except Rejected as exc:
        log.error("%s rejected call %s (%s): %s", target.name, entry.call_id, entry.kind, exc)
        metrics.DELIVERY_FAILURES.labels(target.name, entry.kind, "rejected").inc()
        steps.outbox.mark_rejected(entry, str(exc), exc.body, exc.code)
        return
    steps.outbox.mark_done(entry)
    metrics.DELIVERIES.labels(target.name, entry.kind).inc()
    log.info("%s: %s of call %s delivered", target.name, entry.kind, entry.call_id)


def _publish_contact(steps: DeliverySteps, target: Target, phone: str,
                     contact: Contact | None) -> None:
    if steps.on_contact is None:
        return
    owner = contact.responsible_user_id if contact else None
    try:
        steps.on_contact(target.name, phone, contact, extension_for(target, owner))
    except Exception:  # routing hints are best effort; the delivery goes on
        log.exception("could not publish the %s contact of a number", target.name)


def _contact(raw: dict[str, Any] | None) -> Contact | None:
    if not raw:
        return None
    return Contact(**{**raw, "lead_ids": tuple(raw.get("lead_ids") or ())})
