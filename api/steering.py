"""Steering a carrier call from the tenant's NOTIFY_START receiver (crm-contracts.md §4.3).

Zadarma lets the receiver of NOTIFY_START decide where an incoming call goes, by its
answer. Tawag does the same: before the edge routes a call from the carrier to a DID it
asks the API (``POST /internal/steer``, Kamailio's http_client, route[STEER]). If the
tenant has a ``zadarma`` subscription that wants NOTIFY_START, the oldest one is sent
the notification there and then, and its answer becomes the call's target:

    {"redirect": "101"}        -> ext:101 (the edge checks the extension exists)
    {"redirect": "blacklist"}  -> refused busy (486), as Zadarma does
    {"hangup": 1}              -> refused (603)
    {"caller_name": "Acme"}    -> the name the agent's phone shows

Without such a subscription the answer is ``{"steering": 0}`` and the edge does not ask
again for that tenant for 10 s (so its calls do not pay for the request). Anything else
— a scenario or menu redirect Tawag has no counterpart for, an error status, no answer
within ``steer_wait_s`` — gives ``{}``: the edge routes as provisioned. The edge bounds
its own wait too (``steer_wait_s`` rounded up, plus a second), so a hung API cannot hold
a call.

A NOTIFY_START delivered here is marked in the webhook outbox, so the webhook worker
does not send it a second time when the call's ``call.offered`` arrives through Kafka;
one that failed is sent by the worker as usual (at least once).
"""

from __future__ import annotations

import base64
import hmac
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from fastapi import Depends, FastAPI, Request
from pydantic import BaseModel, Field

from api import problems, zadarma
from api.subscriptions import Subscription, wants
from api.webhooks import Webhooks
from core.settings import Settings
from edge.control import steer_token

__all__ = ["Steer", "SteerRequest", "add_route", "decision", "steer", "steering_subscription"]

log = logging.getLogger("tawag.api.steering")

_EXTENSION = re.compile(r"^[0-9]{2,6}$")
_MAX_NAME = 64


@dataclass(frozen=True)
class SteerRequest:
    """What the edge knows of a carrier call before routing it."""

    tenant: str
    call_id: str
    caller: str
    did: str
    offered: datetime


@dataclass(frozen=True)
class Steer:
    """The receiver's answer as the edge applies it (None: unchanged)."""

    target: str | None = None
    caller_name: str | None = None
    steering: bool = True
    """False: the tenant has no receiver; the edge stops asking for a few seconds."""

    def as_dict(self) -> dict[str, str | int]:
        answer: dict[str, str | int] = {k: v for k, v in (("target", self.target),
                                                          ("caller_name", self.caller_name))
                                        if v is not None}
        return answer if self.steering else {**answer, "steering": 0}


def decision(answer: Any) -> Steer:
    """The steer a NOTIFY_START answer asks for; unknown or malformed parts are ignored."""
    if not isinstance(answer, dict):
        return Steer()
    target = None
    redirect = answer.get("redirect")
    if answer.get("hangup") in (1, "1", True):
        target = "refuse:webhook_hangup"
    elif redirect == "blacklist":
        target = "refuse:webhook_blacklist"
    elif isinstance(redirect, str | int) and _EXTENSION.match(str(redirect)):
        target = f"ext:{redirect}"
    name = answer.get("caller_name")
    caller_name = None
    refused = target is not None and target.startswith("refuse:")
    if isinstance(name, str) and not refused:
        # printable text only: it becomes the display name of a SIP header
        cleaned = "".join(c for c in name.strip() if c.isprintable() and c not in '"\\')
        caller_name = cleaned[:_MAX_NAME] or None
    return Steer(target, caller_name)


def steering_subscription(subs: list[Subscription]) -> Subscription | None:
    """The tenant's oldest Zadarma-format subscription that wants NOTIFY_START."""
    return next((s for s in subs if s.format == "zadarma" and wants(s, "NOTIFY_START")), None)


def steer(hooks: Webhooks, http: httpx.Client, request: SteerRequest,
          wait_s: float) -> Steer:
    """Send NOTIFY_START to the tenant's steering receiver and read its answer."""
    sub = steering_subscription(hooks.subscriptions.of_tenant(request.tenant))
    if sub is None:
        return Steer(steering=False)
    start = hooks.call_start(request.call_id, request.offered.astimezone(UTC))
    form = zadarma.start_form(request.call_id, request.caller, request.did, start,
                              sub.timezone)
    try:
        resp = http.post(sub.url, content=zadarma.encode(form), timeout=wait_s, headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Signature": zadarma.signature(form, sub.secret)})
    except httpx.HTTPError as exc:
        log.warning("steering: %s did not answer NOTIFY_START of %s in %.1f s (%s); "
                    "the call is routed as provisioned", sub.url, request.call_id, wait_s,
                    type(exc).__name__)
        return Steer()
    if not resp.is_success:
        log.warning("steering: %s answered NOTIFY_START of %s with HTTP %d",
                    sub.url, request.call_id, resp.status_code)
        return Steer()
    hooks.mark_steered(sub, request.call_id)
    try:
        return decision(resp.json())
    except ValueError:
        return Steer()  # an empty or non-JSON 200: "carry on"


class SteerBody(BaseModel):
    """route[STEER]'s request (sip-edge/kamailio.cfg)."""

    domain: str = Field(max_length=255)
    call_id: str = Field(min_length=1, max_length=255)
    caller: str = Field(max_length=64)
    did: str = Field(max_length=64)
    ts: float


def add_route(app: FastAPI, settings: Settings, hooks: Webhooks | None,
              http: httpx.Client | None) -> None:
    """``POST /internal/steer``, for the edge only (HTTP Basic ``edge`` with the token
    of :func:`edge.control.steer_token`); not part of the public API's document."""
    def edge_only(request: Request) -> None:
        token = steer_token(settings)
        header = request.headers.get("authorization", "")
        scheme, _, encoded = header.partition(" ")
        try:
            user, _, password = base64.b64decode(encoded).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            user = password = ""
        if scheme.lower() != "basic" or user != "edge" or \
                not hmac.compare_digest(password.encode(), token.encode()):
            raise problems.ProblemError(401, "unauthorized", "the edge's token only",
                                        {"WWW-Authenticate": 'Basic realm="tawag-edge"'})

    @app.post("/internal/steer", include_in_schema=False,
              dependencies=[Depends(edge_only)])
    def steer_call(body: SteerBody) -> dict[str, str | int]:
        if hooks is None or http is None:
            return {}
        request = SteerRequest(tenant=settings.tenant_for_domain(body.domain),
                               call_id=body.call_id, caller=body.caller, did=body.did,
                               offered=datetime.fromtimestamp(body.ts, UTC))
        return steer(hooks, http, request, settings.steer_wait_s).as_dict()
