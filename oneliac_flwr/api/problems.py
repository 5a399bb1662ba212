"""The one error shape at the HTTP boundary: ``{type, title, status, detail, field}``.

Every 4xx and 5xx answer, whatever raised it (a route, FastAPI's body validation, an
unknown path, an oversized body, an unexpected exception), is a JSON problem document
(``application/problem+json``); a traceback never reaches the client.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from oneliac_flwr.errors import OneliacError

__all__ = ["ApiProblem", "BodySizeLimit", "Problem", "install_problem_handlers", "problem_response"]

logger = logging.getLogger("oneliac_flwr.api")

TYPE_PREFIX = "urn:oneliac:problem:"
MEDIA_TYPE = "application/problem+json"


class Problem(BaseModel):
    """A problem document (RFC 9457 members plus ``field``)."""

    type: str
    title: str
    status: int
    detail: str
    field: str | None = None


class ApiProblem(OneliacError):
    """A request the service refuses, with its HTTP status.

    Parameters
    ----------
    status : int
        HTTP status (4xx).
    slug : str
        Short machine name of the problem (``type`` is ``urn:oneliac:problem:<slug>``).
    title : str
        Human-readable summary, the same for every occurrence.
    detail : str
        What was wrong with this request.
    field : str, optional
        The request field at fault.
    headers : dict, optional
        Extra response headers (``WWW-Authenticate``).
    """

    def __init__(
        self,
        status: int,
        slug: str,
        title: str,
        detail: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status, self.slug, self.title, self.detail, self.field = status, slug, title, detail, field
        self.headers = headers or {}


_TITLES = {
    400: ("bad_request", "Bad request"),
    401: ("unauthorized", "Authentication required"),
    403: ("forbidden", "Forbidden"),
    404: ("not_found", "Not found"),
    405: ("method_not_allowed", "Method not allowed"),
    406: ("not_acceptable", "Not acceptable"),
    409: ("conflict", "Conflict"),
    413: ("payload_too_large", "Request body too large"),
    415: ("unsupported_media_type", "Unsupported media type"),
    422: ("invalid_request", "Invalid request"),
    500: ("internal_error", "Internal server error"),
}


def problem_response(
    status: int,
    detail: str,
    *,
    slug: str | None = None,
    title: str | None = None,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """A problem document as a response."""
    default_slug, default_title = _TITLES.get(status, ("error", "Error"))
    body = Problem(
        type=TYPE_PREFIX + (slug or default_slug),
        title=title or default_title,
        status=status,
        detail=detail,
        field=field,
    )
    return JSONResponse(body.model_dump(), status_code=status, headers=headers, media_type=MEDIA_TYPE)


def _field_of(loc: tuple[Any, ...]) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or None


def install_problem_handlers(app: FastAPI) -> None:
    """Route every error through :func:`problem_response`."""

    @app.exception_handler(ApiProblem)
    async def _api_problem(_: Request, exc: ApiProblem) -> JSONResponse:
        return problem_response(exc.status, exc.detail, slug=exc.slug, title=exc.title, field=exc.field, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        if first.get("type") == "json_invalid":
            return problem_response(422, f"the body is not valid JSON: {first.get('msg', '')}", slug="malformed_json",
                                    title="Malformed JSON")  # fmt: skip
        field = _field_of(tuple(first.get("loc", ())))
        message = str(first.get("msg", "invalid value"))
        return problem_response(422, f"{field or 'request'}: {message}", field=field)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        return problem_response(exc.status_code, detail, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error: %s", type(exc).__name__)
        return problem_response(500, "the service could not complete the request; it has been logged")


class _TooLarge(Exception):
    pass


class BodySizeLimit:
    """ASGI middleware: refuse bodies above ``limit`` bytes with a 413 problem.

    Declared lengths are refused before reading; chunked bodies are counted as they arrive.
    """

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await self._refuse(scope, receive, send)
            return
        seen = 0
        exceeded = False
        started = False

        async def counting_receive() -> Message:
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    exceeded = True
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if exceeded:  # whatever the app made of the cut-off body, the answer is 413
                if not started:
                    started = True
                    await self._refuse(scope, receive, send)
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started:
                started = True
                await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem_response(413, f"the request body exceeds {self.limit} bytes")
        await response(scope, receive, send)
