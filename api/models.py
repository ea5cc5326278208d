"""The API's resources as pydantic models: what the OpenAPI document declares and every
response is validated against (FastAPI's ``response_model``)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field, HttpUrl

__all__ = ["Call", "Leg", "Forward", "Transfer", "CallEvent", "CallDetail", "CallPage",
           "AgentNow", "AgentInterval", "AgentStatsPage", "CallbackItem", "Subscription",
           "SubscriptionCreate", "SubscriptionCreated", "Delivery", "OriginationCreate",
           "Origination"]


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


class RoutingDecision(BaseModel):
    """A rule beyond the DID's own target decided where the call went (route.decided)."""

    at: datetime
    rule: str = Field(description="blacklist, schedule or whitelist")
    target: str = Field(description=(
        "Where the rule sent the call: ext:<user>, group:<name>, tel:<number>, or "
        "refuse:<rule> (refused: 603, or 480 Closed out of hours)"))
    default_target: str | None = Field(description="Where the DID alone would have sent it.")
    decision_us: int | None = Field(description="The edge's time deciding, microseconds.")


class CallDetail(Call):
    route_target: str | None = Field(description=(
        "Where the PBX routed the call on its offer: ext:<user>, group:<name>, "
        "tel:<number> (the trunk) or mask:<code>."))
    route_group: str | None = Field(description="The group (queue) that rang, if any.")
    pdd_ms: int | None = Field(description=(
        "Post-dial delay (RFC 6076) of a call sent to the trunk: INVITE to the first 18x "
        "or the answer."))
    recording_url: str | None = Field(description=(
        "A signed link to the recording (WAV), valid until recording_url_expires_at; "
        "null without a recording or while recording links are not set up."))
    recording_url_expires_at: datetime | None
    routing: list[RoutingDecision] = Field(description=(
        "The routing decisions taken for the call, in time order (empty: it went where "
        "its DID or the number dialled says)."))
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


class AgentInterval(BaseModel):
    """One agent's figures in one interval (``tawag.agent_stats``, latest revision).

    Durations in ms are the time in each state inside the interval; offered / answered /
    missed count where the call rang the agent, handled where its talk ended. The KPIs
    are the warehouse's (``warehouse.queries.agent_stats``): ``aht_talk_ms`` is AHT
    without after-call work, ``occupancy`` the Amazon Connect variant, ``answer_ratio``
    answered / offered."""

    agent: str
    interval_start: datetime = Field(description="In the tenant's zone, with its offset.")
    interval_end: datetime = Field(description="Excluded; a local day may be 23 or 25 h.")
    logged_in_ms: int
    available_ms: int
    ringing_ms: int
    talk_ms: int
    wrap_up_ms: int
    offered: int
    answered: int
    missed: int
    handled: int
    handled_talk_ms: int
    aht_talk_ms: float | None
    occupancy: float | None
    answer_ratio: float | None
    counted_until: datetime = Field(description=(
        "The agent's newest event counted: time in its current state after it is not in "
        "the figures yet."))


class AgentStatsPage(BaseModel):
    time_zone: str = Field(description="The tenant's IANA zone: intervals are cut in it.")
    interval: Literal["15m", "hour", "day"]
    since: datetime = Field(description="The first interval's start (the period aligned).")
    until: datetime = Field(description="The end of the last interval, excluded.")
    items: list[AgentInterval] = Field(description="By agent, then interval.")


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
    last_attempt_ms: float | None = Field(description="HTTP round trip of the last attempt.")
    latency_ms: float | None = Field(description=(
        "From the event's time at the source (a cdr.closed: the call's end) to the "
        "receiver's 2xx; null until delivered."))


class OriginationCreate(BaseModel):
    """Click-to-call: ring ``extension``'s phone, then ``number`` through the trunk."""

    extension: str = Field(min_length=1, max_length=32, pattern=r"^[0-9A-Za-z_.-]+$",
                           description="An extension of the key's tenant, registered now.")
    number: str = Field(min_length=1, max_length=32, description=(
        "The client's number, any notation the tenant's country reads (``+7 916 123-45-67``,"
        " ``8 916 1234567``); normalised to E.164."))


class Origination(BaseModel):
    """A click-to-call and the call it became."""

    id: str
    state: Literal["pending", "connected", "expired"] = Field(description=(
        "pending: the agent's phone is ringing (or the call has not been seen yet); "
        "connected: the agent answered and the phone called the client -- call_id names "
        "that call; expired: no call followed by expires_at (not answered, or the phone "
        "refused the transfer)."))
    extension: str
    number: str = Field(description="The client's number in E.164.")
    call_id: str | None = Field(description="The Tawag call (GET /calls/{call_id}).")
    created_at: datetime
    expires_at: datetime = Field(description=(
        "The call must start by then: the extension's ring time plus a margin."))
