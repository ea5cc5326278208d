"""The API's resources as pydantic models: what the OpenAPI document declares and every
response is validated against (FastAPI's ``response_model``)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field, HttpUrl

__all__ = ["Call", "Leg", "Forward", "Transfer", "CallEvent", "CallDetail", "CallPage",
           "AgentNow", "CallbackItem", "Subscription", "SubscriptionCreate",
           "SubscriptionCreated", "Delivery"]


class Call(BaseModel):
    """One call (its CDR's latest revision). Times are UTC."""

    call_id: str
    direction: str | None
    caller: str | None
    callee: str | None
    did: str | None
    agent: str | None = Field(description="The extension that answered or placed the call.")
    started_at: datetime
    answered_at: datetime | None
    ended_at: datetime | None
    ring_ms: int
    talk_ms: int
    disposition: str = Field(description="in_progress, answered, busy, no_answer, "
                                         "cancelled or failed")
    sip_code: int | None
    reason: str | None
    hangup_by: str | None
    closed: bool
    recording: str | None
    mos: float | None
    packet_loss: float | None
    jitter_ms: float | None
    version: int


class Leg(BaseModel):
    leg_id: str
    target: str | None
    rang_from: datetime
    rang_until: datetime | None
    answered: bool
    outcome: str


class Forward(BaseModel):
    at: datetime
    forwarded_from: str | None
    forwarded_to: str
    reason: str | None
    hop: int | None


class Transfer(BaseModel):
    at: datetime
    transferred_from: str | None
    transferred_to: str | None
    kind: str | None


class CallEvent(BaseModel):
    ts: datetime
    type: str
    leg_id: str | None
    caller: str | None
    callee: str | None
    agent: str | None
    sip_code: int | None
    reason: str | None
    hangup_by: str | None


class CallDetail(Call):
    legs: list[Leg]
    forwards: list[Forward]
    transfers: list[Transfer]
    events: list[CallEvent]


class CallPage(BaseModel):
    items: list[Call]
    next_cursor: str | None = Field(
        description="Pass as ``cursor`` for the next page; null on the last page.")


class AgentNow(BaseModel):
    agent: str
    state: str = Field(description="available, ringing, on_call, wrap_up or offline")
    since: datetime


class CallbackItem(BaseModel):
    """A client with missed calls not yet answered since (the missed-call callback list)."""

    client: str
    item_id: str
    opened_at: datetime
    last_missed_at: datetime | None
    attempts: int
    callback_attempts: int
    age_ms: int


class SubscriptionCreate(BaseModel):
    url: HttpUrl
    events: list[str] = Field(default=["*"], min_length=1, description=(
        "Event types to deliver (``call.answered``, ``cdr.closed``, ... or ``NOTIFY_START``"
        ", ... for the zadarma format); ``*`` for all."))
    format: Literal["tawag", "zadarma"] = "tawag"
    secret: str | None = Field(default=None, min_length=16, max_length=256, description=(
        "HMAC key of the signatures; generated (and returned once) when left out."))
    timezone: str = Field(default="UTC", description=(
        "IANA zone of the zadarma format's local ``call_start``."))


class Subscription(BaseModel):
    id: str
    url: str
    events: list[str]
    format: str
    timezone: str
    created_at: datetime


class SubscriptionCreated(Subscription):
    secret: str = Field(description="Shown once.")


class Delivery(BaseModel):
    event_id: str
    state: str = Field(description="pending, done or rejected (given up)")
    attempts: int
    last_status: int | None
    last_error: str | None
    first_attempt_at: datetime | None
    delivered_at: datetime | None
