"""Click-to-call: a CRM user presses a number, the edge rings the agent, then the client.

Bitrix24's ONEXTERNALCALLSTART (contract §2.10) arrives at :mod:`connectors.web` with
the CALL_ID Bitrix24 has *already registered*; :class:`EdgeOriginator` checks the
extension and the number and asks the edge to bridge them (``bridge_call`` of the edge's
control API, :class:`EdgeControl`: ring the agent, then REFER the agent's phone to the
client). The phone's own INVITE is
an ordinary outbound call with a SIP Call-ID of the phone's choosing, so the Tawag call
id is not known when the call is placed. :class:`ClickToCallLinks` ties the two:

- ``expect`` (before the RPC) journals ``extension + number -> CRM call`` with a
  deadline (the agent's ring time plus a margin);
- the first outbound call from that extension to that number inside the window
  (``call.offered``, or its CDR if the event was missed) ``claim`` s it: the link
  becomes ``Tawag call id -> CRM call`` and the pending entry is dropped;
- the sync worker logs that call on the CRM's own call (Bitrix24 ``finish`` and
  ``attachRecord`` on the given CALL_ID, never a second ``register``);
- a link nobody claimed by its deadline (the agent did not answer, the phone refused
  the REFER) is ``expired``: the worker finishes the CRM call as not connected.

Everything lives in the outbox journal's marks, so a worker restart keeps the links.
Matching on (extension, number, window) is as precise as the edge allows: the phone's
INVITE carries nothing the edge publishes that names the origination. A link may name its
tenant (the public API's ``POST /calls`` keeps every tenant's in one journal; a CRM
worker's journal is its tenant's alone): then only that tenant's call claims it.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from connectors.outbox import Outbox
from core.phone import normalise
from core.settings import Settings

__all__ = ["ClickToCallLinks", "EdgeControl", "EdgeOriginator", "Link", "OriginationRefused",
           "outside_number"]

log = logging.getLogger("tawag.connectors.click_to_call")

CLAIM_MARGIN_S = 15.0
"""After the agent's ring time: the REFER, the phone's INVITE and its digest round."""
CLOCK_SKEW_S = 2.0
"""A call may look older than its origination by this much (event time is the edge's)."""
_OUTSIDE = re.compile(r"^\+[0-9]{7,15}$")
"""What kamailio.cfg sends to the trunk (``^\\+?[0-9]{7,15}$``), in E.164."""
_PENDING, _LINKED = "c2c-pending|", "c2c-call|"


class EdgeControl(Protocol):
    """What click-to-call needs of the edge's JSON-RPC control: :mod:`edge.control`, handed
    in by ``tawag connectors`` (the core packages import no operator module of tawag/)."""

    EdgeError: type[Exception]

    def pbx_value(self, settings: Settings, key: str) -> str | None: ...

    def registrations(self, settings: Settings, user: str) -> list[Any]: ...

    def bridge_call(self, settings: Settings, first: str, refer_to: str, *,
                    proxy: str | None = None) -> None: ...


class OriginationRefused(Exception):
    """Nothing was placed; ``status`` is the HTTP answer, the message says why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Link:
    """A CRM call waiting for (or tied to) the Tawag call that realises it."""

    crm: str
    crm_call_id: str
    crm_user: str
    extension: str
    phone: str
    at: float
    until: float
    for_tenant: str = ""
    """The tenant whose call claims it; "" (a CRM worker's own journal): any."""


def _pending(tenant: str, extension: str, phone: str) -> str:
    return _PENDING + (f"{tenant}|" if tenant else "") + f"{extension}|{phone}"


def outside_number(raw: str, country: str) -> str | None:
    """E.164 of a number the trunk may dial, None for anything else (extensions too)."""
    phone = normalise(raw, country)
    return phone if phone is not None and _OUTSIDE.match(phone) else None


class ClickToCallLinks:
    """Pending and claimed click-to-calls, kept as marks of the outbox journal."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    def expect(self, link: Link) -> None:
        """Journal the origination before the edge is asked (a fast call cannot miss it)."""
        self.outbox.set_mark(_pending(link.for_tenant, link.extension, link.phone), asdict(link))

    def forget(self, link: Link) -> None:
        self.outbox.set_mark(_pending(link.for_tenant, link.extension, link.phone), None)

    def claim(self, call_id: str, caller: str | None, callee: str | None,
              at: float, *, tenant: str = "") -> Link | None:
        """The link of an outbound call ``caller -> callee`` started at ``at`` (of
        ``tenant``, for links that name one), if any."""
        linked = self.linked(call_id)
        if linked is not None or not caller or not callee:
            return linked
        name = _pending(tenant, caller, callee)
        raw = self.outbox.mark(name)
        if raw is None:
            return None
        link = Link(**raw)
        if not link.at - CLOCK_SKEW_S <= at <= link.until:
            return None
        self.outbox.set_mark(_LINKED + call_id, asdict(link))
        self.outbox.set_mark(name, None)
        log.info("click-to-call %s %s tied to call %s", link.crm, link.crm_call_id, call_id)
        return link

    def linked(self, call_id: str) -> Link | None:
        raw = self.outbox.mark(_LINKED + call_id)
        return Link(**raw) if raw else None

    def expired(self, now: float) -> list[Link]:
        """Pending links past their deadline, removed: no call followed the origination."""
        out = []
        for name, raw in self.outbox.marks(_PENDING).items():
            if raw["until"] < now:
                self.outbox.set_mark(name, None)
                out.append(Link(**raw))
        return out


class EdgeOriginator:
    """``originate(call)`` for :class:`connectors.web.ConnectorsHttp`: check, link, bridge.

    Refusals raise :class:`OriginationRefused` with the HTTP status to answer, before
    anything is placed: an extension the edge does not know (404), one with no phone
    registered now (409), a number the trunk may not dial (400), the edge down (503).
    """

    def __init__(self, settings: Settings, links: ClickToCallLinks, edge: EdgeControl, *,
                 now: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.links = links
        self.edge = edge
        self.now = now
        self.window_s = settings.no_answer_timeout + CLAIM_MARGIN_S

    def __call__(self, call: Any) -> None:
        """Place ``call`` (a :class:`connectors.web.ClickToCall`) in the edge's own domain."""
        self.place(call.extension, call.phone, crm=call.crm, crm_call_id=call.crm_call_id,
                   crm_user=call.crm_user)

    def place(self, extension: str, number: str, *, crm: str, crm_call_id: str,
              crm_user: str = "", tenant: str = "", domain: str | None = None) -> Link:
        """Check, link, bridge: ring ``extension`` of ``domain`` (default: the edge's
        ``sip_domain``), then ``number``; returns the pending link (its claim window)."""
        s = self.settings
        domain = domain or s.sip_domain
        phone = outside_number(number, s.default_country)
        if phone is None:
            raise OriginationRefused(400, f"{number!r} is not an outside number")
        edge = self.edge
        try:
            if edge.pbx_value(s, f"ext:{domain}:{extension}") is None:
                raise OriginationRefused(
                    404, f"extension {extension} is not provisioned on the edge")
            contacts = edge.registrations(s, extension)
        except edge.EdgeError as exc:
            raise OriginationRefused(503, f"the edge did not answer: {exc}") from exc
        if not contacts:
            raise OriginationRefused(409, f"extension {extension} is not registered")
        now = self.now()
        link = Link(crm, crm_call_id, crm_user, extension, phone, at=now,
                    until=now + self.window_s, for_tenant=tenant)
        self.links.expect(link)
        first = contacts[-1]  # the most recent registration
        try:
            edge.bridge_call(s, first.address, f"<sip:{phone}@{domain}>",
                             proxy=first.received)
        except edge.EdgeError as exc:
            self.links.forget(link)
            raise OriginationRefused(503, f"the edge refused the call: {exc}") from exc
        log.info("click-to-call %s: ringing %s (%s) for %s", crm_call_id, extension,
                 first.address, phone)
        return link
