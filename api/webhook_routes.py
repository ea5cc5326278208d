"""``/api/v1/webhooks``: a tenant's subscriptions and their delivery logs.

A ``zadarma`` subscription's URL is checked first the way Zadarma does it: ``GET
<url>?zd_echo=<random>`` must answer the random value, else the subscription is refused.
"""

import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx
from fastapi import Depends, FastAPI, Query, Response

from api import models, problems
from api.keys import READ, WEBHOOKS_WRITE, ApiKey
from api.subscriptions import Subscription
from api.webhooks import EVENT_TYPES, Webhooks
from api.zadarma import NOTIFY_TYPES

__all__ = ["add_routes", "zd_echo_check"]

PREFIX = "/api/v1/webhooks"


def zd_echo_check(http: httpx.Client, url: str) -> str | None:
    """None if ``url`` echoes ``zd_echo`` back, else why not."""
    token = secrets.token_hex(8)
    try:
        resp = http.get(url, params={"zd_echo": token})
    except httpx.HTTPError as exc:
        return f"{url} did not answer the zd_echo check: {type(exc).__name__}"
    if resp.status_code != 200 or resp.text.strip() != token:
        return f"{url} did not echo zd_echo (HTTP {resp.status_code})"
    return None


def _view(sub: Subscription) -> dict[str, Any]:
    return {"id": sub.id, "url": sub.url, "events": list(sub.events), "format": sub.format,
            "timezone": sub.timezone, "created_at": datetime.fromtimestamp(sub.created_at, UTC)}


def add_routes(app: FastAPI, authorised: Callable[[str], Callable[..., ApiKey]],
               webhooks: Webhooks | None, http: httpx.Client | None,
               errors: dict[int | str, dict[str, Any]]) -> None:
    reader, writer = Depends(authorised(READ)), Depends(authorised(WEBHOOKS_WRITE))
    not_found = {**errors, 404: errors[401] | {"description": "No such subscription"}}

    def worker() -> Webhooks:
        if webhooks is None:
            raise problems.ProblemError(503, "unavailable", "webhooks are not running")
        return webhooks

    def own(key: ApiKey, sub_id: str) -> Subscription:
        sub = worker().subscriptions.get(sub_id)
        if sub is None or sub.tenant != key.tenant:
            raise problems.ProblemError(404, "not-found", f"no subscription {sub_id!r}")
        return sub

    @app.post(PREFIX, status_code=201, response_model=models.SubscriptionCreated,
              responses=errors, tags=["webhooks"], summary="Subscribe a URL to events")
    def create(key: Annotated[ApiKey, writer],
               spec: models.SubscriptionCreate) -> dict[str, Any]:
        hooks = worker()
        known = NOTIFY_TYPES if spec.format == "zadarma" else EVENT_TYPES
        unknown = set(spec.events) - {*known, "*"}
        if unknown:
            raise problems.ProblemError(422, "invalid-request",
                                        f"unknown event types for format {spec.format}: "
                                        f"{', '.join(sorted(unknown))}")
        try:
            ZoneInfo(spec.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise problems.ProblemError(422, "invalid-request",
                                        f"timezone: unknown zone {spec.timezone!r}") from exc
        if spec.format == "zadarma" and http is not None:
            failure = zd_echo_check(http, str(spec.url))
            if failure:
                raise problems.ProblemError(422, "url-verification-failed", failure)
        sub = hooks.subscriptions.add(key.tenant, str(spec.url), tuple(spec.events),
                                      spec.format, spec.secret, spec.timezone)
        hooks.start()
        return {**_view(sub), "secret": sub.secret}

    @app.get(PREFIX, response_model=list[models.Subscription], responses=errors,
             tags=["webhooks"], summary="The tenant's subscriptions")
    def list_(key: Annotated[ApiKey, reader]) -> list[dict[str, Any]]:
        return [_view(s) for s in worker().subscriptions.of_tenant(key.tenant)]

    @app.get(PREFIX + "/{sub_id}", response_model=models.Subscription, responses=not_found,
             tags=["webhooks"], summary="One subscription")
    def get(key: Annotated[ApiKey, reader], sub_id: str) -> dict[str, Any]:
        return _view(own(key, sub_id))

    @app.delete(PREFIX + "/{sub_id}", status_code=204, responses=not_found,
                tags=["webhooks"], summary="Delete a subscription (pending deliveries "
                                           "are given up)")
    def delete(key: Annotated[ApiKey, writer], sub_id: str) -> Response:
        own(key, sub_id)
        worker().subscriptions.remove(sub_id)
        worker().forget(sub_id)
        return Response(status_code=204)

    @app.get(PREFIX + "/{sub_id}/deliveries", response_model=list[models.Delivery],
             responses=not_found, tags=["webhooks"],
             summary="The subscription's delivery log, newest first")
    def deliveries(key: Annotated[ApiKey, reader], sub_id: str,
                   limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict[str, Any]]:
        own(key, sub_id)
        return worker().deliveries(sub_id, limit)
