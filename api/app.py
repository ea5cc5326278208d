"""The REST API ``/api/v1`` (FastAPI): calls, agents, callbacks, click-to-call, webhook
subscriptions.

Thin: each endpoint authenticates the key (:mod:`api.keys`), spends a token of its rate
limit (:mod:`api.ratelimit`), and reads through the warehouse's tenant-scoped named
queries (:mod:`warehouse.queries`) with the key's tenant — never a tenant from the
request. In embedded mode the warehouse client is also narrowed to that tenant on the
warehouse side (``tawag_tenant``), so a query that forgot its tenant still sees no other.

    app = create_app(settings, client=connect(settings), keys=KeyStore(keys_file(settings)))
"""


import base64
import binascii
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx
import pandas as pd
from fastapi import Depends, FastAPI, Query, Request, Response

from api import models, problems, steering, webhook_routes, zadarma_routes
from api.keys import CALLS_WRITE, READ, ApiKey, KeyStore
from api.originations import Originations
from api.ratelimit import TokenBuckets, retry_after
from api.webhooks import Webhooks
from api.zadarma_source import ZadarmaSource
from connectors.click_to_call import OriginationRefused
from connectors.recording_links import recording_url, with_link_defaults
from core.settings import Settings
from core.timezones import bounds, next_bound
from core.timezones import floor as bucket_floor
from warehouse.client import WarehouseClient, WarehouseError
from warehouse.queries import agent_stats as agent_stats_q
from warehouse.queries import api as api_q
from warehouse.queries import callbacks as callbacks_q
from warehouse.queries import calls as calls_q
from warehouse.queries import cdr as cdr_q
from warehouse.queries import routing as routing_q
from warehouse.queries import tenants as tenants_q

__all__ = ["PREFIX", "create_app", "encode_cursor", "decode_cursor"]

PREFIX = "/api/v1"
DEFAULT_PERIOD = timedelta(days=7)
ISO_8601 = (r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?"
            r"([Zz]|[+-]\d{2}:?\d{2})?$")
"""Times in query parameters: ISO 8601 only (no epoch numbers a lax parser would take)."""
EARLIEST, LATEST = datetime(1970, 1, 1, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC)
"""Periods are clamped to these: no call is outside, and the warehouse's DateTime64 is
not defined far beyond."""
MAX_PAGE = 500
BUCKETS = {"15m": "15 minute", "hour": "1 hour", "day": "1 day"}
"""Interval kinds of ``tawag.agent_stats`` -> :mod:`core.timezones` bucket names."""
MAX_SPAN = {"15m": timedelta(days=7), "hour": timedelta(days=62), "day": timedelta(days=366)}
"""The longest period of agent statistics per interval kind (a bounded answer)."""

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": problems.Problem, "description": text}
    for status, text in ((400, "Malformed request body"), (401, "No valid API key"),
                         (403, "The key lacks the scope"),
                         (422, "Invalid parameters"), (429, "Rate limit; see Retry-After"),
                         (503, "The warehouse is not answering"))}


