"""``/zadarma/{tenant}``: where a Zadarma account's notifications are pointed (set this URL
in the account's "PBX call notifications"). Zadarma's contract, not Tawag's API: it is
left out of the OpenAPI document (crm-contracts.md §4 documents it), and answers are
Zadarma's - the raw ``zd_echo`` value, an empty 200 - with problem details on refusals.
"""

from typing import Annotated

from fastapi import FastAPI, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from api import problems
from api.zadarma_source import Refused, Unavailable, ZadarmaSource

__all__ = ["add_routes", "PATH"]

PATH = "/zadarma/{tenant}"
RETRY_AFTER_S = "30"


def add_routes(app: FastAPI, source: ZadarmaSource | None) -> None:
    """The two routes; ``source`` None (the app built for its document): 503."""

    def configured(tenant: str) -> ZadarmaSource:
        if source is None:
            raise problems.ProblemError(503, "unavailable", "no Zadarma receiver configured")
        return source

    @app.get(PATH, include_in_schema=False)
    def zd_echo(tenant: str, zd_echo: Annotated[str, Query(max_length=256)]) -> Response:
        """Zadarma's URL check: the raw value back, for a tenant with an account."""
        if not configured(tenant).knows(tenant):
            raise problems.ProblemError(404, "not-found",
                                        f"no Zadarma account is configured for {tenant!r}")
        return Response(zd_echo, media_type="text/plain")

    @app.post(PATH, include_in_schema=False)
    async def notification(tenant: str, request: Request) -> Response:
        """One notification: 200 accepted (or a duplicate), 4xx refused, 503 retry later."""
        receiver = configured(tenant)
        body = await request.body()
        try:
            outcome = await run_in_threadpool(receiver.accept, tenant, body,
                                              request.headers.get("Signature"))
        except Refused as exc:
            raise problems.ProblemError(exc.status, exc.kind, exc.reason) from exc
        except Unavailable as exc:
            raise problems.ProblemError(503, "unavailable", str(exc),
                                        {"Retry-After": RETRY_AFTER_S}) from exc
        state = "duplicate" if outcome.duplicate else "accepted"
        return Response(b"", headers={"Tawag-Notification": state,
                                      "Tawag-Events": str(outcome.events)})
