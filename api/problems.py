"""Errors as RFC 9457 problem details (``application/problem+json``).

Every error the API returns has this one shape, so a client needs one error path::

    {"type": "https://tawag.dev/problems/rate-limited", "title": "Too Many Requests",
     "status": 429, "detail": "...", "instance": "/api/v1/calls"}
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

__all__ = ["MEDIA_TYPE", "Problem", "ProblemError", "problem_response", "install",
           "strict_query"]

MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "https://tawag.dev/problems/"


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None


class ProblemError(Exception):
    """Raise from an endpoint to answer with a problem (``kind`` names its ``type``)."""

    def __init__(self, status: int, kind: str, detail: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.kind, self.detail, self.headers = status, kind, detail, headers


def problem_response(request: Request, status: int, kind: str | None, detail: str | None,
                     headers: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {
        "type": TYPE_BASE + kind if kind else "about:blank",
        "title": HTTPStatus(status).phrase, "status": status,
        "detail": detail, "instance": request.url.path}
    return JSONResponse(body, status_code=status, headers=headers, media_type=MEDIA_TYPE)


def install(app: Any) -> None:
    """Route every error (ours, FastAPI's validation, Starlette's 404/405) to a problem."""

    @app.exception_handler(ProblemError)
    async def _ours(request: Request, exc: ProblemError) -> JSONResponse:
        return problem_response(request, exc.status, exc.kind, exc.detail, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                           for e in exc.errors())
        return problem_response(request, 422, "invalid-request", detail)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request))
        return problem_response(request, exc.status_code, None, str(exc.detail), headers)


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path (Starlette names only the first
    route's, and one path has a route per method here)."""
    methods: set[str] = set()
    for route in request.app.routes:
        match, _ = route.matches({**request.scope, "method": "GET"})
        if match != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


def strict_query(request: Request) -> None:
    """A query parameter the operation does not declare is an error (422), not ignored:
    a misspelt filter (``dispositon=``) must not quietly select everything."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    declared = {p.alias for p in _query_params(dependant)}
    unknown = sorted(set(request.query_params.keys()) - declared)
    if unknown:
        raise ProblemError(422, "invalid-request",
                           f"unknown query parameter(s): {', '.join(map(repr, unknown))}")


def _query_params(dependant: Any) -> list[Any]:
    params = list(dependant.query_params)
    for sub in dependant.dependencies:
        params += _query_params(sub)
    return params