def encode_cursor(started_at: datetime, call_id: str) -> str:
    """Opaque keyset cursor: the last row's ``(started_at, call_id)``."""
    raw = json.dumps([started_at.astimezone(UTC).isoformat(), call_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Inverse of :func:`encode_cursor`; ValueError for anything else."""
    try:
        ts, call_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        started = datetime.fromisoformat(ts)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise ValueError(f"not a cursor of this API: {cursor!r}") from exc
    if not isinstance(call_id, str) or started.tzinfo is None:
        raise ValueError(f"not a cursor of this API: {cursor!r}")
    return started, call_id


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """DataFrame rows as dicts with None for missing values (NaN/NaT/NA)."""
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


def _period(since: str | None, until: str | None, tz: str,
            now: datetime) -> tuple[datetime, datetime]:
    """``[since, until)`` in UTC; naive times are read in ``tz`` (the tenant's zone)."""
    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise problems.ProblemError(422, "invalid-request", f"tz: unknown zone {tz!r}") from exc

    def aware(text: str) -> datetime:
        try:
            ts = datetime.fromisoformat(text)
            # 0001-01-01T00:00+01:00 is before year 1 in UTC: OverflowError, not a 500
            return (ts if ts.tzinfo else ts.replace(tzinfo=zone)).astimezone(UTC)
        except (ValueError, OverflowError) as exc:
            raise problems.ProblemError(422, "invalid-request",
                                        f"not an ISO 8601 time we can place: {text!r}") from exc

    end = min(aware(until) if until else now, LATEST)
    start = max(aware(since) if since else end - DEFAULT_PERIOD, EARLIEST)
    if start >= end:
        raise problems.ProblemError(422, "invalid-request", "since must be before until")
    return start, end


def _stats_period(since: str | None, until: str | None, interval: str, tz: str,
                  now: datetime) -> tuple[datetime, datetime]:
    """``[since, until)`` widened to whole local intervals of ``tz``; by default the
    tenant's local today up to now."""
    zone = ZoneInfo(tz)
    if since is None:
        since = bucket_floor(now, "1 day", zone).isoformat()
    start, end = _period(since, until, tz, now)
    edges = bounds(start, end, BUCKETS[interval], zone)
    start, end = edges[0], edges[-1]
    if end - start > MAX_SPAN[interval]:
        raise problems.ProblemError(422, "invalid-request", (
            f"a period of at most {MAX_SPAN[interval].days} days with interval={interval}"))
    return start, end


def _recording_link(settings: Settings, recording: str | None,
                    now: float) -> dict[str, Any]:
    """The connectors' signed recording link (served by their worker), valid
    ``recordings_fetch_link_ttl_s``: the key is read at each call, so a rotated key
    signs the next link (a key generated by ``tawag connectors``; none yet: no link)."""
    url = recording_url(with_link_defaults(settings, create=False), recording, now=now,
                        stored=False)
    ttl = settings.recordings_fetch_link_ttl_s
    expires = datetime.fromtimestamp(int(now) + ttl, UTC) if url and ttl else None
    return {"recording_url": url, "recording_url_expires_at": expires}


def create_app(settings: Settings, *, client: WarehouseClient | None, keys: KeyStore,
               limiter: TokenBuckets | None = None,
               clock: Callable[[], float] = time.time,
               webhooks: Webhooks | None = None,
               http: httpx.Client | None = None,
               zadarma: ZadarmaSource | None = None,
               originations: Originations | None = None) -> FastAPI:
    """The ASGI app. ``client``/``webhooks``/``zadarma``/``originations`` None: those
    routes answer 503 (the app built for its OpenAPI document only). ``http``: for the
    zd_echo check of new subscriptions. ``zadarma``: the receiver of Zadarma accounts'
    notifications."""
    limiter = limiter or TokenBuckets(settings.api_rate_per_s, settings.api_rate_burst)
    app = FastAPI(title="Tawag API", version="1.0.0", openapi_url=f"{PREFIX}/openapi.json",
                  docs_url=f"{PREFIX}/docs", redoc_url=None,
                  dependencies=[Depends(problems.strict_query)],
                  description="Calls, agents and missed-call callbacks of one tenant, and "
                              "signed webhooks. Authenticate with `Authorization: Bearer "
                              "<key>` (`tawag apikey add`). Errors are RFC 9457 problems.")
    problems.install(app)
    app.state.authorised = authorised_factory(keys, limiter, clock)

    def warehouse(key: ApiKey) -> WarehouseClient:
        if client is None:
            raise problems.ProblemError(503, "unavailable", "no warehouse configured")
        with_args = getattr(client, "with_args", None)
        return with_args(tawag_tenant=key.tenant) if with_args else client

    reader = Depends(app.state.authorised(READ))

    @app.get("/health", include_in_schema=False)
    def health() -> dict[str, str]:
        return {"status": "ok"}

    def read(fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except WarehouseError as exc:
            raise problems.ProblemError(503, "unavailable", f"warehouse: {exc}") from exc

    @app.get(f"{PREFIX}/calls", response_model=models.CallPage, responses=_ERRORS,
             tags=["calls"], summary="Calls, newest first, by filters and cursor")
    def list_calls(
        key: Annotated[ApiKey, reader],
        since: Annotated[str | None, Query(pattern=ISO_8601, description=(
            "Period start, ISO 8601 (default: until - 7 days); without an offset: in tz"),
            json_schema_extra={"format": "date-time"})] = None,
        until: Annotated[str | None, Query(pattern=ISO_8601, description=(
            "Period end, excluded (default: now)"),
            json_schema_extra={"format": "date-time"})] = None,
        tz: Annotated[str, Query(description="IANA zone of naive since/until")] = "UTC",
        direction: Annotated[str | None, Query(pattern="^(inbound|outbound|internal)$")]
        = None,
        disposition: Annotated[str | None, Query(
            pattern="^(in_progress|answered|busy|no_answer|cancelled|failed)$")] = None,
        agent: Annotated[str | None, Query(max_length=64)] = None,
        did: Annotated[str | None, Query(max_length=64)] = None,
        number: Annotated[str | None, Query(max_length=64, description="A part of the "
                                            "caller's or callee's number")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
        cursor: Annotated[str | None, Query(max_length=512)] = None,
    ) -> dict[str, Any]:
        start, end = _period(since, until, tz, datetime.fromtimestamp(clock(), UTC))
        try:
            after = decode_cursor(cursor) if cursor else None
        except ValueError as exc:
            raise problems.ProblemError(422, "invalid-request", str(exc)) from exc
        rows = read(lambda: api_q.calls_page(
            warehouse(key), key.tenant, start, end, after=after, limit=limit + 1,
            direction=direction, disposition=disposition, agent=agent, did=did,
            number=number))
        more = len(rows) > limit
        rows = rows[:limit]
        last = rows[-1] if more else None
        return {"items": rows,
                "next_cursor": encode_cursor(last["started_at"], last["call_id"])
                if last else None}

    @app.get(f"{PREFIX}/calls/{{call_id}}", response_model=models.CallDetail,
             responses={**_ERRORS, 404: _ERRORS[401] | {"description": "No such call"}},
             tags=["calls"], summary="One call with its legs, events, routing facts and a signed "
                     "recording link")
    def get_call(key: Annotated[ApiKey, reader], call_id: str) -> dict[str, Any]:
        client_ = warehouse(key)
        row = read(lambda: cdr_q.cdr(client_, key.tenant, call_id))
        if row is None:
            raise problems.ProblemError(404, "not-found", f"no call {call_id!r}")
        events = read(lambda: _records(calls_q.call_events(client_, key.tenant, call_id)))
        decisions = read(lambda: _records(
            routing_q.call_decisions(client_, key.tenant, call_id).rename(columns={"ts": "at"})))
        return {**row, **_recording_link(settings, row["recording"], clock()),
                "routing": decisions, "events": events}

    @app.get(f"{PREFIX}/agents", response_model=list[models.AgentNow], responses=_ERRORS,
             tags=["agents"], summary="Each agent's current state")
    def list_agents(key: Annotated[ApiKey, reader]) -> list[dict[str, Any]]:
        return read(lambda: api_q.agents_now(warehouse(key), key.tenant))

    @app.get(f"{PREFIX}/agents/stats", response_model=models.AgentStatsPage,
             responses=_ERRORS, tags=["agents"],
             summary="Agents' statistics per interval, in the tenant's zone")
    def agent_stats(
        key: Annotated[ApiKey, reader],
        interval: Annotated[str, Query(pattern="^(15m|hour|day)$", description=(
            "Interval length; cut in the tenant's zone (a day is a local day)"))] = "15m",
        since: Annotated[str | None, Query(pattern=ISO_8601, description=(
            "Period start, ISO 8601, widened to its interval's start (default: the "
            "tenant's local midnight); without an offset: in the tenant's zone"),
            json_schema_extra={"format": "date-time"})] = None,
        until: Annotated[str | None, Query(pattern=ISO_8601, description=(
            "Period end, widened to its interval's end (default: now)"),
            json_schema_extra={"format": "date-time"})] = None,
        agent: Annotated[str | None, Query(max_length=64)] = None,
    ) -> dict[str, Any]:
        client_ = warehouse(key)
        tz = read(lambda: tenants_q.time_zone(client_, key.tenant))
        zone = ZoneInfo(tz)
        start, end = _stats_period(since, until, interval, tz,
                                   datetime.fromtimestamp(clock(), UTC))
        rows = read(lambda: agent_stats_q.agent_intervals(client_, key.tenant, start, end,
                                                          interval, agent=agent))
        for row in rows:
            row["interval_start"] = row["interval_start"].astimezone(zone)
            row["interval_end"] = next_bound(row["interval_start"], BUCKETS[interval],
                                             zone).astimezone(zone)
        return {"time_zone": tz, "interval": interval, "since": start.astimezone(zone),
                "until": end.astimezone(zone), "items": rows}

    @app.get(f"{PREFIX}/callbacks", response_model=list[models.CallbackItem],
             responses=_ERRORS, tags=["callbacks"],
             summary="The missed-call callback list: open items, oldest first")
    def list_callbacks(key: Annotated[ApiKey, reader]) -> list[dict[str, Any]]:
        now = datetime.fromtimestamp(clock(), UTC)
        return read(lambda: _records(callbacks_q.open_callbacks(warehouse(key), key.tenant,
                                                                now)))

    _add_origination_routes(app, originations)
    webhook_routes.add_routes(app, app.state.authorised, webhooks, http, _ERRORS)
    steering.add_route(app, settings, webhooks, http)
    zadarma_routes.add_routes(app, zadarma)
    app.openapi = lambda: _problem_media_type(app)  # type: ignore[method-assign]
    return app


_REFUSALS = {400: (422, "invalid-request"), 404: (404, "not-found"),
             409: (409, "not-registered"), 503: (503, "unavailable")}
"""Why the edge placed nothing (:class:`OriginationRefused`) -> status and problem type."""


def _origination_view(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "created_at": datetime.fromtimestamp(row["created_at"], UTC),
            "expires_at": datetime.fromtimestamp(row["expires_at"], UTC)}


def _add_origination_routes(app: FastAPI, originations: Originations | None) -> None:
    """``POST /calls`` (click-to-call, :mod:`api.originations`) and its status."""
    writer, reader = Depends(app.state.authorised(CALLS_WRITE)), \
        Depends(app.state.authorised(READ))

    def placer() -> Originations:
        if originations is None:
            raise problems.ProblemError(503, "unavailable", "click-to-call is not running")
        return originations

    @app.post(f"{PREFIX}/calls", status_code=202, response_model=models.Origination,
              responses={**_ERRORS,
                         202: {"description": "Placed: the agent's phone rings",
                               "headers": {"Location": {
                                   "description": "The origination (its state and call)",
                                   "schema": {"type": "string"}}}},
                         404: {"model": problems.Problem,
                               "description": "No such extension in the tenant"},
                         409: {"model": problems.Problem,
                               "description": "The extension has no phone registered"},
                         503: {"model": problems.Problem,
                               "description": "The SIP edge is not answering"}},
              tags=["calls"], summary="Click-to-call: ring the agent, then the client; "
                                      "answers at once, the call id comes later")
    def originate(key: Annotated[ApiKey, writer], body: models.OriginationCreate,
                  response: Response) -> dict[str, Any]:
        try:
            row = placer().place(key.tenant, body.extension, body.number, key_id=key.key_id)
        except OriginationRefused as exc:
            status, kind = _REFUSALS.get(exc.status, (503, "unavailable"))
            raise problems.ProblemError(status, kind, exc.reason) from exc
        response.headers["Location"] = f"{PREFIX}/calls/originations/{row['id']}"
        return _origination_view(row)

    @app.get(f"{PREFIX}/calls/originations/{{origination_id}}",
             response_model=models.Origination,
             responses={**_ERRORS, 404: {"model": problems.Problem,
                                         "description": "No such origination"}},
             tags=["calls"], summary="A click-to-call's state and the call it became")
    def get_origination(key: Annotated[ApiKey, reader],
                        origination_id: str) -> dict[str, Any]:
        row = placer().get(key.tenant, origination_id)
        if row is None:
            raise problems.ProblemError(404, "not-found",
                                        f"no origination {origination_id!r}")
        return _origination_view(row)


def _problem_media_type(app: FastAPI) -> dict[str, Any]:
    """FastAPI declares every response as application/json; errors are problem+json."""
    if app.openapi_schema is None:
        schema = FastAPI.openapi(app)
        for path in schema["paths"].values():
            for operation in path.values():
                for status, response in operation.get("responses", {}).items():
                    content = response.get("content", {})
                    if int(status) >= 400 and "application/json" in content:
                        response["content"] = {problems.MEDIA_TYPE:
                                               content.pop("application/json")}
        schema.setdefault("components", {})["securitySchemes"] = {
            "apiKey": {"type": "http", "scheme": "bearer",
                       "description": "A key from `tawag apikey add`"}}
        schema["security"] = [{"apiKey": []}]
        app.openapi_schema = schema
    return app.openapi_schema


def authorised_factory(keys: KeyStore, limiter: TokenBuckets,
                       clock: Callable[[], float]) -> Callable[[str], Callable[..., ApiKey]]:
    """``authorised(scope)``: a dependency giving the request's key, or raising 401/403/429."""

    def authorised(scope: str) -> Callable[..., ApiKey]:
        def dependency(request: Request) -> ApiKey:
            header = request.headers.get("authorization", "")
            scheme, _, token = header.partition(" ")
            key = keys.authenticate(token.strip()) if scheme.lower() == "bearer" else None
            if key is None:
                raise problems.ProblemError(401, "unauthorized",
                                            "send a live API key as 'Authorization: Bearer "
                                            "<key>'", {"WWW-Authenticate": "Bearer"})
            wait = limiter.take(key.key_id, clock())
            if wait > 0:
                raise problems.ProblemError(429, "rate-limited",
                                            f"rate limit of key {key.key_id} exceeded",
                                            {"Retry-After": retry_after(wait)})
            if scope not in key.scopes:
                raise problems.ProblemError(403, "forbidden",
                                            f"key {key.key_id} lacks scope {scope!r}")
            return key
        return dependency

    return authorised
