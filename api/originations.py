"""``POST /api/v1/calls``: click-to-call for any program, and what became of each one.

Placing is the Bitrix24 click-to-call's (:class:`connectors.click_to_call.EdgeOriginator`:
the same checks, then the edge's bridge -- ring the agent, REFER the agent's phone to the
client through the trunk), in the key's tenant's SIP domain. The phone's own INVITE gets
a Call-ID of the phone's choosing, so the Tawag call id is not known when the API
answers; the origination's pending link (:class:`connectors.click_to_call.ClickToCallLinks`,
named by the tenant) is claimed by the first outbound call from that extension to that
number inside its window, which the API's Kafka loop (:mod:`api.consume`) sees:

    pending --(call.offered of the bridged call, or its CDR)--> connected (call_id set)
    pending --(window over, no such call: agent did not answer, phone refused the REFER)--> expired

Each origination is one mark ``api-origination|<id>`` of its own journal
(``<data_dir>/api/originations.jsonl``), so a restart of the API keeps them.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from connectors.click_to_call import (
    ClickToCallLinks,
    EdgeOriginator,
    Link,
    OriginationRefused,
    outside_number,
)
from connectors.outbox import Outbox
from core.events import Direction, Event, EventType
from core.records import Cdr
from core.settings import Settings
from core.tenant_crm import tenant_domains

__all__ = ["CRM", "PENDING", "CONNECTED", "EXPIRED", "Originations", "originations_file",
           "tenant_domain"]

log = logging.getLogger("tawag.api.originations")

CRM = "api"
"""The ``crm`` of the API's links (a CRM worker's links name their CRM)."""
PENDING, CONNECTED, EXPIRED = "pending", "connected", "expired"
_MARK = "api-origination|"


def originations_file(settings: Settings) -> Path:
    return settings.data_dir / "api" / "originations.jsonl"


def tenant_domain(settings: Settings, tenant: str) -> str | None:
    """The SIP domain ``tenant`` was provisioned with; the edge's own domain for the
    default tenant when the provisioning names none; else None (no extension of it)."""
    for domain, owner in tenant_domains(settings.provisioning_file).items():
        if owner == tenant:
            return domain
    return settings.sip_domain if tenant == settings.tenant else None


class Originations:
    """The API's originations: placed through ``originate``, tied to calls by the events.

        origins = Originations(Outbox(originations_file(s)), EdgeOriginator(s, links, edge))
        row = origins.place("acme", "101", "+79161234567")   # raises OriginationRefused
        origins.handle_event(event)                           # from tawag.call-events
        origins.get("acme", row["id"])["state"]               # pending/connected/expired
    """

    def __init__(self, outbox: Outbox, originate: EdgeOriginator, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.outbox, self.originate, self.clock = outbox, originate, clock
        self.links: ClickToCallLinks = originate.links

    def place(self, tenant: str, extension: str, number: str, *,
              key_id: str = "") -> dict[str, Any]:
        """Ring ``extension`` of ``tenant``, then ``number``; the new origination's row.
        Raises :class:`connectors.click_to_call.OriginationRefused` when nothing was placed."""
        settings = self.originate.settings
        domain = tenant_domain(settings, tenant)
        if domain is None:
            raise OriginationRefused(404, f"tenant {tenant} has no extension {extension}")
        origination_id = secrets.token_hex(8)
        now = self.clock()
        # journalled before the edge is asked: a fast call's claim finds it
        row = {"id": origination_id, "tenant": tenant, "key_id": key_id,
               "extension": extension, "number": outside_number(number, settings.default_country),
               "state": PENDING, "call_id": None, "created_at": now,
               "expires_at": now + self.originate.window_s}
        self.outbox.set_mark(_MARK + origination_id, row)
        try:
            self.originate.place(extension, number, crm=CRM, crm_call_id=origination_id,
                                 crm_user=key_id, tenant=tenant, domain=domain)
        except OriginationRefused:
            self.outbox.set_mark(_MARK + origination_id, None)
            raise
        return row

    def get(self, tenant: str, origination_id: str) -> dict[str, Any] | None:
        """The origination of ``tenant`` with that id; None for another tenant's."""
        row = self.outbox.mark(_MARK + origination_id)
        return row if row is not None and row["tenant"] == tenant else None

    def handle_event(self, ev: Event) -> None:
        """An outbound ``call.offered`` may be the call an origination placed."""
        if ev.type is EventType.CALL_OFFERED and ev.direction is Direction.OUTBOUND \
                and ev.call_id:
            self._claimed(self.links.claim(ev.call_id, ev.caller, ev.callee,
                                           ev.ts.timestamp(), tenant=ev.tenant), ev.call_id)

    def handle_cdr(self, cdr: Cdr) -> None:
        """The CDR claims too, in case the call's ``call.offered`` was not seen."""
        if cdr.direction == "outbound":
            self._claimed(self.links.claim(cdr.call_id, cdr.caller, cdr.callee,
                                           cdr.started_at.timestamp(), tenant=cdr.tenant),
                          cdr.call_id)

    def expire(self, now: float) -> int:
        """Originations no call followed in their window: expired; returns how many."""
        done = 0
        for link in self.links.expired(now):
            if link.crm == CRM and self._settle(link, EXPIRED, None):
                log.warning("origination %s: no call from %s to %s followed",
                            link.crm_call_id, link.extension, link.phone)
                done += 1
        return done

    def _claimed(self, link: Link | None, call_id: str) -> None:
        if link is not None and link.crm == CRM:
            self._settle(link, CONNECTED, call_id)

    def _settle(self, link: Link, state: str, call_id: str | None) -> bool:
        row = self.outbox.mark(_MARK + link.crm_call_id)
        if row is None or row["state"] != PENDING:
            return False
        self.outbox.set_mark(_MARK + link.crm_call_id,
                             {**row, "state": state, "call_id": call_id})
        return True
